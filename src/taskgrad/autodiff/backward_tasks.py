"""The functions that the tasks of a backward graph run.

Each is a plain function of values, so backward tasks run on every scheduler
(and pickle for processes and dask.distributed).  ``rule_vjp`` and the tape
functions are written with NumPy, so a backward task can itself be traced and
differentiated (gradients of gradients).
"""

from __future__ import annotations

import functools

import numpy as np

from ..graph import run_early
from .rules import defvjp, defvjp_argnum, nondifferentiable
from .shape_dtype import shape_dtype, shape_of
from .trace import add_cotangents, astype, backprop, trace_call, zeros_like_value

__all__ = ["rule_vjp", "TapeSpec", "trace_forward", "tape_vjp", "tape_value", "retrace_vjp",
           "sum_cotangents", "ones_for", "checked_cotangent", "zeros_for", "describe"]


@run_early
def describe(value):
    """The shape and dtype of a forward value, so that the value itself can be freed early."""
    return shape_dtype(value)


def rule_vjp(positions, kwargs, g, ans, *args):
    """The cotangent of one dependency of a call ``f(*args, **kwargs)`` (value ``ans``).

    ``positions`` lists ``(rule, argument position, index in a sequence
    argument or None)`` for every place the dependency appears; their
    contributions add.  The rules travel with the task, so worker processes
    need not have registered them.
    """
    if len(positions) == 1:  # the common case, without the loop
        (rule, _, sub), = positions
        c = rule(ans, *args, **kwargs)(g)
        return c if sub is None else c[sub]
    total = None
    for rule, pos, sub in positions:
        c = rule(ans, *args, **kwargs)(g)
        if sub is not None:
            c = c[sub]
        total = add_cotangents(total, c)
    return total


class TapeSpec:
    """What a tape task traces: the forward key it stands for, a name, and the
    places (in ``(args, kwargs)``) of each differentiated dependency."""

    __slots__ = ("fkey", "label", "name", "paths")

    def __init__(self, fkey, name, paths):
        self.fkey = fkey
        self.name = name
        self.paths = paths
        self.label = f"{name!r} (task {fkey!r})"  # (for error messages; made once, not per call)

    def __reduce__(self):
        return (TapeSpec, (self.fkey, self.name, self.paths))

    def __repr__(self):
        return f"TapeSpec({self.fkey!r})"


def trace_forward(spec, func, kwargs, *args):
    """Run ``func`` once under tracing: its value and the tape of how it was made."""
    return trace_call(spec.label, func, spec.paths, args, kwargs)


def tape_value(tape):
    """The forward value held by a tape (the rewrite's stand-in for the forward task)."""
    return tape.value


def tape_vjp(tape, g):
    """Cotangents of the traced dependencies: one value, or a tuple when several."""
    cots = backprop(tape, g)
    return cots[0] if len(cots) == 1 else tuple(cots)


def retrace_vjp(spec, func, kwargs, g, *args):
    """``tape_vjp`` as a function of the forward arguments: what higher order differentiates."""
    return tape_vjp(trace_forward(spec, func, kwargs, *args), g)


def sum_cotangents(*gs):
    """Sum contributions left to right: the order is fixed by the graph, not by timing."""
    return functools.reduce(add_cotangents, gs)


def ones_for(y, key):
    """The seed cotangent of a scalar ``y``."""
    if (type(y) is np.ndarray or isinstance(y, np.generic)) and y.ndim == 0 \
            and y.dtype.kind == "f":  # the common case, without NumPy's dispatch
        return np.ones((), y.dtype)
    if type(y) is float:
        return np.ones(())
    if np.ndim(y) != 0:
        raise ValueError(
            f"tg.grad needs a scalar y, but the value of {key!r} has shape {np.shape(y)}; "
            "use tg.vjp(y, wrt, cotangent) for a non-scalar output")
    if np.iscomplexobj(y):
        raise ValueError(f"tg.grad needs a real y, but the value of {key!r} is complex; "
                         "taskgrad differentiates real values only")
    if type(y) is np.ndarray or isinstance(y, np.generic):
        return np.ones((), _real_dtype(y.dtype))  # what ones_like gives, without its dispatch
    return np.ones_like(y, dtype=_real_dtype(np.result_type(y)))


def _real_dtype(dtype):
    """The dtype of a cotangent for a value of ``dtype``: its own if float, else float64
    (an integer y's derivative is real: integer cotangents would round the backward pass)."""
    return dtype if dtype.kind == "f" else np.dtype(np.float64)


def checked_cotangent(y, cotangent, key, where=""):
    """The cotangent given to ``tg.vjp``, checked against the value of ``y`` and cast to
    its float dtype: a cotangent of another shape would broadcast through the rules into
    gradients of wrong shapes.  A tuple, list or dict ``y`` takes one of the same structure
    (None for zero items).  Recurses on the nesting of ``y``'s containers only."""
    if cotangent is None and where:
        return None
    if isinstance(y, dict) or isinstance(cotangent, dict):
        if not (isinstance(y, dict) and isinstance(cotangent, dict)
                and cotangent.keys() <= y.keys()):
            raise ValueError(f"tg.vjp: the value of {key!r}{where} is a "
                             f"{type(y).__name__}; the cotangent must be a dict of its keys")
        return {k: checked_cotangent(y[k], c, key, f"{where}[{k!r}]") for k, c in cotangent.items()}
    if isinstance(y, (list, tuple)) and isinstance(cotangent, (list, tuple)) and not (
            _all_numbers(y) and _all_numbers(cotangent)):  # several values: item by item
        if len(cotangent) != len(y):
            raise ValueError(f"tg.vjp: the value of {key!r}{where} has {len(y)} items, but "
                             f"the cotangent has {len(cotangent)}")
        items = [checked_cotangent(yi, ci, key, f"{where}[{i}]")
                 for i, (yi, ci) in enumerate(zip(y, cotangent))]
        return items if type(cotangent) is list else tuple(items)
    if isinstance(cotangent, (list, tuple)):  # the rules compute with arrays
        cotangent = np.asarray(cotangent)
    y_shape, c_shape = shape_of(y), shape_of(cotangent)
    if c_shape != y_shape:
        raise ValueError(f"tg.vjp: the cotangent has shape {c_shape}, but the value of "
                         f"{key!r}{where} has shape {y_shape}; the cotangent must have the "
                         "shape of y")
    if np.iscomplexobj(cotangent) and not np.iscomplexobj(y):
        raise ValueError(f"tg.vjp: the cotangent is complex, but the value of {key!r}{where} "
                         "is real; take the vjp of the real and the imaginary part separately")
    dtype = _real_dtype(np.result_type(y))
    return cotangent if np.result_type(cotangent) == dtype else astype(cotangent, dtype)


def _all_numbers(items):
    return all(isinstance(i, (int, float, np.number)) for i in items)


def zeros_for(x):
    """The gradient of a ``wrt`` that ``y`` does not depend on."""
    return zeros_like_value(x)


defvjp_argnum(sum_cotangents, lambda pos: lambda ans, *gs: lambda g: g)
defvjp(checked_cotangent, None, lambda ans, y, cotangent, key, where="": lambda g: g)
nondifferentiable(ones_for, zeros_for, describe)
