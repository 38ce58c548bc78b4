"""Run a compiled graph on threads as fixed per-worker programs, planned once.

Why: the dynamic loop (``local.py``) pays, for every unit, a trip through the
run's shared state under its lock, a few microseconds of Python that holds
the GIL.  With fine-grained tasks (one ``tnp`` op each) that is most of the
Python a step runs, and while one thread runs it the other waits for the GIL:
a data-parallel step of ``tnp`` ops gained almost nothing from a second
thread.  A compiled graph runs the same units at every call, so its schedule
can be fixed once: the first calls run on the dynamic loop and measure each
unit's time, ``partition.py`` simulates the loop with those costs, and
``worker_programs.py`` writes each worker's share as straight-line code.
Later calls only start the programs: the calling thread runs the first, pool
threads the others, and they meet only where a value crosses between them.

A run never waits for a busy thread: the threads that run programs are
borrowed from a pool that starts a new one when none is idle (so a task that
itself runs a compiled graph, or two threads calling at once, cannot wait on
each other).  A failure anywhere stops every program before its next task and
is raised in the calling thread with the task's key in a note; tasks already
running on other threads finish in the background, as on the dynamic loop.
Callbacks (a profiler, a progress bar) watch the same schedule: the programs
are then written once more, with calls to their hooks around each task.
"""

from __future__ import annotations

import os
import threading
import time
from functools import partial
from queue import SimpleQueue

from ..callbacks import running_tasks
from .local import start_callbacks
from .partition import partition
from .worker_programs import worker_programs

__all__ = ["StaticThreads", "TASK_COST"]

# added to a unit's measured time per task: what running one costs besides its own work
TASK_COST = 1e-6


class StaticThreads:
    """``plan`` partitioned over ``workers`` threads by the measured ``costs`` of its units
    (seconds each); calling it with ``{leaf key: value}`` runs the graph and returns the
    values of ``keys``."""

    def __init__(self, plan, keys, costs, workers):
        cost = [c + TASK_COST * len(unit) for c, unit in zip(costs, plan.units)]
        self.plan, self.keys, self.literals = plan, keys, plan.values
        self.owner, self.order = partition(plan, workers, cost)
        self.programs, self.latch_count, self.countdown_sizes = self._write(watched=False)
        self.watched = None  # the programs calling callbacks' hooks, written when first used

    def _write(self, watched):
        """The programs (the calling thread's first, then those of helpers with units), the
        number of latches and the sizes of the countdowns."""
        programs, latch_count, countdown_sizes = worker_programs(
            self.plan, self.keys, self.owner, self.order, watched)
        programs = programs[:1] + [p for p, units in zip(programs[1:], self.order[1:]) if units]
        return programs, latch_count, countdown_sizes

    def __call__(self, values, callbacks=(), graph=None):
        """Run with ``values`` for some literal leaves; ``callbacks`` watch every task
        (``graph``: what their ``start`` and ``finish`` are given)."""
        if not callbacks:
            return self._run(values, self.programs)
        if self.watched is None:
            self.watched = self._write(watched=True)[0]
        hooks = _Hooks(callbacks)
        start_callbacks(callbacks, graph)
        errored = True
        try:
            out = self._run(values, self.watched, hooks.pre, hooks.post)
            errored = False
        finally:
            hooks.close()  # a task still running after a failure reports nothing more
            for cb in callbacks:
                cb._finish(graph, errored)
        return out

    def _run(self, values, programs, *hooks):
        lits = self.literals.copy()
        lits.update(values)
        pub, out, fail = {}, {}, []
        latches = [_closed_latch() for _ in range(self.latch_count)]
        countdowns = [[None] * n for n in self.countdown_sizes]
        args = (lits, pub, latches, countdowns, out, fail, _wait, *hooks)
        first, *others = programs
        join = _Join(len(others), fail)
        try:
            for program in others:
                _start_on_helper(partial(_run_helper, program, args, join))
            with running_tasks():
                first(*args)
            join.wait()
        except BaseException as exc:  # a task of the first program, Ctrl-C, no new thread
            join.failed(exc)
            if fail[0] is exc:
                raise
        if fail:
            raise fail[0]  # the run's first failure (a helper's, perhaps before this thread's)
        return [out[k] if k in out else lits[k] for k in self.keys]


class _Hooks:
    """The callbacks' hooks for watched programs, called one at a time, and no more once
    the run is over."""

    def __init__(self, callbacks):
        self.callbacks = callbacks
        self.lock = threading.Lock()
        self.open = True

    def pre(self, key):
        with self.lock:
            if self.open:
                for cb in self.callbacks:
                    cb._pretask(key)

    def post(self, key, start, worker):
        info = (key, start, time.time(), worker)
        with self.lock:
            if self.open:
                for cb in self.callbacks:
                    cb._posttask(info)

    def close(self):
        with self.lock:
            self.open = False


def _closed_latch():
    latch = threading.Lock()
    latch.acquire()
    return latch


def _wait(latch, fail):
    """Wait for ``latch`` to open; False once the run has failed instead (checked every
    10 ms: a failure never waits for the value that will not come)."""
    while not latch.acquire(timeout=0.01):
        if fail:
            return False
    return True


def _run_helper(program, args, join, queue):
    try:
        with running_tasks():
            program(*args)
    except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
        join.failed(exc)
    finally:
        _become_idle(queue)  # before the caller is woken: its next run finds this thread
        join.helper_done()


class _Join:
    """Where the calling thread waits for the helpers' programs: woken when the last one
    ends, or at the first failure."""

    __slots__ = ("pending", "fail", "lock", "wakeup", "woken")

    def __init__(self, helpers, fail):
        self.pending = helpers
        self.fail = fail
        self.lock = threading.Lock()
        self.wakeup = _closed_latch()
        self.woken = not helpers
        if not helpers:
            self.wakeup.release()

    def _wake(self):
        if not self.woken:
            self.woken = True
            self.wakeup.release()

    def failed(self, exc):
        """Record the run's first failure (later ones are consequences) and wake the caller."""
        with self.lock:
            if not self.fail:
                self.fail.append(exc)
            self._wake()

    def helper_done(self):
        with self.lock:
            self.pending -= 1
            if not self.pending:
                self._wake()

    def wait(self):
        self.wakeup.acquire()


# ---------------------------------------------------------------- the pool of helper threads

_idle = []  # the queues of helper threads waiting for a program, most recently used last
_idle_lock = threading.Lock()
MAX_IDLE = 8  # idle helpers kept; more (after many runs at once) end


def _start_on_helper(job):
    """Run ``job(queue)`` on an idle helper thread, or on a new one when none is idle; the
    job hands ``queue`` to :func:`_become_idle` when the thread is free again."""
    with _idle_lock:
        queue = _idle.pop() if _idle else None
    if queue is None:
        queue = SimpleQueue()
        threading.Thread(target=_serve, args=(queue,), daemon=True,
                         name="taskgrad-program").start()
    queue.put(job)


def _serve(queue):
    while True:
        job = queue.get()
        if job is None:
            return
        job(queue)
        del job


def _become_idle(queue):
    with _idle_lock:
        if len(_idle) < MAX_IDLE:
            _idle.append(queue)
            return
    queue.put(None)  # enough are idle: this thread ends


def _forget_helpers():
    """In a forked child the helper threads do not exist: start new ones when needed."""
    global _idle_lock
    _idle.clear()
    _idle_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_helpers)
