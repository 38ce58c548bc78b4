"""Common-subexpression elimination: pure tasks with equal inputs run once.

Two tasks are merged when both are ``pure``, call the same function and have
equal argument templates once their dependencies are themselves merged.
Literal argument values compare by type and exact value for numbers,
strings and containers of them (so ``1``, ``1.0`` and ``True`` stay apart,
and so do ``0.0`` and ``-0.0``) and by identity otherwise (two references to
one array are equal; two equal arrays are not compared element by element).
A requested key that duplicates another stays in the graph as an alias.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ..delayed import _identity
from ..graph import Pack, Ref, Task, postorder
from .common import is_leaf, rename


_EXACT = frozenset([int, str, bytes, bool, type(None)])  # equal values are the same value


def _freeze(value):
    """A hashable stand-in for a template: equal stand-ins mean the same values.

    Floats compare by their bits (``0.0`` and ``-0.0`` differ), containers item
    by item with their types (``(True,)`` and ``(1,)`` differ, namedtuples too),
    other objects by identity: equal is not enough (``Decimal("1.0")`` and
    ``Decimal("1.00")`` are equal but print differently).
    """
    cls = type(value)
    if cls in _EXACT:
        return (cls, value)
    if cls is Ref:
        return (Ref, value.key)
    if cls is Pack:
        return (Pack, value.kind, tuple(_freeze(v) for v in value.items))
    if cls is float:
        return (float, value.hex())
    if cls is complex:
        return (complex, value.real.hex(), value.imag.hex())
    if isinstance(value, np.generic):
        return (cls, value.tobytes())
    if isinstance(value, (tuple, list)):
        return (cls, tuple(_freeze(v) for v in value))
    if cls is dict:
        return (dict, tuple((_freeze(k), _freeze(v)) for k, v in value.items()))
    if cls is frozenset or cls is set:
        return (cls, frozenset(_freeze(v) for v in value))
    if cls is partial:  # rules made per call (``partial(rule, pos)``) are equal by content
        return (partial, id(value.func), _freeze(value.args), _freeze(value.keywords))
    return ("id", id(value))


def _signature(task):
    kwargs = task.kwargs
    frozen_kwargs = tuple((k, _freeze(v)) for k, v in kwargs.items()) if kwargs else ()
    return (task.func, tuple(_freeze(a) for a in task.args), frozen_kwargs)


def _has_duplicates(graph):
    """Whether two pure tasks have equal signatures as written.

    The first merge in dependency order compares tasks whose inputs were not
    renamed, so without such a pair nothing merges: most graphs skip the walk.
    """
    seen = set()
    for task in graph.values():
        if task.pure and not is_leaf(task):
            try:
                sig = _signature(task)
                if sig in seen:
                    return True
                seen.add(sig)
            except TypeError:
                continue
    return False


def cse(graph, keys):
    """Merge duplicate pure tasks, keeping every key in ``keys``."""
    if not _has_duplicates(graph):
        return graph
    wanted = set(keys)
    merged = {}  # duplicate key -> the key that stays
    seen = {}  # signature -> key
    out = {}
    for key in postorder(graph, keys):
        task = rename(graph[key], merged)
        if task.pure and not is_leaf(task):
            sig = _signature(task)
            try:
                first = seen.setdefault(sig, key)
            except TypeError:  # an argument whose __hash__ fails: leave it alone
                first = key
            if first != key:
                merged[key] = first
                if key in wanted:
                    out[key] = Task(key, _identity, (Ref(first),), pure=True, role=task.role)
                continue
        out[key] = task
    return out
