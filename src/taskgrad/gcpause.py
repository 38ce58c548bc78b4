"""Pause Python's cyclic garbage collector while building large acyclic bookkeeping.

Planning a run allocates a few objects per task (lists, dict entries); with
a million live tasks, every few thousand allocations trigger a collection
that walks all of them, which more than doubled planning time.  Planning
creates no reference cycles, so nothing is lost by pausing the collector;
user code (the tasks themselves) always runs with it in its usual state.
"""

from __future__ import annotations

import gc


class gc_paused:
    """``with gc_paused():`` runs its block with the collector off (as it was after).

    A class, not a ``contextlib.contextmanager`` generator: every ``compute`` enters one,
    and the generator's machinery cost more than the pause itself on small graphs."""

    __slots__ = ("enabled",)

    def __enter__(self):
        self.enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc):
        if self.enabled:
            gc.enable()
