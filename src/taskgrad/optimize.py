"""The optimization pipeline: which passes run, in which order.

Passes (see ``taskgrad.passes``), in the order they run:

- ``"cull"``: drop tasks the outputs do not need;
- ``"cse"``: merge pure tasks with equal function and inputs;
- ``"fold"``: compute the parts no placeholder feeds, once (compiled graphs);
- ``"inline"``: move literals and cheap tasks into the tasks that read them;
- ``"fuse"``: turn linear chains into single tasks.

``passes`` selects them: ``True`` for the defaults of the context, ``False``/
``None`` for none, a collection of names, or a dict ``{name: bool}``
overriding the defaults.  Every selection gives the same results.  ``compile``
runs all but ``fuse`` by default: it pays once for many runs.  ``fuse`` is
left out on this machine's schedulers because they already run each linear
chain as one unit at no cost per call, while a fused task pays for its
wrapper at every call (measured: 5% of a small compiled training step); it
is on by default for a dask.distributed Client, where every task costs the
cluster's scheduler about a millisecond.  ``compute`` runs none
by default, since it would pay at every call for little: the graph is culled
when collected, folding a dynamic graph would just compute it, the scheduler
already runs chains as units, and even ``cse`` costs a look at every pure
task's arguments (a tenth of a small training step); ask for it with
``compute(..., optimize_graph=["cse"])``.

Tape fusion (``autodiff/fuse_tape.py``: a traced forward task reads its value
from its tape instead of running twice) changes no result and always runs.
"""

from __future__ import annotations

from collections.abc import Mapping

from .autodiff.fuse_tape import fuse_tapes, fuse_tapes_in_order
from .gcpause import gc_paused
from .passes import cse, cull, fold_constants, fuse, inline

__all__ = ["PASSES", "COMPUTE_PASSES", "COMPILE_PASSES", "CLUSTER_COMPILE_PASSES", "optimize",
           "optimize_in_order", "select_passes"]

PASSES = ("cull", "cse", "fold", "inline", "fuse")
COMPUTE_PASSES = ()
COMPILE_PASSES = ("cull", "cse", "fold", "inline")
CLUSTER_COMPILE_PASSES = PASSES


def select_passes(passes, default=COMPUTE_PASSES):
    """The pass names a ``passes`` argument selects, in pipeline order."""
    if passes is True:
        return tuple(default)
    if passes is None or passes is False:
        return ()
    if isinstance(passes, str):
        passes = [passes]
    if isinstance(passes, Mapping):
        names = set(passes)
        chosen = (set(default) | {n for n, on in passes.items() if on}) - \
            {n for n, on in passes.items() if not on}
    else:
        try:
            names = chosen = set(passes)
        except TypeError:
            raise TypeError(
                f"optimize must be True, False, a collection of pass names or a dict "
                f"{{name: bool}}, got {passes!r}") from None
    unknown = sorted(map(repr, names - set(PASSES)))
    if unknown:
        raise ValueError(f"unknown optimization pass(es) {', '.join(unknown)}; "
                         f"choose from {list(PASSES)}")
    return tuple(name for name in PASSES if name in chosen)


def optimize(graph, keys, passes=True, *, default=COMPUTE_PASSES, scheduler="sync"):
    """Return an optimized copy of ``graph`` computing the same values for ``keys``.

    ``scheduler`` runs the constant subgraphs found by ``"fold"``.
    """
    keys = list(keys)
    graph = fuse_tapes(graph)
    steps = {"cull": cull, "cse": cse, "inline": inline, "fuse": fuse}
    for name in select_passes(passes, default):
        if name == "fold":  # runs user code: with the garbage collector as usual
            graph = fold_constants(graph, keys, scheduler=scheduler)
            continue
        with gc_paused():  # the other passes only build acyclic bookkeeping
            graph = steps[name](graph, keys)
    return graph


def optimize_in_order(graph, order, keys, passes=True):
    """``optimize`` for a graph whose order (dependencies first) is known: ``(graph,
    order)``, with the order kept through the tape fusion, or None where passes ran (they
    rewrite the graph, so its order has to be found again)."""
    if select_passes(passes):
        return optimize(graph, keys, passes), None
    return fuse_tapes_in_order(graph, order)
