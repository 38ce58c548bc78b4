"""Small helpers the passes share: leaves, reader counts, rewriting templates."""

from __future__ import annotations

from ..graph import Literal, Pack, Ref, Task, materialize
from ..placeholder import Placeholder


def is_leaf(task):
    """A task whose value is known without running anything (a literal or a placeholder)."""
    cls = type(task)
    return cls is Literal or cls is Placeholder


def readers(graph, order):
    """How many tasks of ``order`` read each key (a reader counted once per key)."""
    count = dict.fromkeys(order, 0)
    for key in order:
        for dep in graph[key].dependencies:
            count[dep] += 1
    return count


def substitute(template, replace):
    """Return ``template`` with each ``Ref`` r replaced by ``replace(r)``.

    ``replace`` returns a template (a Ref, or a plain value to inline).
    Recurses only on the nesting of user containers, as ``materialize`` does.
    """
    cls = type(template)
    if cls is Ref:
        return replace(template)
    if cls is Pack:
        kind = template.kind
        if kind is dict:
            items = tuple((k, substitute(v, replace)) for k, v in template.items)
        else:
            items = tuple(substitute(v, replace) for v in template.items)
        pack = Pack(kind, items)
        values = [v for _, v in items] if kind is dict else items
        if any(type(v) in (Ref, Pack) for v in values):
            return pack
        return materialize(pack, {})  # nothing left to fill: a plain value
    return template


def rewrite(task, replace):
    """``task`` with its Refs replaced by ``replace(ref)`` (dependencies recomputed)."""
    args = tuple(substitute(a, replace) for a in task.args)
    kwargs = {k: substitute(v, replace) for k, v in task.kwargs.items()} if task.kwargs else None
    return Task(task.key, task.func, args, kwargs, pure=task.pure, role=task.role)


def rename(task, names):
    """``task`` reading ``names[k]`` wherever it read ``k``; the same task if none apply."""
    if not any(dep in names for dep in task.dependencies):
        return task
    return rewrite(task, lambda ref: Ref(names[ref.key]) if ref.key in names else ref)
