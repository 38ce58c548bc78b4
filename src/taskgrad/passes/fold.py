"""Constant folding: run every part of the graph that no placeholder feeds, once.

In a compiled graph only what depends on a placeholder changes between calls;
the rest (weights built by functions, lookup tables, ...) is computed when the
pass runs and replaced by literals.  The tasks folded are the *frontier*: the
constant tasks that a varying task reads, or that are requested.  Their
constant ancestors then fall away.  A folded task runs once, so a task that
returns fresh random numbers at each call returns the same ones afterwards,
as under ``jax.jit``.
"""

from __future__ import annotations

from ..graph import Literal, postorder
from ..placeholder import Placeholder


def fold_constants(graph, keys, scheduler="sync"):
    """Replace constant subgraphs by their values (computed with ``scheduler``)."""
    from ..schedulers import get

    order = postorder(graph, keys)
    varying = set()
    frontier = dict.fromkeys(k for k in keys if type(graph[k]) is not Placeholder)
    for key in order:
        task = graph[key]
        if type(task) is Placeholder or any(dep in varying for dep in task.dependencies):
            varying.add(key)
            frontier.update(dict.fromkeys(d for d in task.dependencies if d not in varying))
    frontier = [k for k in frontier if k not in varying and type(graph[k]) is not Literal]
    if not frontier:
        return {key: graph[key] for key in order}
    values = dict(zip(frontier, get(graph, frontier, scheduler=scheduler)))
    folded = {k: (Literal(k, values[k]) if k in values else graph[k]) for k in order}
    return {key: folded[key] for key in postorder(folded, keys)}
