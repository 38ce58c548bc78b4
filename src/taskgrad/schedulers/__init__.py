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


def get(graph, keys, scheduler=None, num_workers=None, callbacks=None):
    """Compute ``keys`` of ``graph`` (key -> Task) and return their values in order."""
    if scheduler is None:
        scheduler = default_scheduler
    if is_client(scheduler):
        return run_distributed(graph, keys, scheduler)
    kind = SCHEDULERS.get(scheduler) if isinstance(scheduler, str) else None
    if kind is None:
        raise ValueError(
            f"unknown scheduler {scheduler!r}: use 'sync', 'threads', 'processes' "
            "or a dask.distributed Client"
        )
    if num_workers is not None and (not isinstance(num_workers, int) or num_workers < 1):
        raise ValueError(f"num_workers must be a positive int, got {num_workers!r}")
    callbacks = active(callbacks)
    if kind == "sync":
        return run_sync(graph, keys, callbacks)
    executor = ThreadExecutor(num_workers) if kind == "threads" else ProcessExecutor(num_workers)
    return run_parallel(graph, keys, executor, callbacks)
