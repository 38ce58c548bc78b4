"""Static graphs: build once, optimize once, run many times with fresh feeds.

``tg.compile(outputs)`` culls and optimizes the graph of ``outputs`` and plans
its execution once; the returned :class:`Compiled` is then called with one
value per placeholder (``step(x=batch, W=w)``) and does no graph building per
call: placeholders are literal slots of the prepared plan.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

from .delayed import Delayed, collect_graph, unpack_delayed
from .gcpause import gc_paused
from .graph import Literal, materialize
from .optimize import CLUSTER_COMPILE_PASSES, COMPILE_PASSES, optimize as optimize_graph_
from .schedulers.distributed import is_client
from .placeholder import Placeholder, PlaceholderError, check_same_declaration
from .schedulers.prepared import PreparedRun

__all__ = ["Compiled", "compile"]


class Compiled:
    """A graph prepared once; ``self(**feeds)`` runs it (see :func:`compile`).

    ``source_graph`` is the culled graph as written, ``graph`` the optimized
    one (both plain dicts of tasks, so ``tg.visualize`` draws either);
    ``placeholders`` maps each name to feed to its :class:`Placeholder` task.
    """

    def __init__(self, outputs, *, optimize=True, scheduler=None, num_workers=None):
        if isinstance(outputs, list):
            outputs = tuple(outputs)
        template, found = unpack_delayed(outputs)
        if not found:
            raise TypeError(f"compile needs a Delayed or a list/tuple of Delayeds, "
                            f"got {outputs!r}")
        self._template = template
        self._keys = keys = list(found)
        with gc_paused():
            self.source_graph = collect_graph(found.values())
            self.placeholders = _placeholders(found.values())
        # the placeholders whose feeds have a shape or dtype to check
        self._declared = [(name, p) for name, p in self.placeholders.items()
                          if p.shape is not None or p.dtype is not None]
        self.optimize = optimize
        default = CLUSTER_COMPILE_PASSES if is_client(scheduler) else COMPILE_PASSES
        self.graph = optimize_graph_(self.source_graph, keys, optimize, default=default,
                                     scheduler=scheduler)
        # outputs computed once at compile time ("fold"): each call returns a copy, as an
        # unfolded graph computes a new value each call, so that changing a returned value in
        # place changes no later call (nor the outputs computed from it)
        self._folded = [i for i, k in enumerate(keys) if type(self.graph[k]) is Literal
                        and type(self.source_graph[k]) is not Literal]
        slots = {k: (Literal(k, None) if type(t) is Placeholder else t)
                 for k, t in self.graph.items()}
        with gc_paused():
            self._run = PreparedRun(slots, keys, scheduler=scheduler, num_workers=num_workers)

    @property
    def scheduler(self):
        return self._run.scheduler

    def __call__(self, feeds=None, /, *, callbacks=None, **named):
        """Run with one value per placeholder, by name (or in a dict for any names)."""
        if feeds is not None:
            if not isinstance(feeds, Mapping):
                raise TypeError(f"feed placeholders by name, step(x=...) or step({{'x': ...}}), "
                                f"not with a {type(feeds).__name__}; this graph's placeholders "
                                f"are {list(self.placeholders)}")
            both = feeds.keys() & named.keys()
            if both:
                raise PlaceholderError(f"placeholder(s) {sorted(both)} fed twice, in the dict "
                                       "and by keyword")
            named = {**feeds, **named}
        if named.keys() != self.placeholders.keys():
            missing = [name for name in self.placeholders if name not in named]
            unknown = [name for name in named if name not in self.placeholders]
            problems = []
            if missing:
                problems.append(f"missing feed(s) for placeholder(s) {missing}")
            if unknown:
                problems.append(f"unknown feed name(s) {unknown}")
            raise PlaceholderError("; ".join(problems) +
                                   f"; this graph's placeholders are {list(self.placeholders)}")
        for name, value in named.items():
            if isinstance(value, Delayed):
                raise PlaceholderError(
                    f"placeholder {name!r} was fed a Delayed ({value.key!r}), which has no value "
                    "yet: feed its computed value, or build the graph with it in place of the "
                    "placeholder")
        for name, placeholder in self._declared:
            placeholder.check(named[name])
        values = self._run(named, callbacks)
        for i in self._folded:
            values[i] = _fresh(values[i])
        return materialize(self._template, dict(zip(self._keys, values)))

    def visualize(self, filename=None, format=None, optimized=True, **kwargs):
        """Draw the optimized graph (or, with ``optimized=False``, the graph as written)."""
        from .visualize import visualize

        graph = self.graph if optimized else self.source_graph
        return visualize(dict(graph), filename=filename, format=format, **kwargs)

    def __repr__(self):
        return (f"<Compiled: {len(self.source_graph)} tasks -> {len(self.graph)} after "
                f"optimization, placeholders {list(self.placeholders)}>")


def _placeholders(delayeds):
    """name -> Placeholder for those the outputs need.

    Two placeholders may share a name (the same input, declared twice) only
    when they declare the same shape and dtype.
    """
    found = {}
    seen = set()
    stack = list(delayeds)
    while stack:
        d = stack.pop()
        task = d._task
        if type(task) is Placeholder:
            check_same_declaration(found.setdefault(task.key, task), task)
        elif d._key not in seen:
            seen.add(d._key)
            stack.extend(d._dependencies)
    return found


def _fresh(value):
    """A copy of a folded output, deep (its arrays too); a value that cannot be copied is
    returned as it is."""
    try:
        return copy.deepcopy(value)
    except Exception:  # noqa: BLE001 - (a lock, a generator): the value itself
        return value


_DEFAULT = object()  # ``optimize`` not given (it means True)


def compile(outputs, *, optimize=_DEFAULT, scheduler=None, num_workers=None,
            optimize_graph=None):
    """Prepare ``outputs`` (a Delayed, or a list/tuple of them) to run many times.

    ``optimize`` (alias ``optimize_graph``) selects passes as in
    :mod:`taskgrad.optimize`: ``True`` the defaults (cull, cse, fold and
    inline; fuse too on a dask.distributed Client), ``False`` none, or give
    names / a ``{name: bool}`` dict.
    ``scheduler`` and ``num_workers`` are used for every call (and for
    folding constants).  Calling the result returns one value for a single
    Delayed, a tuple for a list or tuple.
    """
    if optimize_graph is not None:
        if optimize is not _DEFAULT:
            raise TypeError("compile got both optimize= and its alias optimize_graph=; "
                            "give one")
        optimize = optimize_graph
    elif optimize is _DEFAULT:
        optimize = True
    return Compiled(outputs, optimize=optimize, scheduler=scheduler, num_workers=num_workers)
