"""Graph rewrite: compute a traced forward task from its tape, so it runs once.

``grad`` differentiates a plain-NumPy function ``F`` with a tape task ``T``
that runs the same call under tracing and keeps what the backward pass needs.
When both are in one graph, running ``F`` as well would do the forward work
twice; this rewrite makes ``F`` read its value from ``T`` instead.  The value
is the same (tracing only records), so the rewrite is always on.  A NumPy
function differentiated through the operations it is made of
(``numpy_composites``) is left alone: its composition may differ from NumPy's
own result in the last bit or the dtype, and the forward value is NumPy's.
"""

from __future__ import annotations

from ..graph import Ref, Task
from .backward_tasks import tape_value, trace_forward
from .rules import _COMPOSITES

__all__ = ["fuse_tapes", "fuse_tapes_in_order"]


def _tapes_of(graph):
    """forward key -> the key of a tape task computing it."""
    replace = {}
    for key, task in graph.items():
        # a NumPy function traced through its composition keeps NumPy's own value
        if task.func is trace_forward and task.args[1] not in _COMPOSITES:
            fkey = task.args[0].fkey
            if fkey in graph and fkey not in replace:
                replace[fkey] = key
    return replace


def _fused(graph, replace):
    graph = dict(graph)
    for fkey, tkey in replace.items():
        old = graph[fkey]
        graph[fkey] = Task(fkey, tape_value, (Ref(tkey),), dependencies=(tkey,), pure=old.pure,
                           role=old.role)
    return graph


def fuse_tapes(graph):
    """Return ``graph`` with each forward task that has a tape computed from it."""
    replace = _tapes_of(graph)
    return _fused(graph, replace) if replace else graph


def fuse_tapes_in_order(graph, order):
    """``(fuse_tapes(graph), its order)`` from an ``order`` of ``graph`` (dependencies
    first): each tape moves to just before the forward task that now reads it, where it
    can run, since it reads what that task read.  The order is None where a tape reads
    something else (then it has to be found again)."""
    replace = _tapes_of(graph)
    if not replace:
        return graph, order
    fused = _fused(graph, replace)
    for fkey, tkey in replace.items():
        if graph[tkey].dependencies != graph[fkey].dependencies:
            return fused, None
    tapes = set(replace.values())
    new_order = []
    for key in order:
        if key in tapes:
            continue
        tkey = replace.get(key)
        if tkey is not None:
            new_order.append(tkey)
        new_order.append(key)
    return fused, new_order
