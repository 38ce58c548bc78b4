"""NumPy functions differentiated through the operations they are made of.

Where a function is a short composition of operations that already have VJP
rules (``np.var`` is a mean of squared deviations, ``np.sort`` is indexing by
``np.argsort``, ``np.split`` is slicing), the tracer runs the composition on
traced values instead of the function itself, so gradients (of any order)
follow without a rule of their own.  Plain values never come here: NumPy
runs its own implementation.  Options that change what is computed and that
a composition does not cover (``where=``, ``out=``, modes) raise a clear error.
"""

from __future__ import annotations

import numpy as np

from .numpy_vjps import _LETTERS, _reduction_count, _undiagonal
from .rules import MissingRuleError, defcomposite
from .trace import Box, astype


def _unsupported(name, option):
    raise MissingRuleError(f"numpy.{name} with {option}")


def _given(out, kwargs):
    """The options a reduction was given beyond what its composition covers."""
    return " and ".join((["out="] if out is not None else []) + [f"{k}=" for k in kwargs])


def var(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **kwargs):
    if out is not None or kwargs:
        _unsupported("var", _given(out, kwargs))
    if dtype is not None:
        a = astype(a, dtype)
    deviation = a - np.mean(a, axis=axis, keepdims=True)
    return np.sum(deviation * deviation, axis=axis, keepdims=keepdims) / (
        _reduction_count(a, axis) - ddof)


def std(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **kwargs):
    return np.sqrt(var(a, axis, dtype, out, ddof, keepdims, **kwargs))


def norm(x, ord=None, axis=None, keepdims=False):
    """Vector norms (2, 1, inf, -inf) and the Frobenius norm of matrices."""
    if axis is None:
        vector = np.ndim(x) == 1
    else:  # an int, or a tuple of one axis, is a vector norm; two axes a matrix norm
        vector = np.ndim(axis) == 0 or len(axis) == 1
    if ord is None or (ord == "fro" and not vector) or (ord == 2 and vector):
        return np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims))
    if vector and ord == 1:
        return np.sum(np.abs(x), axis=axis, keepdims=keepdims)
    if vector and ord == np.inf:
        return np.max(np.abs(x), axis=axis, keepdims=keepdims)
    if vector and ord == -np.inf:
        return np.min(np.abs(x), axis=axis, keepdims=keepdims)
    _unsupported("linalg.norm", f"ord={ord!r}" + ("" if vector else " for matrices"))


def tensordot(a, b, axes=2):
    """As einsum: ``a``'s free axes, then ``b``'s, summing over the paired axes."""
    nd_a, nd_b = np.ndim(a), np.ndim(b)
    if isinstance(axes, int):
        axes_a, axes_b = list(range(nd_a - axes, nd_a)), list(range(axes))
    else:
        axes_a, axes_b = ([axes[0]] if isinstance(axes[0], int) else list(axes[0]),
                          [axes[1]] if isinstance(axes[1], int) else list(axes[1]))
    axes_a = [i % nd_a for i in axes_a]
    axes_b = [i % nd_b for i in axes_b]
    letters_a = list(_LETTERS[:nd_a])
    letters_b = list(_LETTERS[nd_a:nd_a + nd_b])
    for i, j in zip(axes_a, axes_b):
        letters_b[j] = letters_a[i]
    out = [c for i, c in enumerate(letters_a) if i not in axes_a] + \
        [c for j, c in enumerate(letters_b) if j not in axes_b]
    return np.einsum(f"{''.join(letters_a)},{''.join(letters_b)}->{''.join(out)}", a, b)


def average(a, axis=None, weights=None, returned=False, keepdims=False):
    if returned:
        _unsupported("average", "returned=True")
    if weights is None:
        return np.mean(a, axis=axis, keepdims=keepdims)
    if np.ndim(weights) == 1 and np.ndim(a) > 1 and isinstance(axis, int):
        shape = [1] * np.ndim(a)
        shape[axis] = -1
        weights = np.reshape(weights, shape)
    total = np.sum(np.broadcast_to(weights, np.shape(a)), axis=axis, keepdims=keepdims)
    return np.sum(a * weights, axis=axis, keepdims=keepdims) / total


def nansum(a, axis=None, dtype=None, out=None, keepdims=False, **kwargs):
    if out is not None or kwargs:
        _unsupported("nansum", _given(out, kwargs))
    if dtype is not None:
        a = astype(a, dtype)
    return np.sum(np.where(np.isnan(a), 0.0, a), axis=axis, keepdims=keepdims)


def nanmean(a, axis=None, dtype=None, out=None, keepdims=False, **kwargs):
    count = np.sum(~np.isnan(a), axis=axis, keepdims=keepdims)
    return nansum(a, axis, dtype, out, keepdims, **kwargs) / count


def real(x):
    if np.iscomplexobj(x):
        _unsupported("real", "complex values")
    return x


def copy(a, order="K", subok=False):
    """A new traced value for the same array: the array itself is never written to, but
    augmented assignment rebinds a traced value in place, which must not reach ``a``."""
    if type(a) is Box:
        return Box(a._value, a._trace, a._index)
    return np.copy(a, order=order, subok=subok)


def take(a, indices, axis=None, out=None, mode="raise"):
    if out is not None or mode != "raise":
        _unsupported("take", "out= or mode=")
    if axis is None:
        return np.reshape(a, -1)[indices]
    return a[(slice(None),) * (axis % np.ndim(a)) + (indices,)]


def diff(a, n=1, axis=-1, prepend=None, append=None):
    if prepend is not None or append is not None:
        _unsupported("diff", "prepend= or append=")
    axis %= np.ndim(a)
    before = (slice(None),) * axis
    for _ in range(n):
        a = a[before + (slice(1, None),)] - a[before + (slice(None, -1),)]
    return a


def moveaxis(a, source, destination):
    ndim = np.ndim(a)
    source = [s % ndim for s in np.atleast_1d(source)]
    destination = [d % ndim for d in np.atleast_1d(destination)]
    order = [i for i in range(ndim) if i not in source]
    for d, s in sorted(zip(destination, source)):
        order.insert(d, s)
    return np.transpose(a, order)


def _at_least(ndim, where):
    def make(*arys):
        out = []
        for a in arys:
            shape = np.shape(a)
            while len(shape) < ndim:
                shape = where(shape)
            out.append(np.reshape(a, shape))
        return out[0] if len(out) == 1 else out
    return make


atleast_1d = _at_least(1, lambda s: (1,))
atleast_2d = _at_least(2, lambda s: (1,) + s)
atleast_3d = _at_least(3, lambda s: (1, s[0], 1) if len(s) == 1 else s + (1,) if len(s) == 2
                       else (1, 1, 1))


def hstack(tup, **kwargs):  # (dtype=, casting=: concatenate's own)
    arrays = [atleast_1d(a) for a in tup]
    return np.concatenate(arrays, axis=0 if np.ndim(arrays[0]) == 1 else 1, **kwargs)


def vstack(tup, **kwargs):
    return np.concatenate([atleast_2d(a) for a in tup], axis=0, **kwargs)


def array_split(ary, indices_or_sections, axis=0):
    n = np.shape(ary)[axis]
    if np.ndim(indices_or_sections) == 0:
        sections = int(indices_or_sections)
        size, extra = divmod(n, sections)
        bounds = np.cumsum([0] + [size + 1] * extra + [size] * (sections - extra))
    else:
        bounds = [0, *indices_or_sections, n]
    before = (slice(None),) * (axis % np.ndim(ary))
    return [ary[before + (slice(start, stop),)] for start, stop in zip(bounds[:-1], bounds[1:])]


def split(ary, indices_or_sections, axis=0):
    if np.ndim(indices_or_sections) == 0 and np.shape(ary)[axis] % indices_or_sections:
        raise ValueError("array split does not result in an equal division")
    return array_split(ary, indices_or_sections, axis)


def hsplit(ary, indices_or_sections):
    return split(ary, indices_or_sections, axis=0 if np.ndim(ary) == 1 else 1)


def vsplit(ary, indices_or_sections):
    return split(ary, indices_or_sections, axis=0)


def dsplit(ary, indices_or_sections):
    return split(ary, indices_or_sections, axis=2)


def sort(a, axis=-1, kind=None, order=None, **kwargs):
    if order is not None:
        _unsupported("sort", "order=")
    if axis is None:
        a, axis = np.reshape(a, -1), -1
    return np.take_along_axis(a, np.argsort(a, axis=axis, kind=kind), axis)


def diag(v, k=0):
    if np.ndim(v) == 2:
        return np.diagonal(v, k)
    n = np.shape(v)[0] + abs(k)
    return _undiagonal(v, (n, n), k)  # a vector placed on a diagonal


def trace(a, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    if out is not None:
        _unsupported("trace", "out=")
    d = np.diagonal(a, offset, axis1, axis2)
    return np.sum(d if dtype is None else astype(d, dtype), axis=-1)


def _triangle(keep):
    def part(m, k=0):
        if np.ndim(m) == 1:  # NumPy makes a 1-d array the rows of a square matrix
            m = np.broadcast_to(m, (np.shape(m)[0],) * 2)
        rows, cols = np.shape(m)[-2:]
        return np.where(keep(np.ones((rows, cols), dtype=bool), k), m, 0.0)  # inf * 0 is nan
    return part


def repeat(a, repeats, axis=None):
    if axis is None:
        a, axis = np.reshape(a, -1), 0
    axis %= np.ndim(a)
    index = np.repeat(np.arange(np.shape(a)[axis]), repeats)
    return a[(slice(None),) * axis + (index,)]


def tile(A, reps):
    reps = (reps,) if np.ndim(reps) == 0 else tuple(reps)
    shape = np.shape(A)
    if len(reps) > len(shape):
        shape = (1,) * (len(reps) - len(shape)) + shape
        A = np.reshape(A, shape)
    reps = (1,) * (len(shape) - len(reps)) + reps
    for axis, (n, r) in enumerate(zip(shape, reps)):
        if r != 1:
            A = A[(slice(None),) * axis + (np.tile(np.arange(n), r),)]
    return A


for _func, _impl in [
    (np.var, var), (np.std, std), (np.linalg.norm, norm), (np.tensordot, tensordot),
    (np.average, average), (np.nansum, nansum), (np.nanmean, nanmean), (np.real, real),
    (np.copy, copy), (np.take, take), (np.diff, diff), (np.moveaxis, moveaxis),
    (np.atleast_1d, atleast_1d), (np.atleast_2d, atleast_2d), (np.atleast_3d, atleast_3d),
    (np.hstack, hstack), (np.vstack, vstack), (np.split, split), (np.array_split, array_split),
    (np.hsplit, hsplit), (np.vsplit, vsplit), (np.dsplit, dsplit), (np.sort, sort), (np.diag, diag),
    (np.trace, trace), (np.triu, _triangle(np.triu)), (np.tril, _triangle(np.tril)),
    (np.repeat, repeat), (np.tile, tile),
]:
    defcomposite(_func, _impl)
