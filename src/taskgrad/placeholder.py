"""Placeholders: graph leaves whose values are fed when a compiled graph runs.

A placeholder is a task that cannot run by itself: computing a graph that
holds one without feeding it (``tg.compile(...)(name=value)``) raises a
:class:`PlaceholderError` naming it.  A declared ``shape`` (``None`` for an axis
of any length) and ``dtype`` are checked against every value fed.
"""

from __future__ import annotations

import numpy as np

from .delayed import Delayed
from .graph import Task

__all__ = ["Placeholder", "PlaceholderError", "placeholder"]


class PlaceholderError(ValueError):
    """A placeholder was not fed, fed twice over, or fed a value it does not accept."""


def _unfed(name):
    raise PlaceholderError(
        f"placeholder {name!r} has no value: compile the graph with tg.compile(outputs) "
        f"and call it with {name}=value"
    )


class Placeholder(Task):
    """A leaf task standing for a value fed at run time; ``key`` is its name."""

    __slots__ = ("shape", "dtype")

    def __init__(self, name, shape=None, dtype=None):
        super().__init__(name, _unfed, (name,), dependencies=())
        self.shape = shape
        self.dtype = dtype

    def __getstate__(self):
        return (super().__getstate__(), self.shape, self.dtype)

    def __setstate__(self, state):
        base, self.shape, self.dtype = state
        super().__setstate__(base)

    def __repr__(self):
        return f"<Placeholder {self.key!r} shape={self.shape} dtype={self.dtype}>"

    def check(self, value):
        """Raise PlaceholderError when ``value`` does not fit the declared shape or dtype."""
        if self.dtype is not None:
            dtype = getattr(value, "dtype", None)
            if dtype is None:
                dtype = np.asarray(value).dtype
            if dtype != self.dtype:
                raise PlaceholderError(
                    f"placeholder {self.key!r} expects dtype {self.dtype}, got {dtype}")
        if self.shape is not None:
            shape = np.shape(value)
            if len(shape) != len(self.shape) or any(
                    want is not None and want != got for want, got in zip(self.shape, shape)):
                want = "(" + ", ".join("None" if d is None else str(d) for d in self.shape) + \
                    ("," if len(self.shape) == 1 else "") + ")"
                raise PlaceholderError(
                    f"placeholder {self.key!r} expects shape {want}, got {shape}")


def _check_shape(name, shape):
    if shape is None:
        return None
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(f"placeholder {name!r}: shape must be a tuple of ints or None, "
                        f"got {shape!r}") from None
    for dim in shape:
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, (int, np.integer))
                                or dim < 0):
            raise TypeError(f"placeholder {name!r}: shape entries must be non-negative ints "
                            f"or None, got {shape!r}")
    return tuple(None if d is None else int(d) for d in shape)


def check_same_declaration(first, task):
    """Two placeholders may share a name (one input, declared twice) only declared alike."""
    if (first.shape, first.dtype) != (task.shape, task.dtype):
        raise PlaceholderError(
            f"two placeholders named {task.key!r} declare different shapes or dtypes: "
            f"{first.shape}/{first.dtype} and {task.shape}/{task.dtype}")


def placeholder(name, shape=None, dtype=None):
    """A lazy input named ``name``, fed at run time: ``tg.compile(out)(name=value)``.

    ``shape`` is a tuple whose entries are ints or ``None`` (any length);
    ``dtype`` anything ``numpy.dtype`` accepts.  Both are optional.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"placeholder name must be a non-empty str, got {name!r}")
    shape = _check_shape(name, shape)
    if dtype is not None:
        dtype = np.dtype(dtype)
    return Delayed(name, Placeholder(name, shape, dtype), ())
