"""``taskgrad.numpy`` (``import taskgrad.numpy as tnp``): lazy, differentiable NumPy.

Each call builds one task whose function *is* the NumPy function, so the VJP
rule that ``grad`` uses for ``tnp.exp`` is the one the tracer uses for
``np.exp`` inside a plain-NumPy ``@tg.delayed`` function.  Arguments may be
Delayeds, arrays, Python scalars, or lists of them (``concatenate``, ``stack``).
"""

from __future__ import annotations

import numpy as _np

from .delayed import _make_delayed

newaxis = None
pi = _np.pi
e = _np.e


def _lazy(func, name):
    def call(*args, **kwargs):
        return _make_delayed(func, args, kwargs, prefix=name)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"Lazy ``numpy.{name}``: one differentiable task (nothing runs yet)."
    return call


_NAMES = [
    "add", "subtract", "multiply", "divide", "true_divide", "negative", "power", "square",
    "sqrt", "exp", "log", "log1p", "expm1", "sin", "cos", "tan", "tanh", "arctan", "abs",
    "absolute", "sign", "maximum", "minimum", "where", "clip", "dot", "matmul", "outer",
    "einsum", "sum", "mean", "max", "min", "amax", "amin", "prod", "reshape", "ravel",
    "transpose", "swapaxes", "expand_dims", "squeeze", "broadcast_to", "concatenate", "stack",
    "zeros_like", "ones_like",
    # differentiated through rules added beyond the list above, or through compositions
    "sinh", "cosh", "arcsin", "arccos", "arcsinh", "arccosh", "arctanh", "arctan2", "log2",
    "log10", "exp2", "reciprocal", "cbrt", "hypot", "logaddexp", "logaddexp2", "fmax", "fmin",
    "cumsum", "flip", "roll", "pad", "take_along_axis", "diagonal", "var", "std", "tensordot",
    "average", "nansum", "nanmean", "take", "diff", "moveaxis", "sort", "diag", "trace", "triu",
    "tril", "repeat", "tile", "hstack", "vstack",
]

for _name in _NAMES:
    globals()[_name] = _lazy(getattr(_np, _name), _name)

__all__ = ["newaxis", "pi", "e", *_NAMES]
