"""Graph optimizations applied before a run (``optimize_graph=True``).

Culling happens when the graph is collected (only what the outputs need is
gathered), so for now the default pipeline returns the graph unchanged.
"""

from __future__ import annotations


def optimize(graph, keys):
    return graph
