"""Inlining: literals and cheap tasks move into the tasks that read them.

A literal read by other tasks becomes a plain value in their argument
templates, so it is no longer a node to schedule.  A task whose function is in
``CHEAP_FUNCTIONS`` (item and attribute access, identity: work far smaller than
a scheduler round trip) is copied into each task that reads it, which becomes
a small :class:`~taskgrad.passes.fuse.Fused` task; the cheap task then
disappears.  Requested keys and placeholders always stay nodes.
"""

from __future__ import annotations

import operator

from ..delayed import _identity
from ..graph import Literal, Pack, Ref, postorder
from .common import rewrite
from .fuse import fused_task

CHEAP_FUNCTIONS = {operator.getitem, getattr, _identity}


def _is_cheap(func, cheap):
    try:
        return func in cheap
    except TypeError:  # an unhashable callable is not one of ours
        return False


def inline(graph, keys, cheap=None):
    """Inline literals and cheap tasks (``cheap`` defaults to ``CHEAP_FUNCTIONS``)."""
    cheap = CHEAP_FUNCTIONS if cheap is None else cheap
    wanted = set(keys)
    out = {}
    copied = {}  # key of a cheap task -> the task, to be copied into its readers

    def value_of(ref):
        task = out.get(ref.key)
        if type(task) is Literal and type(task.value) not in (Ref, Pack):
            return task.value
        return ref

    for key in postorder(graph, keys):
        task = graph[key]
        if task.dependencies:
            is_cheap = _is_cheap(task.func, cheap)
            if any(type(out.get(d)) is Literal for d in task.dependencies):
                task = rewrite(task, value_of)
            inner = [copied[d] for d in task.dependencies if d in copied]
            if inner:
                task = fused_task([*inner, task])
            if is_cheap and key not in wanted:
                copied[key] = task
                continue
        out[key] = task
    return {key: out[key] for key in postorder(out, keys)}
