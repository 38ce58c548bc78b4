"""Cull: drop every task the requested keys do not need (dead code)."""

from __future__ import annotations

from ..graph import postorder


def cull(graph, keys):
    """The tasks ``keys`` need, in dependency order (dependencies first)."""
    return {key: graph[key] for key in postorder(graph, keys)}
