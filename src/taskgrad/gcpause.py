"""Pause Python's cyclic garbage collector while building large acyclic bookkeeping.

Planning a run allocates a few objects per task (lists, dict entries); with
a million live tasks, every few thousand allocations trigger a collection
that walks all of them, which more than doubled planning time.  Planning
creates no reference cycles, so nothing is lost by pausing the collector;
user code (the tasks themselves) always runs with it in its usual state.
"""

from __future__ import annotations

import contextlib
import gc


@contextlib.contextmanager
def gc_paused():
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
