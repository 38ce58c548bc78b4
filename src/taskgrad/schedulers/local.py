"""The scheduler loop: run a graph in dependency order on this machine.

``run_sync`` runs the depth-first order in the calling thread.  ``run_parallel``
runs the same plan on several workers that share one state (``SharedRun``): a
heap of ready units (fused chains, see ``plan.py``) in priority order, the
count of missing inputs of each unit and the reference count of each value.
A worker takes a batch of ready units, has the executor run it (in this
thread, or in a worker process), then releases every value nothing still
needs and makes newly ready units available, for itself or another worker.

Modelled on dask's ``dask/local.py`` (``get_async``), with the per-task work
moved out of the loop: counts are precomputed, workers take batches and whole
chains, and no central thread stands between a finished task and the next.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from queue import SimpleQueue
from heapq import heappop, heappush

from ..callbacks import active_callbacks, running_tasks
from ..gcpause import gc_paused
from ..graph import execute, postorder
from .plan import Plan


@functools.cache
def default_num_workers():
    """Workers when the user names none: one per CPU, read once (a read cost 50 us here)."""
    return os.cpu_count() or 1


def add_task_note(exc, key):
    """Name the failing task on the exception itself (shown under its traceback)."""
    note = f"taskgrad: raised while running task {key!r}"
    if note not in getattr(exc, "__notes__", ()):
        exc.add_note(note)
    return exc


class TaskFailed(Exception):
    """Carries a task's exception out of a worker, with the failing key."""

    def __init__(self, key, exc):
        super().__init__(key, exc)
        self.key = key
        self.exc = exc


def run_unit(tasks, results, timings=None):
    """Run a fused chain, keeping only the last value: the others die in here.

    ``timings``, when a list, receives ``(key, start, end)`` per task.
    """
    prev = None
    for task in tasks:
        try:
            if timings is None:
                value = execute(task, results)
            else:
                start = time.time()
                value = execute(task, results)
                timings.append((task.key, start, time.time()))
        except BaseException as exc:  # noqa: BLE001 - re-raised by the loop
            raise TaskFailed(task.key, exc) from None
        if prev is not None:
            del results[prev]
        prev = task.key
        results[prev] = value


def start_callbacks(callbacks, graph):
    """Call each callback's ``start``; if one raises, the ones started get their ``finish``."""
    for i, cb in enumerate(callbacks):
        try:
            cb._start(graph)
        except BaseException:
            for started in callbacks[:i]:
                started._finish(graph, True)
            raise


def run_sync(graph, keys, callbacks=(), order=None):
    """Run in the calling thread, in depth-first order (``order`` when known: what ``keys``
    need, dependencies first); exceptions keep their traceback."""
    with gc_paused():
        if order is None:
            order = postorder(graph, keys)
        tasks = list(map(graph.__getitem__, order))
        dead_after = last_reads(tasks, keys)
    results = {}
    start_callbacks(callbacks, graph)
    errored = True
    try:
        with running_tasks():
            if callbacks:
                _run_watched(tasks, dead_after, results, callbacks)
            else:
                _run_plain(tasks, dead_after, results)
        errored = False
    finally:
        for cb in callbacks:
            cb._finish(graph, errored)
    return [results[k] for k in keys]


def last_reads(tasks, keys):
    """For each of ``tasks`` (in run order), the keys whose last reader it is: the values to
    free once it has run.  One walk backwards: a dependency not met yet is read there last.
    (Measured on a small training step: 10% less of the loop's own time than counting
    readers down at every read.)"""
    seen = set(keys)  # requested values live to the end
    dead_after = []
    for task in reversed(tasks):
        deps = task.dependencies
        if deps:
            dead_after.append([d for d in deps if d not in seen])
            seen.update(deps)
        else:
            dead_after.append(())
    dead_after.reverse()
    return dead_after


def _run_plain(tasks, dead_after, results):
    """The loop without callbacks: the least work per task."""
    task = None
    try:
        for task, dead in zip(tasks, dead_after):
            results[task.key] = execute(task, results)
            for key in dead:
                del results[key]
    except BaseException as exc:
        raise add_task_note(exc, task.key)


def _run_watched(tasks, dead_after, results, callbacks):
    """The loop with each callback's ``pretask`` and ``posttask`` around every task that
    calls a function (not around literal leaves)."""
    for task, dead in zip(tasks, dead_after):
        key = task.key
        watched = task.func is not None
        if watched:
            for cb in callbacks:
                cb._pretask(key)
            start = time.time()
        try:
            results[key] = execute(task, results)
        except BaseException as exc:
            raise add_task_note(exc, key)
        if watched:
            info = (key, start, time.time(), 0)
            for cb in callbacks:
                cb._posttask(info)
        for dep in dead:
            del results[dep]


def run_parallel(graph, keys, executor, callbacks=(), plan=None, values=None, order=None):
    """Run ``graph`` on ``executor``'s workers and return the values of ``keys`` in order.

    A ``plan`` prepared earlier (``Plan(graph, keys)``) may be reused; ``values``
    then replaces the values of some of its literal leaves for this run.  ``order``
    (what ``keys`` need, dependencies first), when known, saves finding it.
    """
    if plan is None:
        with gc_paused():
            plan = Plan(graph, keys, order)
    run = SharedRun(plan, executor, callbacks, values)
    start_callbacks(callbacks, graph)
    errored = True
    executor.start(run)
    try:
        run.work(0)  # the calling thread is worker 0
        if run.failure is not None:
            raise run.failure
        errored = False
    except BaseException as exc:  # Ctrl-C here, or a worker's failure
        run.fail(exc)
        raise
    finally:
        executor.stop(errored)
        for cb in callbacks:
            cb._finish(graph, errored)
    return [run.results[k] for k in keys]


_helpers = {}
_helpers_lock = threading.Lock()


def _helper(worker):
    """The queue of helper thread ``worker``, started on first use and kept.

    Keeping the threads saves starting them on every run and keeps their
    memory arenas warm; an idle helper just waits on its queue.
    """
    queue = _helpers.get(worker)
    if queue is None:
        with _helpers_lock:
            queue = _helpers.get(worker)
            if queue is None:
                queue = _helpers[worker] = SimpleQueue()
                threading.Thread(target=_serve, args=(queue,), daemon=True,
                                 name=f"taskgrad-worker-{worker}").start()
    return queue


def _serve(queue):
    while True:
        run, worker = queue.get()
        run.work(worker)
        del run


class SharedRun:
    """The state of one run, shared by its workers under one lock.

    Each worker loops: take a batch of ready units (highest priority first),
    run it without the lock, then under the lock store its outputs, release
    the inputs nothing else needs, and make newly ready units available.  A
    worker that finishes a unit usually takes the next one itself, so there
    is no round trip through a central thread; the calling thread is one of
    the workers, so a graph with no parallelism never leaves it.

    The calling thread stays in the run until it is done, and runs anything
    left ready, so the run never depends on a helper arriving.  A helper
    joins only when units are ready that its caller leaves, and leaves as soon
    as none are ready (back to its queue, free for other runs): the end of the
    run wakes nobody but the calling thread, and only if it is waiting.
    """

    def __init__(self, plan, executor, callbacks, values):
        self.plan = plan
        self.executor = executor
        self.callbacks = callbacks
        self.refcount = plan.refcount.copy()
        self.waiting = plan.waiting.copy()
        self.results = plan.values.copy()
        if values:
            self.results.update(values)
        self.ready = plan.ready.copy()
        self.spread = 2 * executor.num_workers  # a batch takes 1/spread of the ready units
        self.remaining = len(plan.units)
        self.failure = None
        self.lock = threading.Lock()
        self.idle = list(range(executor.num_workers - 1, 0, -1))  # helpers not in the run
        self.caller_waits = False  # the calling thread waits on ``wakeup``
        self.wakeup = threading.Lock()
        self.wakeup.acquire()

    def work(self, worker):
        """Take, run and finish batches until none is ready (a helper) or the graph is
        done or has failed (the calling thread, worker 0).

        Anything raised here (by a task, or by a callback's hook) fails the run and
        wakes the calling thread: a helper thread never dies leaving the run waiting.
        """
        try:
            with running_tasks():
                self._work(worker)
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            self.fail(exc.exc if isinstance(exc, TaskFailed) else exc, getattr(exc, "key", None))

    def _work(self, worker):
        lock, run_batch = self.lock, self.executor.run
        timed = bool(self.callbacks)
        batch = None
        while True:
            with lock:
                if self.failure is not None:  # (a batch cut short by it is not finished)
                    return
                if batch is not None:
                    self._finish(batch, outputs, timings, worker_id)
                if self.ready:
                    batch = self._take()
                elif worker:  # a helper leaves: nothing here for it now
                    self.idle.append(worker)
                    return
                elif not self.remaining:
                    return
                else:  # the calling thread waits for the helpers' units
                    self.caller_waits = True
                    batch = None
            if batch is None:
                self.wakeup.acquire()  # (outside the lock: Ctrl-C here leaves it free)
            else:
                outputs, timings, worker_id = run_batch(worker, batch, timed)

    def _wake_caller(self):
        if self.caller_waits:
            self.caller_waits = False
            self.wakeup.release()

    def fail(self, exc, key=None):
        """Record the first failure and wake the calling thread to raise it; helpers stop
        after the unit they are running."""
        with self.lock:
            if self.failure is None:
                self.failure = add_task_note(exc, key) if key is not None else exc
            self._wake_caller()

    def _take(self):
        """Pop the next batch: one unit, or more when many are ready (fewer trips here)."""
        ready = self.ready
        size = len(ready) // self.spread
        if size <= 1:
            batch = [heappop(ready)]
        else:
            batch = [heappop(ready) for _ in range(min(size, self.executor.max_batch))]
        if self.callbacks:
            for u in batch:
                for task in self.plan.units[u]:
                    for cb in self.callbacks:
                        cb._pretask(task.key)
        if ready:
            self._share(len(ready))
        return batch

    def _share(self, count):
        """Call up to ``count`` idle workers for the ready units this one leaves: the
        calling thread if it waits, then helpers (started on first use)."""
        if self.caller_waits:
            self._wake_caller()
            count -= 1
        idle = self.idle
        while count > 0 and idle:
            worker = idle.pop()
            _helper(worker).put((self, worker))
            count -= 1

    def _finish(self, batch, outputs, timings, worker_id):
        plan, refcount, waiting, results = self.plan, self.refcount, self.waiting, self.results
        if outputs:
            results.update(outputs)
        if timings:
            for key, start, end in timings:
                info = (key, start, end, worker_id)
                for cb in self.callbacks:
                    cb._posttask(info)
        unit_inputs, unit_consumers, ready = plan.unit_inputs, plan.unit_consumers, self.ready
        for u in batch:
            for k in unit_inputs[u]:
                left = refcount[k] - 1
                if left:
                    refcount[k] = left
                else:
                    del results[k]
            for c in unit_consumers[u]:
                left = waiting[c] - 1
                waiting[c] = left
                if not left:
                    heappush(ready, c)
        self.remaining -= len(batch)
        if not self.remaining:
            self._wake_caller()


def active(callbacks):
    """The callbacks for one run: those passed in plus those active as contexts."""
    return tuple(dict.fromkeys([*active_callbacks(), *(callbacks or ())]))
