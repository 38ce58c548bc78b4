"""Translate a taskgrad graph into a dask graph, for dask's and distributed's schedulers.

Every task becomes ``(run_task, task, *dependency_keys)``: dask substitutes the
dependency values and never looks inside our task object, so literal strings
or tuples in our arguments are never mistaken for keys or tasks.
"""

from __future__ import annotations

from ..graph import execute
from .local import add_task_note


def run_task(task, *values):
    """Run one taskgrad task inside a dask worker."""
    try:
        return execute(task, dict(zip(task.dependencies, values)))
    except Exception as exc:
        raise add_task_note(exc, task.key)


def to_dask_graph(graph, cluster_key=None):
    """The dask graph of ``graph``; ``cluster_key`` renames its keys for the cluster only."""
    if cluster_key is None:
        return {key: (run_task, task, *task.dependencies) for key, task in graph.items()}
    return {cluster_key(key): (run_task, task, *map(cluster_key, task.dependencies))
            for key, task in graph.items()}
