"""Schedulers: ``sync``, ``threads``, ``processes`` and a dask.distributed Client."""

from __future__ import annotations

from .distributed import is_client, run_distributed
from .local import active, run_parallel, run_sync
from .processes import ProcessExecutor, WorkerDiedError
from .threads import ThreadExecutor

__all__ = ["get", "WorkerDiedError", "SCHEDULERS"]

SCHEDULERS = {
    "sync": "sync", "synchronous": "sync", "single-threaded": "sync",
    "threads": "threads", "threading": "threads",
    "processes": "processes", "multiprocessing": "processes",
}

default_scheduler = "threads"


def resolve(scheduler, num_workers=None):
    """Check a scheduler choice: ``"client"``, ``"sync"``, ``"threads"`` or ``"processes"``."""
    if scheduler is None:
        scheduler = default_scheduler
    if is_client(scheduler):
        return "client"
    kind = SCHEDULERS.get(scheduler) if isinstance(scheduler, str) else None
    if kind is None:
        raise ValueError(
            f"unknown scheduler {scheduler!r}: use 'sync', 'threads', 'processes' "
            "or a dask.distributed Client"
        )
    if num_workers is not None and (not isinstance(num_workers, int) or num_workers < 1):
        raise ValueError(f"num_workers must be a positive int, got {num_workers!r}")
    return kind


def executor_for(kind, num_workers=None):
    """A fresh executor for the parallel loop (``kind`` from :func:`resolve`)."""
    return ThreadExecutor(num_workers) if kind == "threads" else ProcessExecutor(num_workers)


def get(graph, keys, scheduler=None, num_workers=None, callbacks=None, order=None):
    """Compute ``keys`` of ``graph`` (key -> Task) and return their values in order.

    ``order``, when known, lists what ``keys`` need in ``graph.postorder``'s order."""
    kind = resolve(scheduler, num_workers)
    if kind == "client":
        return run_distributed(graph, keys, scheduler)
    callbacks = active(callbacks)
    if kind == "sync":
        return run_sync(graph, keys, callbacks, order)
    return run_parallel(graph, keys, executor_for(kind, num_workers), callbacks, order=order)
