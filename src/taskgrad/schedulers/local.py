"""The scheduler loop: run a graph in dependency order on this machine.

``run_sync`` runs the depth-first order in the calling thread.  ``run_parallel``
is one event loop that keeps a heap of ready units (fused chains, see
``plan.py``), hands them in batches to an executor (threads or processes),
and, as each batch comes back, releases every value nothing still needs and
makes newly ready units available.  A lone ready unit with no other work in
flight runs in the calling thread when the executor allows it: a round trip
would only add latency.

Modelled on dask's ``dask/local.py`` (``get_async``), with the per-task work
moved out of the loop: counts are precomputed and workers get batches.
"""

from __future__ import annotations

import time
from heapq import heapify, heappop, heappush

from ..callbacks import active_callbacks
from ..gcpause import gc_paused
from ..graph import count_readers, execute, postorder
from .plan import Plan


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


def run_sync(graph, keys, callbacks=()):
    """Run in the calling thread, in depth-first order; exceptions keep their traceback."""
    with gc_paused():
        order = postorder(graph, keys)
        wanted = set(keys)
        remaining = count_readers(map(graph.__getitem__, order))
    results = {}
    for cb in callbacks:
        cb._start(graph)
    errored = True
    try:
        for key in order:
            task = graph[key]
            watched = callbacks and task.func is not None
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
            for dep in task.dependencies:
                left = remaining[dep] - 1
                if left or dep in wanted:
                    remaining[dep] = left
                else:
                    del results[dep]
        errored = False
    finally:
        for cb in callbacks:
            cb._finish(graph, errored)
    return [results[k] for k in keys]


def run_parallel(graph, keys, executor, callbacks=(), plan=None, values=None):
    """Run ``graph`` with ``executor`` and return the values of ``keys`` in order.

    A ``plan`` prepared earlier (``Plan(graph, keys)``) may be reused; ``values``
    then replaces the values of some of its literal leaves for this run.
    """
    if plan is None:
        with gc_paused():
            plan = Plan(graph, keys)
    units, unit_key, unit_inputs = plan.units, plan.unit_key, plan.unit_inputs
    consumers, refcount, waiting = plan.consumers, dict(plan.refcount), list(plan.waiting)
    results = dict(plan.values)
    if values:
        results.update(values)
    timed = bool(callbacks)
    ready = [u for u, w in enumerate(waiting) if w == 0]
    heapify(ready)
    remaining = len(units)
    in_flight = {}
    next_batch = 0

    def finish(u):
        for k in unit_inputs[u]:
            left = refcount[k] - 1
            if left:
                refcount[k] = left
            else:
                del results[k]
        for c in consumers.get(unit_key[u], ()):
            left = waiting[c] - 1
            waiting[c] = left
            if not left:
                heappush(ready, c)

    def announce(batch):
        for u in batch:
            for task in units[u]:
                for cb in callbacks:
                    cb._pretask(task.key)

    def report(timings, worker):
        for key, start, end in timings:
            info = (key, start, end, worker)
            for cb in callbacks:
                cb._posttask(info)

    for cb in callbacks:
        cb._start(graph)
    errored = True
    executor.start(results)
    try:
        while remaining:
            while ready and len(in_flight) < executor.max_in_flight:
                if not in_flight and len(ready) == 1 and executor.inline:
                    u = heappop(ready)
                    timings = [] if timed else None
                    if timed:
                        announce([u])
                    try:
                        run_unit(units[u], results, timings)
                    except TaskFailed as failed:
                        raise add_task_note(failed.exc, failed.key) from None
                    if timed:
                        report(timings, 0)
                    remaining -= 1
                    finish(u)
                    continue
                size = min(executor.max_batch, max(1, len(ready) // executor.max_in_flight))
                batch = [heappop(ready) for _ in range(min(size, len(ready)))]
                if timed:
                    announce(batch)
                executor.submit(next_batch, [units[u] for u in batch],
                                [unit_inputs[u] for u in batch], timed)
                in_flight[next_batch] = batch
                next_batch += 1
            if not remaining:
                break
            if not in_flight:
                raise RuntimeError(f"scheduler stalled with {remaining} units left (a bug)")
            batch_id, outputs, timings, worker = executor.wait()
            batch = in_flight.pop(batch_id)
            if outputs is not None:
                results.update(outputs)
            if timed:
                report(timings, worker)
            remaining -= len(batch)
            for u in batch:
                finish(u)
        errored = False
    finally:
        executor.stop(errored)
        for cb in callbacks:
            cb._finish(graph, errored)
    return [results[k] for k in keys]


def active(callbacks):
    """The callbacks for one run: those passed in plus those active as contexts."""
    return tuple(dict.fromkeys([*active_callbacks(), *(callbacks or ())]))
