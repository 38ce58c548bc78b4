"""Run a taskgrad graph on a dask.distributed cluster (``scheduler=client``).

The graph is translated task by task (``dask_graph.py``) and handed to
``Client.get``; distributed then does its own placement, work stealing and
memory release across machines.  A task's exception comes back with its
original type and the note naming the task, added on the worker.
"""

from __future__ import annotations

from .dask_graph import to_dask_graph


def is_client(obj):
    """True for a dask.distributed Client (without importing distributed)."""
    return any(c.__name__ == "Client" and c.__module__.startswith("distributed")
               for c in type(obj).__mro__)


def run_distributed(graph, keys, client):
    return list(client.get(to_dask_graph(graph), list(keys), sync=True))
