"""Graph optimizations applied before a run (``optimize_graph=True``).

Culling happens when the graph is collected (only what the outputs need is
gathered).  Tape fusion (``autodiff/fuse_tape.py``) changes no result and
saves running a traced forward task twice, so it is always applied.
"""

from __future__ import annotations

from .autodiff.fuse_tape import fuse_tapes


def optimize(graph, keys):
    return fuse_tapes(graph)
