"""``check_grads``: compare ``grad`` with central finite differences.

Why element by element: a failure then names the argument, the index and the
size of the disagreement, which is what one needs to find a wrong rule.  The
finite differences run in float64 whatever the arguments' dtype, all in one
``compute`` (one graph holding every perturbed evaluation).  The tolerance
of each entry also allows for the rounding error of its finite difference
(``|f| * machine epsilon / eps``, times 10), which dominates when ``f`` is large.
"""

from __future__ import annotations

import numpy as np

from ..base import compute
from ..delayed import Delayed, delayed
from .grad import grad

__all__ = ["check_grads"]

_TOLERANCES = {np.dtype(np.float64): (1e-5, 1e-7), np.dtype(np.float32): (2e-3, 2e-4)}


def check_grads(fn, *args, eps=1e-6, rtol=None, atol=None, scheduler="sync"):
    """Check ``tg.grad(fn(*leaves), leaves)`` against central finite differences.

    ``fn`` takes one Delayed per argument and returns a scalar Delayed.  Float
    arguments are checked (lists and tuples of numbers are passed as arrays);
    other real ones are passed as they are.  Returns None, or raises
    AssertionError naming the argument, the index and the difference.
    """
    args = [_checkable(i, a) for i, a in enumerate(args)]
    leaves = [delayed(a) for a in args]
    y = fn(*leaves)
    if not isinstance(y, Delayed):
        raise TypeError(f"check_grads: fn must return a Delayed, got {type(y).__name__}")
    checked = [i for i, a in enumerate(args) if np.result_type(a).kind == "f"]
    grads = compute(*grad(y, [leaves[i] for i in checked]), scheduler=scheduler)

    base = [np.asarray(a, dtype=np.float64) if i in checked else a for i, a in enumerate(args)]
    evals = []
    for i in checked:
        for index in np.ndindex(np.shape(args[i])):
            for step in (eps, -eps):
                moved = base[i].copy()
                moved[index] += step
                inputs = [delayed(moved if j == i else b) for j, b in enumerate(base)]
                evals.append(fn(*inputs))
    values = iter(compute(*evals, scheduler=scheduler))
    for i, g in zip(checked, grads):
        shape = np.shape(args[i])
        fd = np.empty(shape)
        noise = np.empty(shape)
        for index in np.ndindex(shape):
            up, down = next(values), next(values)
            fd[index] = (float(up) - float(down)) / (2 * eps)
            noise[index] = 10 * max(abs(float(up)), abs(float(down))) * _EPSILON / eps
        _compare(i, args[i], g, fd, noise, rtol, atol)


_EPSILON = float(np.finfo(np.float64).eps)


def _checkable(i, arg):
    """``arg`` as check_grads perturbs it: a list or tuple of numbers as an array; a complex
    argument is refused (taskgrad differentiates real values only)."""
    if isinstance(arg, (list, tuple)):
        kind = type(arg).__name__
        arg = np.asarray(arg)
        if arg.dtype.kind not in "biufc":
            raise TypeError(f"check_grads: argument {i} is a {kind} that is not an array of "
                            "numbers; pass arrays or numbers")
    if np.iscomplexobj(arg):
        raise TypeError(f"check_grads: argument {i} is complex; taskgrad differentiates real "
                        "values only (pass the real and imaginary parts as two real arrays)")
    return arg


def _compare(i, arg, g, fd, noise, rtol, atol):
    dtype = np.result_type(arg)
    if np.shape(g) != np.shape(arg):
        raise AssertionError(f"check_grads: gradient of argument {i} has shape {np.shape(g)}, "
                             f"but the argument has shape {np.shape(arg)}")
    if np.result_type(g) != dtype:
        raise AssertionError(f"check_grads: gradient of argument {i} has dtype "
                             f"{np.result_type(g)}, but the argument has dtype {dtype}")
    default_rtol, default_atol = _TOLERANCES.get(dtype, _TOLERANCES[np.dtype(np.float32)])
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    ad = np.asarray(g, dtype=np.float64)
    bad = ~np.isclose(ad, fd, rtol=rtol, atol=atol + noise)
    if bad.any():
        diff = np.where(bad, np.abs(ad - fd), -1.0)
        worst = tuple(int(k) for k in np.unravel_index(np.argmax(diff), np.shape(diff)))
        raise AssertionError(
            f"check_grads: gradient of argument {i} (shape {np.shape(arg)}, {dtype}) disagrees "
            f"with central finite differences at {int(bad.sum())} of {bad.size} entries; "
            f"worst at index {worst}: autodiff {float(ad[worst])!r}, finite difference "
            f"{float(fd[worst])!r}, difference {abs(ad[worst] - fd[worst]):.3g} "
            f"(rtol={rtol}, atol={atol} + {noise[worst]:.2g} for rounding in the finite "
            "difference)")
