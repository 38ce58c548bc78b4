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

__all__ = ["fuse_tapes"]


def fuse_tapes(graph):
    """Return ``graph`` with each forward task that has a tape computed from it."""
    replace = {}
    for key, task in graph.items():
        # a NumPy function traced through its composition keeps NumPy's own value
        if task.func is trace_forward and task.args[1] not in _COMPOSITES:
            fkey = task.args[0].fkey
            if fkey in graph and fkey not in replace:
                replace[fkey] = key
    if not replace:
        return graph
    graph = dict(graph)
    for fkey, tkey in replace.items():
        old = graph[fkey]
        graph[fkey] = Task(fkey, tape_value, (Ref(tkey),), dependencies=(tkey,), pure=old.pure,
                           role=old.role)
    return graph
