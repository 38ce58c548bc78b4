"""The process-pool executor: batches of units pickled with cloudpickle.

Each batch carries its units' tasks and the input values they read; the worker
runs them and sends back only the units' exported values.  Lambdas and
closures travel because cloudpickle serialises them by value.

The pool (``spawn`` start method, as dask uses: forking a process that holds
threads can deadlock) is kept between runs, since starting processes costs far
more than a run of small tasks.  On any failure (a task raised, a worker
died, Ctrl-C) its processes are terminated, so nothing is left running and the
next run starts clean.  A run that starts while another (in another thread) is
using the pool gets a pool of its own, so no run loses its work to another's
failure.  Workers ignore SIGINT: the parent alone decides what Ctrl-C cancels.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.util
import os
import pickle
import signal
import sys
import threading
import traceback
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import cloudpickle

from .local import TaskFailed, add_task_note, default_num_workers, run_unit

_pools = {}  # num_workers -> the pool kept between runs
_busy = set()  # the pools runs are using now
_pools_lock = threading.Lock()


class WorkerDiedError(RuntimeError):
    """A worker process ended abruptly (killed, crashed, ``os._exit``)."""


class RemoteTraceback(Exception):
    """The worker-side traceback, attached as ``__cause__`` of a re-raised exception."""

    def __init__(self, tb):
        super().__init__(tb)
        self.tb = tb

    def __str__(self):
        return self.tb


def _start_worker():
    """In each worker process: ignore Ctrl-C, and shut down the pools a task of this worker
    made (a task that computes on "processes" itself) before the worker exits, which
    would otherwise wait for their processes forever."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    multiprocessing.util.Finalize(None, _shut_down_pools, exitpriority=100)


def _shut_down_pools():
    for pool in list(_pools.values()):
        pool.shutdown(wait=True)


def _get_pool(num_workers):
    """A pool of ``num_workers`` processes for one run, until ``_release_pool``: the one kept
    from earlier runs, or, while another run (in another thread) is using that one, a pool
    of its own, so that one run's failure or dead worker never reaches another run."""
    with _pools_lock:
        pool = _pools.get(num_workers)
        if pool is None or getattr(pool, "_broken", False) or pool in _busy:
            pool = ProcessPoolExecutor(
                max_workers=num_workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
            )
            if num_workers not in _pools or _pools[num_workers] not in _busy:
                _pools[num_workers] = pool
        _busy.add(pool)
        return pool


def _release_pool(pool, num_workers, errored):
    """The run is done with ``pool``: it is kept for the next run, unless the run failed
    (then it is terminated: nothing left running) or it was a pool of the run's own."""
    with _pools_lock:
        _busy.discard(pool)
        keep = _pools.get(num_workers) is pool
        if keep and errored:
            del _pools[num_workers]
    if errored or not keep:
        _terminate(pool)


def _processes(pool):
    return list((getattr(pool, "_processes", None) or {}).values())


def _exit_codes(procs):
    return sorted({p.exitcode for p in procs if p.exitcode not in (None, 0)})


def _terminate(pool):
    """Terminate the pool's processes: no orphans, no hang."""
    procs = _processes(pool)
    for p in procs:
        if p.is_alive():
            p.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join(timeout=5)


def _startup_hint(codes):
    """Explain the usual cause of a worker that exits with status 1: an unguarded script.

    The first worker to fail exits with 1; by the time its death is seen the others may
    have been terminated (-15) or not be reaped yet (no code): all of these get the hint.
    """
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if not main_file or (codes and not (1 in codes or set(codes) <= {-15})):
        return ""
    return (f". If its error output mentions bootstrapping: worker processes are started with "
            f"'spawn', which imports {main_file!r}; put the code that computes under "
            f"`if __name__ == '__main__':`")


def _dumps_exception(key, exc):
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    add_task_note(exc, key)
    for carrier in (exc, _Rebuilt(exc)):
        try:
            data = cloudpickle.dumps(carrier)
            pickle.loads(data)
            return key, data, tb
        except Exception:  # noqa: BLE001 - try the next way to make it travel
            continue
    substitute = RuntimeError(f"{type(exc).__qualname__}: {exc}")
    add_task_note(substitute, key)
    return key, cloudpickle.dumps(substitute), tb


class _Rebuilt:
    """Pickles an exception without calling its ``__init__`` again: an exception class
    whose ``__init__`` takes other arguments than its ``args`` unpickles this way only."""

    def __init__(self, exc):
        self.exc = exc

    def __reduce__(self):
        return (_rebuild_exception, (type(self.exc), self.exc.args, dict(vars(self.exc))))


def _rebuild_exception(cls, args, state):
    exc = cls.__new__(cls)
    exc.args = args
    vars(exc).update(state)  # its attributes and notes
    return exc


def run_batch(data):
    """Worker side: run the pickled units, return their exported values pickled."""
    units, results, timed = pickle.loads(data)
    timings = [] if timed else None
    exported = {}
    try:
        for unit in units:
            run_unit(unit, results, timings)
            key = unit[-1].key
            exported[key] = results[key]
    except TaskFailed as failed:
        return "error", _dumps_exception(failed.key, failed.exc), timings, os.getpid()
    try:
        return "ok", cloudpickle.dumps(exported), timings, os.getpid()
    except Exception as exc:  # noqa: BLE001 - find which result cannot travel
        for key, value in exported.items():
            try:
                cloudpickle.dumps(value)
            except Exception as inner:  # noqa: BLE001
                err = TypeError(f"the result of task {key!r} cannot be sent back "
                                f"from the worker process: {inner}")
                return "error", _dumps_exception(key, err), timings, os.getpid()
        return "error", _dumps_exception(units[0][-1].key, exc), timings, os.getpid()


def _dumps_batch(units, values, timed):
    try:
        return cloudpickle.dumps((units, values, timed))
    except Exception as exc:  # noqa: BLE001 - name the task that cannot travel
        for unit in units:
            for task in unit:
                try:
                    cloudpickle.dumps(task)
                except Exception as inner:  # noqa: BLE001
                    raise TypeError(f"task {task.key!r} cannot be sent to a worker "
                                    f"process (scheduler='processes'): {inner}") from inner
        for key, value in values.items():
            try:
                cloudpickle.dumps(value)
            except Exception as inner:  # noqa: BLE001
                raise TypeError(f"the value of {key!r} cannot be sent to a worker "
                                f"process (scheduler='processes'): {inner}") from inner
        raise TypeError(f"a batch of tasks cannot be sent to a worker process: {exc}") from exc


class ProcessExecutor:
    """Each worker thread of the run drives one batch at a time through the pool."""

    max_batch = 1000

    def __init__(self, num_workers=None):
        self.num_workers = num_workers or default_num_workers()

    def start(self, run):
        self.results = run.results
        self.plan = run.plan
        self.pool = _get_pool(self.num_workers)
        self.procs = _processes(self.pool)

    def run(self, worker, batch, timed):
        """Ship the units numbered ``batch`` and their input values to a process; return
        its outputs."""
        results, plan = self.results, self.plan
        units = [plan.units[u] for u in batch]
        values = {k: results[k] for u in batch for k in plan.unit_inputs[u]}
        data = _dumps_batch(units, values, timed)
        future = self.pool.submit(run_batch, data)
        self.procs = _processes(self.pool) or self.procs  # a broken pool forgets them
        try:
            status, body, timings, pid = future.result()
        except BrokenProcessPool:
            keys = [t.key for unit in units for t in unit]
            codes = _exit_codes(self.procs)
            shown = ", ".join(map(repr, keys[:5])) + (" ..." if len(keys) > 5 else "")
            raise WorkerDiedError(
                f"a worker process died unexpectedly (exit code {codes or 'unknown'}) "
                f"while running one of the tasks {shown}; the process pool was shut down"
                + _startup_hint(codes)
            ) from None
        if status == "error":
            key, data, tb = body
            raise pickle.loads(data) from RemoteTraceback(tb)
        return pickle.loads(body), timings, pid

    def stop(self, errored):
        _release_pool(self.pool, self.num_workers, errored)
