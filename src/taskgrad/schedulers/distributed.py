"""Run a taskgrad graph on a dask.distributed cluster (``scheduler=client``).

The graph is translated task by task (``dask_graph.py``) and handed to
``Client.get``; distributed then does its own placement, work stealing and
memory release across machines.  A task's exception comes back with its
original type and the note naming the task, added on the worker.
"""

from __future__ import annotations

from ..delayed import new_token
from .dask_graph import to_dask_graph


def is_client(obj):
    """True for a dask.distributed Client (without importing distributed)."""
    return any(c.__name__ == "Client" and c.__module__.startswith("distributed")
               for c in type(obj).__mro__)


def run_distributed(graph, keys, client):
    """``keys`` of ``graph`` computed on ``client``.

    Each call gets keys of its own on the cluster: the cluster would hand back
    what it still holds under a key, and a key may stand for other work from
    one call to the next (a compiled graph fed new values, a forward task that
    reads its tape once a gradient is asked for, a leaf named again).  The tasks
    themselves keep their keys (notes, their own inputs).
    """
    call = new_token()
    cluster_key = {k: f"{k}@{call}" for k in graph}.__getitem__
    return list(client.get(to_dask_graph(graph, cluster_key), [cluster_key(k) for k in keys],
                           sync=True))
