"""Callbacks: hooks that watch a run (progress bars, profilers, users' own tools).

As in dask, a ``Callback`` is active inside ``with cb:`` (or passed to
``compute(callbacks=[...])``), and the scheduler calls, one call at a time
(the parallel schedulers hold the run's lock), ``start`` and ``finish`` from
the thread that called ``compute`` and the task hooks from whichever worker
thread took or finished the task:

- ``start(graph)`` before anything runs;
- ``pretask(key)`` when a task is handed to a worker (or about to run);
- ``posttask(info)`` when it has finished, ``info`` being a :class:`TaskInfo`
  with its start and end time (``time.time()`` in the worker) and worker id;
  leaves that only hold a value are not tasks that run, and are not reported;
- ``finish(graph, errored)`` at the end, also after a failure.

Callbacks active as contexts watch every run started outside tasks, several at
once when several threads compute; a compute that a task starts itself is part
of that task's work and is not reported to them.

Subclass and override the methods, or pass functions to the constructor.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

__all__ = ["Callback", "TaskInfo", "active_callbacks"]

_active = []
_lock = threading.Lock()


class TaskInfo(NamedTuple):
    key: str
    start: float
    end: float
    worker: int


class Callback:
    """Base class for run observers; methods not overridden cost nothing."""

    def __init__(self, start=None, pretask=None, posttask=None, finish=None):
        if start is not None:
            self.start = start
        if pretask is not None:
            self.pretask = pretask
        if posttask is not None:
            self.posttask = posttask
        if finish is not None:
            self.finish = finish

    def start(self, graph):
        pass

    def pretask(self, key):
        pass

    def posttask(self, info):
        pass

    def finish(self, graph, errored):
        pass

    # the scheduler calls these; they convert the raw tuple to a TaskInfo
    def _start(self, graph):
        self.start(graph)

    def _pretask(self, key):
        self.pretask(key)

    def _posttask(self, info):
        self.posttask(TaskInfo(*info))

    def _finish(self, graph, errored):
        self.finish(graph, errored)

    def __enter__(self):
        with _lock:
            _active.append(self)
        return self

    def __exit__(self, *exc):
        with _lock:
            if self in _active:
                _active.remove(self)
        return False


def active_callbacks():
    """The callbacks currently active as context managers, oldest first.

    None for a compute called from inside a task of a run: its work is part of
    that task's, which the callbacks already watch.
    """
    if getattr(_in_run, "depth", 0):
        return ()
    return tuple(_active)


_in_run = threading.local()


class running_tasks:
    """Marks that this thread runs tasks of a run (for :func:`active_callbacks`)."""

    def __enter__(self):
        _in_run.depth = getattr(_in_run, "depth", 0) + 1

    def __exit__(self, *exc):
        _in_run.depth -= 1
