"""``compute`` and ``persist``: run several lazy objects as one graph."""

from __future__ import annotations

from .delayed import Delayed, collect_in_order, unpack_delayed
from .gcpause import gc_paused
from .graph import Literal, materialize
from .schedulers import get, resolve
from .schedulers.local import active

__all__ = ["compute", "persist"]


def compute(*objs, scheduler=None, num_workers=None, optimize_graph=True, callbacks=None):
    """Compute several objects sharing one graph; shared nodes run once.

    Objects may be Delayeds, containers (nested) holding Delayeds, or plain
    values (returned as they are).  Returns a tuple, one entry per object.
    """
    template, found = unpack_delayed(objs)
    if not found:
        return tuple(objs)
    keys = list(found)
    # gradients of a recipe, computed again: their run written out (autodiff/recipe_runs.py)
    request = None
    if optimize_graph is True and resolve(scheduler, num_workers) == "sync" \
            and not active(callbacks):
        request = request_of(found)
    values = None if request is None else request.run()
    if values is None:
        with gc_paused():
            graph, order = collect_in_order(found.values())
        if optimize_graph:
            from .optimize import optimize_in_order

            graph, order = optimize_in_order(graph, order, keys, optimize_graph)
        values = get(graph, keys, scheduler=scheduler, num_workers=num_workers,
                     callbacks=callbacks, order=order)
        if request is not None:
            request.learn(graph, order, keys)
    return tuple(materialize(template, dict(zip(keys, values))))


def persist(*objs, **kwargs):
    """Compute and return Delayeds that hold their values (cheap to reuse)."""
    template, found = unpack_delayed(objs)
    if not found:
        return tuple(objs)
    ds = list(found.values())
    values = compute(*ds, **kwargs)
    held = {d.key: Delayed(d.key, Literal(d.key, v), (), d._length) for d, v in zip(ds, values)}
    return tuple(materialize(template, held))


# (last: autodiff imports ``compute`` from here)
from .autodiff.recipe_runs import request_of  # noqa: E402
