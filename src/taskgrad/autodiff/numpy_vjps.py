"""VJP rules for NumPy primitives and Python operators, one ``defvjp`` line each.

Modelled on HIPS autograd's ``numpy_vjps.py``.  Every rule is written with
NumPy functions that themselves have rules, so the tracer can record a rule
while it runs: that makes backward tasks differentiable (higher order).
``unbroadcast`` undoes NumPy broadcasting, so a cotangent always has the shape
(and the floating dtype) of the argument it belongs to.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from .rules import (MissingRuleError, copy_rules, defvjp, defvjp_argnum, nondifferentiable,
                    uses_only_shapes)
from .shape_dtype import shape_of as _shape
from .trace import _base, astype, primitive, zeros_like_value


# ---------------------------------------------------------------- helpers

def _dtype_of(x):
    return x.dtype if hasattr(x, "dtype") else np.result_type(x)


_ndarray = np.ndarray


def _shape_dtype(x):
    """``(shape, dtype)`` of an array, Box, Python scalar or list, without NumPy dispatch
    for arrays."""
    try:
        return x.shape, x.dtype
    except AttributeError:
        x = np.asarray(x)
        return x.shape, x.dtype


_add_reduce = np.add.reduce


def _sum(g, axis, keepdims=False):
    """``np.sum`` of an array as the ndarray method computes it (``add.reduce``), called
    without the two Python layers in between (measured: 1.6 -> 1.3 us)."""
    if type(g) is _ndarray:
        return _add_reduce(g, axis=axis, keepdims=keepdims)
    return np.sum(g, axis=axis, keepdims=keepdims)


_BLAS_FLOATS = frozenset([np.dtype(np.float32), np.dtype(np.float64)])
_BLAS_SUM_MAX = 4096  # terms per sum; NumPy's pairwise sum for longer ones (more accurate)
_BLAS_SUM_MIN = 1024  # elements; below, NumPy's reduction costs less than the product's calls
_ones = {}  # (length, dtype) -> a vector of ones, read-only


def _ones_of(n, dtype):
    ones = _ones.get((n, dtype))
    if ones is None:
        if len(_ones) > 64:
            _ones.clear()
        ones = _ones[n, dtype] = np.ones(n, dtype)
        ones.flags.writeable = False
    return ones


def _sum_axes(g, axes, keepdims):
    """``g`` summed over ``axes`` (a tuple), as ``unbroadcast`` needs it.

    Where the axes lead or trail a C-contiguous float array, the sum is a
    matrix-vector product with ones: from about a thousand elements, BLAS does it
    2-4 times faster than NumPy's reduction here (a bias's gradient over a batch of
    256 rows of 256: 11.7 -> 5.1 us; 10 classes per row: 7.5 -> 2.5 us).  Each sum
    has the same order whatever the scheduler, so gradients stay bit-identical.  A
    traced cotangent (a gradient being differentiated again) is summed the same way,
    through ``matmul``'s rules, so that its value is the one computed without tracing.
    """
    value = _base(g)
    if type(value) is _ndarray and value.size >= _BLAS_SUM_MIN and value.dtype in _BLAS_FLOATS \
            and value.flags.c_contiguous:
        shape = value.shape
        n = len(axes)
        if n < len(shape):
            if axes == tuple(range(n)):  # leading axes: ones @ (lead, rest)
                lead = value.size // math.prod(shape[n:])
                if lead <= _BLAS_SUM_MAX:
                    out = _ones_of(lead, value.dtype) @ _reshape(g, (lead, -1))
                    return _reshape(out, ((1,) * n if keepdims else ()) + shape[n:])
            elif axes == tuple(range(len(shape) - n, len(shape))):  # trailing: (rest, trail) @ ones
                trail = value.size // math.prod(shape[:-n])
                if trail <= _BLAS_SUM_MAX:
                    out = _reshape(g, (-1, trail)) @ _ones_of(trail, value.dtype)
                    return _reshape(out, shape[:-n] + ((1,) * n if keepdims else ()))
    return _sum(g, axes, keepdims)


def _reshape(g, shape):
    if type(g) is _ndarray:
        return g.reshape(shape)
    return np.reshape(g, shape)


def _broadcast(g, shape):
    """``g`` broadcast to ``shape``: a fresh writable array, or a traced broadcast."""
    if type(g) is _ndarray or isinstance(g, np.generic):
        out = np.empty(shape, g.dtype)
        out[...] = g
        return out
    return np.broadcast_to(g, shape)


def unbroadcast(x, g):
    """Sum ``g`` over the axes broadcasting added to ``x``; cast to ``x``'s float dtype.

    Backward tasks call this once per argument, so the common case (nothing to
    undo) costs a few attribute reads.
    """
    if type(g) is _ndarray:
        gdtype = g.dtype
        try:
            if g.shape == x.shape and (gdtype is x.dtype or gdtype == x.dtype) \
                    and gdtype.kind != "c":
                return g
        except AttributeError:  # x is a Python number
            pass
    shape, dtype = _shape_dtype(x)
    gshape, gdtype = _shape_dtype(g)
    if dtype.kind == "c" or gdtype.kind == "c":
        raise MissingRuleError(
            "cannot differentiate complex values: taskgrad differentiates real values only "
            "(its rules do not conjugate); differentiate the real and imaginary parts as two "
            "real arrays")
    if gshape != shape:
        extra = len(gshape) - len(shape)
        if extra > 0:
            g = _sum_axes(g, tuple(range(extra)), False)
            gshape = gshape[extra:]
        if 1 in shape:  # (a bias of shape (n,) has none: no generator to run)
            axes = tuple(i for i, n in enumerate(shape) if n == 1 and gshape[i] != 1)
            if axes:
                g = _sum_axes(g, axes, True)
        gdtype = _shape_dtype(g)[1]
    if dtype.kind in "fc" and gdtype != dtype:
        g = astype(g, dtype)
    return g


def _cast_back(g, x):
    """The cotangent of ``x.astype(...)``: in ``x``'s dtype if it is a float, else as it is
    (an integer input's gradient is real)."""
    dtype = _dtype_of(x)
    return astype(g, dtype) if dtype.kind in "fc" else g


def _reshape_back(x, order):
    """The rule of a reshape: ``g`` back to the shape of ``x``, read in the same ``order``."""
    if order in ("C", None):
        return lambda g: _reshape(g, _shape(x))
    if order == "F":
        return lambda g: np.reshape(g, _shape(x), order="F")
    raise MissingRuleError(f"numpy.reshape with order={order!r} (it depends on memory layout)")


def _replace_zero(x, value):
    return np.where(x, x, value)


def _chosen(g, x, z, y):
    """``g`` where ``x`` gave the result ``z`` of maximum/minimum, half of it at ties.

    Multiplying by the boolean mask keeps ``g``'s dtype; ties are rare, so the
    halving pass runs only when there is one.
    """
    chosen = x == z
    out = g * chosen
    ties = x == y  # where x equals y it also equals max(x, y): every tie is chosen
    if np.count_nonzero(ties):  # a plain bool array even when tracing
        out = out * np.where(ties, 0.5, 1.0).astype(_dtype_of(out))
    return out


def _power_exponent(y):
    if isinstance(y, (int, float)):
        return y - 1 if y != 0 else 1
    return np.where(y, y - 1, 1)


def _normalize_axis(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    if type(axis) is int:  # the common case, without the generator
        return (axis % ndim,)
    if isinstance(axis, (int, np.integer)):
        axis = (axis,)
    return tuple(int(a) % ndim for a in axis)


def _keepdims(g, x, axis, keepdims):
    """``g`` of a reduction over ``axis``, with the reduced axes back as size 1."""
    if keepdims:
        return g
    shape = _shape(x)
    axes = _normalize_axis(axis, len(shape))
    if not axes:
        return g
    return _reshape(g, tuple(1 if i in axes else n for i, n in enumerate(shape)))


def _expand_reduced(g, x, axis, keepdims):
    """``g`` of a reduction over ``axis``, broadcast back to the shape of ``x``."""
    if axis is not None or keepdims:  # a scalar (a reduction over everything) broadcasts as is
        g = _keepdims(g, x, axis, keepdims)
    return _broadcast(g, _shape(x))


def _reduction_count(x, axis):
    shape = _shape(x)
    count = 1
    for a in _normalize_axis(axis, len(shape)):
        count *= shape[a]
    return count


def _one_chosen_each(chosen, kept, where, initial):
    """Whether each reduced slice chose exactly one entry (no tie, no NaN), found with
    cheap passes: a max over the short last axis of a small array is slow to count per
    slice (its sum over that axis cost 7 of the rule's 20 us)."""
    if where is not None or initial is not None or type(kept) is not _ndarray:
        return False
    # as many chosen as slices, and none NaN (a NaN slice chooses nothing)
    return np.count_nonzero(chosen) == kept.size and not np.isnan(kept).any()


def _chooser(ans, x, axis=None, out=None, keepdims=False, initial=None, where=None):
    """Rule of max/min: the gradient goes to the chosen entries, split among ties."""
    def vjp(g):
        kept = _keepdims(ans, x, axis, keepdims)
        chosen = x == kept
        if _one_chosen_each(chosen, kept, where, initial):
            return unbroadcast(x, _keepdims(g, x, axis, keepdims) * chosen)
        if where is not None:  # masked-out entries are never chosen
            chosen = chosen & where
        count = _sum(chosen, axis, keepdims=True)
        if count.min() == 0:  # (also where ``initial`` won) a NaN result: the NaNs chose it
            chosen = chosen | (np.isnan(x) & np.isnan(kept))
            count = _sum(chosen, axis, keepdims=True)
        share = _keepdims(g, x, axis, keepdims) * chosen
        if count.max() > 1:  # (a slice where ``initial`` won chose no entry: count 0)
            share = share / astype(np.maximum(count, 1), _dtype_of(share))
        return unbroadcast(x, share)
    return vjp


# ---------------------------------------------------------------- untake (for x[i])

@primitive
def untake(g, index, x):
    """The cotangent of ``x[index]``: zeros of ``x``'s shape with ``g`` added at ``index``."""
    out = np.zeros(_shape(x), dtype=np.result_type(g))
    np.add.at(out, index, g)
    return out


defvjp(untake, lambda ans, g, index, x: lambda h: h[index], None, None)  # x: its shape


def _getitem_rule(ans, x, index):
    items = _base(x)  # a traced tuple (differentiating this rule) is still a tuple
    if isinstance(items, (tuple, list)):
        if not isinstance(index, int):
            raise TypeError(f"cannot differentiate indexing a {type(items).__name__} with "
                            f"{index!r}")
        n = len(items)
        kind = list if type(items) is list else tuple  # (a namedtuple's: a tuple)
        return lambda g: kind(g if j == index % n else zeros_like_value(item)
                              for j, item in enumerate(items))
    if isinstance(items, dict):  # a task's dict value: the cotangent is a dict of its items'
        return lambda g: {k: g if k == index else zeros_like_value(v) for k, v in items.items()}
    return lambda g: untake(g, index, x)


# ---------------------------------------------------------------- matmul / dot / einsum

def _matmul_rules():
    def promote(a, b, g):
        """View 1-d operands as matrices, as matmul does, and ``g`` to match."""
        a2 = np.expand_dims(a, 0) if np.ndim(a) == 1 else a
        b2 = np.expand_dims(b, -1) if np.ndim(b) == 1 else b
        if np.ndim(a) == 1:
            g = np.expand_dims(g, -2 if np.ndim(b) != 1 else -1)
        if np.ndim(b) == 1:
            g = np.expand_dims(g, -1)
        return a2, b2, g

    def da(ans, a, b):
        def vjp(g):
            if type(a) is _ndarray and type(b) is _ndarray and a.ndim == 2 and b.ndim == 2:
                return unbroadcast(a, g @ b.T)
            if np.ndim(a) == 0 or np.ndim(b) == 0:
                return unbroadcast(a, g * b)
            a2, b2, g2 = promote(a, b, g)
            d = g2 @ np.swapaxes(b2, -1, -2)
            if np.ndim(a) == 1:
                d = np.reshape(d, np.shape(d)[:-2] + np.shape(d)[-1:])
            return unbroadcast(a, d)
        return vjp

    def db(ans, a, b):
        def vjp(g):
            if type(a) is _ndarray and type(b) is _ndarray and a.ndim == 2 and b.ndim == 2:
                return unbroadcast(b, a.T @ g)
            if np.ndim(a) == 0 or np.ndim(b) == 0:
                return unbroadcast(b, g * a)
            a2, b2, g2 = promote(a, b, g)
            d = np.swapaxes(a2, -1, -2) @ g2
            if np.ndim(b) == 1:
                d = np.reshape(d, np.shape(d)[:-1])
            return unbroadcast(b, d)
        return vjp

    return da, db


_matmul_da, _matmul_db = _matmul_rules()


def _dot_subscripts(nd_a, nd_b):
    """``np.dot`` of arrays with these dimensions, as einsum subscripts (beyond 2-d)."""
    a = _LETTERS[:nd_a - 1]
    b = _LETTERS[nd_a - 1:nd_a + nd_b - 3]
    if nd_b == 1:
        return f"{a}z,z->{a}"
    return f"{a}z,{b}zy->{a}{b}y"


def _dot_rule(argnum, rule):
    """``np.dot``: the matmul rule up to 2-d, the einsum rule of the same product beyond."""
    def checked(ans, a, b, out=None):
        nd_a, nd_b = np.ndim(a), np.ndim(b)
        if nd_a <= 2 and nd_b <= 2 or nd_a == 0 or nd_b == 0:
            return rule(ans, a, b)
        return _einsum_rule(argnum + 1)(ans, _dot_subscripts(nd_a, nd_b), a, b)
    return checked


_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _explicit_einsum(subscripts, operands):
    """``(inputs, output)`` of an einsum, with '...' spelled out in unused letters
    (right-aligned, as broadcasting aligns) and an implicit output made explicit."""
    spec = subscripts.replace(" ", "")
    lhs, arrow, output = spec.partition("->")
    inputs = lhs.split(",")
    free = [c for c in _LETTERS if c not in spec]
    widths = [np.ndim(op) - (len(s) - 3) for s, op in zip(inputs, operands) if "..." in s]
    ellipsis = "".join(free[:max(widths, default=0)])
    if not arrow:
        letters = lhs.replace("...", "").replace(",", "")
        output = "..." + "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    explicit = []
    for s, op in zip(inputs, operands):
        if "..." in s:
            width = np.ndim(op) - (len(s) - 3)
            s = s.replace("...", ellipsis[len(ellipsis) - width:])
        explicit.append(s)
    return explicit, output.replace("...", ellipsis)


def _einsum_rule(argnum):
    """Rule for operand ``argnum`` of ``einsum(subscripts, *operands)``.

    The cotangent of an operand is the einsum of the output's cotangent with
    the other operands.  A letter repeated in the operand (a diagonal, a
    trace) is renamed and tied to its first use by an identity matrix, so the
    cotangent lands on the diagonal.
    """
    def rule(ans, subscripts, *operands, **kwargs):
        _check_subscripts(subscripts)
        inputs, output = _explicit_einsum(subscripts, operands)
        k = argnum - 1
        x = operands[k]
        shape = _shape(x)
        taken = set("".join(inputs) + output)
        free = (c for c in _LETTERS if c not in taken)
        mine, ties, tie_ops = "", [], []
        for c, n in zip(inputs[k], shape):
            if c in mine:  # a repeat: a fresh letter, equal to c through eye
                fresh = next(free)
                ties.append(c + fresh)
                tie_ops.append(np.eye(n))
                c = fresh
            mine += c
        others = [s for i, s in enumerate(inputs) if i != k] + ties
        other_ops = [op for i, op in enumerate(operands) if i != k] + tie_ops
        kept = "".join(c for c in mine if c in set(output).union(*others))

        def vjp(g):
            d = np.einsum(",".join([output, *others]) + "->" + kept, g, *other_ops)
            sizes = dict(zip(kept, _shape(d)))
            target = tuple(sizes.get(c, 1) for c in mine)
            if target != shape:  # letters summed away, or broadcast against other operands
                d = np.broadcast_to(np.reshape(d, target), np.broadcast_shapes(target, shape))
            return unbroadcast(x, d)
        return vjp
    return rule


def _check_subscripts(subscripts):
    if not isinstance(subscripts, str):
        raise MissingRuleError("numpy.einsum in its interleaved form (operand, sublist, ...); "
                               "give the subscripts as a string")


def _interleaved_einsum_rule(ans, *args, **kwargs):
    """Position 0 is the subscripts string, unless einsum was called in interleaved form."""
    _check_subscripts(args[0])


def _einsum_vjp_maker(pos):
    return _interleaved_einsum_rule if pos == 0 else _einsum_rule(pos)


# ---------------------------------------------------------------- shape ops

def _transpose_rule(ans, x, axes=None):
    if axes is None:
        return lambda g: np.transpose(g)
    return lambda g: np.transpose(g, np.argsort([a % len(axes) for a in axes]))


def _concatenate_rule(ans, arrays, axis=0, **kwargs):
    def vjp(g):
        if axis is None:  # the arrays were flattened, then joined
            sizes = np.cumsum([int(np.prod(np.shape(a))) for a in arrays])[:-1]
            return _as_given([unbroadcast(a, _reshape(part, np.shape(a)))
                              for a, part in zip(arrays, np.split(g, sizes))], arrays)
        ax = axis % np.ndim(g)
        out = []
        start = 0
        for a in arrays:
            n = np.shape(a)[ax]
            index = (slice(None),) * ax + (slice(start, start + n),)
            out.append(unbroadcast(a, g[index]))
            start += n
        return _as_given(out, arrays)
    return vjp


def _as_given(cotangents, arrays):
    """The items' cotangents as a list, or stacked when one array held the items (its rows)."""
    return cotangents if isinstance(arrays, (list, tuple)) else np.stack(cotangents)


def _stack_rule(ans, arrays, axis=0, **kwargs):
    def vjp(g):
        ax = axis % np.ndim(g)
        return _as_given([unbroadcast(a, g[(slice(None),) * ax + (i,)])
                          for i, a in enumerate(arrays)], arrays)
    return vjp


def _sum_rule(ans, x, axis=None, dtype=None, out=None, keepdims=False, initial=None,
              where=None):
    if where is not None:  # entries outside the mask are not summed: no gradient there
        return lambda g: unbroadcast(x, _expand_reduced(g, x, axis, keepdims) * where)
    return lambda g: unbroadcast(x, _expand_reduced(g, x, axis, keepdims))


def _mean_rule(ans, x, axis=None, dtype=None, out=None, keepdims=False, where=None):
    if where is not None:  # the mean of the masked entries: each counts 1/count
        mask = np.broadcast_to(where, _shape(x))
        count = np.sum(mask, axis=axis, keepdims=True)
        return lambda g: unbroadcast(x, _keepdims(g, x, axis, keepdims) / count * mask)
    count = _reduction_count(x, axis)
    return lambda g: unbroadcast(x, _expand_reduced(g / count, x, axis, keepdims))


@primitive
def _prod_of_others(x, axis):
    """Each entry's product of the *other* entries of its reduction, exact at zeros:
    products before and after it (exclusive cumulative products), multiplied."""
    x = np.asarray(x)
    axes = list(_normalize_axis(axis, x.ndim))
    kept = [i for i in range(x.ndim) if i not in axes]
    moved = np.transpose(x, kept + axes)
    flat = moved.reshape(moved.shape[:len(kept)] + (-1,))
    ones = np.ones(flat.shape[:-1] + (1,), flat.dtype)
    before = np.cumprod(np.concatenate([ones, flat[..., :-1]], axis=-1), axis=-1)
    after = np.cumprod(np.concatenate([ones, flat[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]
    return np.transpose((before * after).reshape(moved.shape), np.argsort(kept + axes))


def _no_second_derivative_at_zero(ans, x, axis):
    raise MissingRuleError("the second derivative of numpy.prod where an entry is zero "
                           "(not implemented)")


defvjp(_prod_of_others, _no_second_derivative_at_zero, None)


def _prod_rule(ans, x, axis=None, dtype=None, out=None, keepdims=False, initial=None,
               where=None):
    """``ans / x`` where no entry is zero; otherwise the products of the others (no 0/0).
    Entries outside ``where`` count as 1 and get no gradient.  Differentiating
    ``_prod_of_others`` (twice at a zero) is an error."""
    def vjp(g):
        g = _expand_reduced(g, x, axis, keepdims)
        xs = x
        if where is not None:
            xs, g = np.where(where, x, 1.0), g * where
        if np.count_nonzero(xs == 0):
            others = _prod_of_others(xs, axis)
            return unbroadcast(x, g * (others if initial is None else others * initial))
        return unbroadcast(x, g * _expand_reduced(ans, x, axis, keepdims) / xs)
    return vjp


def _clip_rule(ans, x, *bounds, **kwargs):
    return lambda g: unbroadcast(x, np.where(ans == x, g, 0.0))


def _clip_bound_rule(pos):
    """The rule of a bound of ``np.clip``: the entries clipped to it (where ``x`` is not)."""
    def rule(ans, x, *bounds, **kwargs):
        bound = bounds[pos - 1]
        return lambda g: unbroadcast(bound, np.where((ans != x) & (ans == bound), g, 0.0))
    return rule


def _cumsum_rule(ans, x, axis=None, dtype=None, **kwargs):
    """The sum of ``g`` from each position to the end: a reversed cumulative sum."""
    def vjp(g):
        if axis is None:
            return unbroadcast(x, _reshape(np.flip(np.cumsum(np.flip(g))), _shape(x)))
        return unbroadcast(x, np.flip(np.cumsum(np.flip(g, axis), axis), axis))
    return vjp


def _pad_rule(ans, x, pad_width, mode="constant", **kwargs):
    if mode != "constant":
        raise NotImplementedError(f"gradient of numpy.pad with mode={mode!r} (only 'constant')")
    ndim = len(_shape(x))
    if isinstance(pad_width, dict):  # {axis: widths}, the other axes unpadded (NumPy 2.3)
        pad_width = [pad_width.get(i, pad_width.get(i - ndim, (0, 0))) for i in range(ndim)]
    widths = np.broadcast_to(np.asarray(pad_width, dtype=int), (ndim, 2))
    inner = tuple(slice(before, before + n) for (before, _), n in zip(widths, _shape(x)))
    return lambda g: g[inner]


@primitive
def _untake_along(g, indices, axis, x):
    """The cotangent of ``take_along_axis(x, indices, axis)``: ``g`` added back at ``indices``
    (of the flattened ``x`` when ``axis`` is None), in ``x`` broadcast against ``indices``
    on the other axes (the rule then sums the broadcast away)."""
    shape, dtype = _shape(x), np.result_type(g)
    if axis is None:
        out = np.zeros(int(np.prod(shape)), dtype)
        np.add.at(out, indices, g)
        return np.reshape(out, shape)
    gshape = np.shape(g)
    axis %= len(shape)
    out = np.zeros(tuple(n if i == axis else max(n, m)
                         for i, (n, m) in enumerate(zip(shape, gshape))), dtype)
    grid = list(np.ogrid[tuple(slice(n) for n in gshape)])
    grid[axis] = indices
    np.add.at(out, tuple(grid), g)
    return out


defvjp(_untake_along,
       lambda ans, g, indices, axis, x: lambda h: np.take_along_axis(h, indices, axis),
       None, None, None)  # x: its shape


def _diagonal_index(shape, offset, axis1, axis2):
    """Where ``np.diagonal`` reads, in ``x`` moved to put ``axis1``, ``axis2`` last."""
    n1, n2 = shape[axis1], shape[axis2]
    length = max(0, min(n1 + min(offset, 0), n2 - max(offset, 0)))
    steps = np.arange(length)
    return steps - min(offset, 0), steps + max(offset, 0)


@primitive
def _undiagonal(g, shape, offset=0, axis1=0, axis2=1):
    """An array of ``shape``, zero but for ``g`` on the diagonal ``np.diagonal`` reads."""
    ndim = len(shape)
    axis1, axis2 = axis1 % ndim, axis2 % ndim
    rest = [n for i, n in enumerate(shape) if i not in (axis1, axis2)]
    out = np.zeros(rest + [shape[axis1], shape[axis2]], dtype=np.result_type(g))
    rows, cols = _diagonal_index(shape, offset, axis1, axis2)
    out[..., rows, cols] = g
    return np.moveaxis(out, (-2, -1), (axis1, axis2))


defvjp(_undiagonal, lambda ans, g, shape, offset=0, axis1=0, axis2=1:
       lambda h: np.diagonal(h, offset, axis1, axis2))


def _matrix_t(a):
    return np.swapaxes(a, -1, -2)


def _solve_rules():
    def da(ans, a, b):
        def vjp(g):
            db = np.linalg.solve(_matrix_t(a), g)
            if np.ndim(b) == 1:
                return unbroadcast(a, -np.expand_dims(db, -1) * np.expand_dims(ans, -2))
            return unbroadcast(a, -(db @ _matrix_t(ans)))
        return vjp

    def db(ans, a, b):
        return lambda g: unbroadcast(b, np.linalg.solve(_matrix_t(a), g))

    return da, db


# ---------------------------------------------------------------- the rules

def _unary(func, derivative):
    """Register ``func`` with the rule ``g * derivative(ans, x)``."""
    defvjp(func, lambda ans, x: lambda g: unbroadcast(x, g * derivative(ans, x)))


_unary(np.exp, lambda ans, x: ans)
_unary(np.log1p, lambda ans, x: 1.0 / (1.0 + x))
_unary(np.expm1, lambda ans, x: ans + 1.0)
_unary(np.sqrt, lambda ans, x: 0.5 / ans)
_unary(np.square, lambda ans, x: 2.0 * x)
_unary(np.sin, lambda ans, x: np.cos(x))
_unary(np.cos, lambda ans, x: -np.sin(x))
_unary(np.tan, lambda ans, x: 1.0 / np.cos(x) ** 2)
_unary(np.tanh, lambda ans, x: 1.0 - ans ** 2)
_unary(np.arctan, lambda ans, x: 1.0 / (1.0 + x ** 2))
_unary(np.abs, lambda ans, x: np.sign(x))
_unary(np.fabs, lambda ans, x: np.sign(x))
_unary(np.sinh, lambda ans, x: np.cosh(x))
_unary(np.cosh, lambda ans, x: np.sinh(x))
_unary(np.arcsin, lambda ans, x: 1.0 / np.sqrt(1.0 - x ** 2))
_unary(np.arccos, lambda ans, x: -1.0 / np.sqrt(1.0 - x ** 2))
_unary(np.arcsinh, lambda ans, x: 1.0 / np.sqrt(x ** 2 + 1.0))
_unary(np.arccosh, lambda ans, x: 1.0 / np.sqrt(x ** 2 - 1.0))
_unary(np.arctanh, lambda ans, x: 1.0 / (1.0 - x ** 2))
_unary(np.log2, lambda ans, x: 1.0 / (x * np.log(2.0)))
_unary(np.log10, lambda ans, x: 1.0 / (x * np.log(10.0)))
_unary(np.exp2, lambda ans, x: ans * np.log(2.0))
_unary(np.reciprocal, lambda ans, x: -ans ** 2)
_unary(np.cbrt, lambda ans, x: 1.0 / (3.0 * ans ** 2))
_unary(np.deg2rad, lambda ans, x: np.pi / 180.0)
_unary(np.rad2deg, lambda ans, x: 180.0 / np.pi)

defvjp(np.log, lambda ans, x: lambda g: unbroadcast(x, g / x))  # (one pass, not g * (1 / x))
defvjp(np.negative, lambda ans, x: lambda g: unbroadcast(x, -g))
defvjp(np.positive, lambda ans, x: lambda g: unbroadcast(x, g))
defvjp(np.add, lambda ans, x, y: lambda g: unbroadcast(x, g),
       lambda ans, x, y: lambda g: unbroadcast(y, g))
defvjp(np.subtract, lambda ans, x, y: lambda g: unbroadcast(x, g),
       lambda ans, x, y: lambda g: -unbroadcast(y, g))  # negating the sum: exact, fewer items
defvjp(np.multiply, lambda ans, x, y: lambda g: unbroadcast(x, y * g),
       lambda ans, x, y: lambda g: unbroadcast(y, x * g))
defvjp(np.divide, lambda ans, x, y: lambda g: unbroadcast(x, g / y),
       lambda ans, x, y: lambda g: unbroadcast(y, -g * x / y ** 2))
defvjp(np.power,
       lambda ans, x, y: lambda g: unbroadcast(x, g * y * x ** _power_exponent(y)),
       lambda ans, x, y: lambda g: unbroadcast(y, g * np.log(_replace_zero(x, 1.0)) * ans))
defvjp(np.mod, lambda ans, x, y: lambda g: unbroadcast(x, g),
       lambda ans, x, y: lambda g: unbroadcast(y, -g * np.floor(x / y)))
defvjp(np.maximum, lambda ans, x, y: lambda g: unbroadcast(x, _chosen(g, x, ans, y)),
       lambda ans, x, y: lambda g: unbroadcast(y, _chosen(g, y, ans, x)))
copy_rules(np.minimum, np.maximum)
copy_rules(np.fmax, np.maximum)
copy_rules(np.fmin, np.maximum)
defvjp(np.hypot, lambda ans, x, y: lambda g: unbroadcast(x, g * x / ans),
       lambda ans, x, y: lambda g: unbroadcast(y, g * y / ans))
defvjp(np.arctan2, lambda ans, y, x: lambda g: unbroadcast(y, g * x / (x ** 2 + y ** 2)),
       lambda ans, y, x: lambda g: unbroadcast(x, -g * y / (x ** 2 + y ** 2)))
defvjp(np.logaddexp, lambda ans, x, y: lambda g: unbroadcast(x, g * np.exp(x - ans)),
       lambda ans, x, y: lambda g: unbroadcast(y, g * np.exp(y - ans)))
defvjp(np.logaddexp2, lambda ans, x, y: lambda g: unbroadcast(x, g * np.exp2(x - ans)),
       lambda ans, x, y: lambda g: unbroadcast(y, g * np.exp2(y - ans)))
defvjp(np.where, None,
       lambda ans, c, x, y: lambda g: unbroadcast(x, np.where(c, g, 0.0)),
       lambda ans, c, x, y: lambda g: unbroadcast(y, np.where(c, 0.0, g)))
defvjp(np.clip, _clip_rule, _clip_bound_rule(1), _clip_bound_rule(2))
defvjp(np.full_like, None, lambda ans, a, fill_value, *args, **kw: lambda g: unbroadcast(
    fill_value, g))
defvjp(np.matmul, _matmul_da, _matmul_db)
defvjp(np.dot, _dot_rule(0, _matmul_da), _dot_rule(1, _matmul_db))
defvjp(np.outer,
       lambda ans, a, b, out=None: lambda g: unbroadcast(a, np.reshape(g @ np.ravel(b), _shape(a))),
       lambda ans, a, b, out=None: lambda g: unbroadcast(b, np.reshape(np.ravel(a) @ g, _shape(b))))

defvjp(np.sum, _sum_rule)
defvjp(np.mean, _mean_rule)
defvjp(np.prod, _prod_rule)
for _f in (np.max, np.amax, np.min, np.amin):
    defvjp(_f, _chooser)

# (positional: reshape(a, shape, order), ravel(a, order))
defvjp(np.reshape, lambda ans, x, *a, **kw: _reshape_back(x, kw.get("order", (*a, "C", "C")[1])))
defvjp(np.ravel, lambda ans, x, *a, **kw: _reshape_back(x, kw.get("order", (*a, "C")[0])))
defvjp(np.expand_dims, lambda ans, x, axis: lambda g: _reshape(g, _shape(x)))
defvjp(np.squeeze, lambda ans, x, axis=None: lambda g: _reshape(g, _shape(x)))
defvjp(np.transpose, _transpose_rule)
defvjp(np.swapaxes, lambda ans, x, axis1, axis2: lambda g: np.swapaxes(g, axis1, axis2))
defvjp(np.broadcast_to, lambda ans, x, shape, **kw: lambda g: unbroadcast(x, g))
defvjp(np.concatenate, _concatenate_rule)
defvjp_argnum(np.einsum, _einsum_vjp_maker)
defvjp(np.stack, _stack_rule)
defvjp(np.cumsum, _cumsum_rule)
defvjp(np.flip, lambda ans, x, axis=None: lambda g: np.flip(g, axis))
defvjp(np.roll, lambda ans, x, shift, axis=None: lambda g: np.roll(g, np.negative(shift), axis),
       None, None)  # (shift and axis: integers, no gradient; so below for indices and axes)
defvjp(np.pad, _pad_rule)
defvjp(np.take_along_axis, lambda ans, x, indices, axis=-1: lambda g: unbroadcast(
    x, _untake_along(g, indices, axis, x)), None, None)
defvjp(np.diagonal, lambda ans, x, offset=0, axis1=0, axis2=1: lambda g: _undiagonal(
    g, _shape(x), offset, axis1, axis2))
defvjp(np.linalg.inv, lambda ans, x: lambda g: -_matrix_t(ans) @ g @ _matrix_t(ans))
defvjp(np.linalg.det, lambda ans, x: lambda g: np.expand_dims(g * ans, (-1, -2))
       * _matrix_t(np.linalg.inv(x)))
defvjp(np.linalg.solve, *_solve_rules())
defvjp(operator.getitem, _getitem_rule, None)
defvjp(astype, lambda ans, x, dtype: lambda g: _cast_back(g, x), None)

# Python operators (the tasks ``Delayed`` builds) share the ufuncs' rules
for _op, _uf in [(operator.add, np.add), (operator.sub, np.subtract),
                 (operator.mul, np.multiply), (operator.truediv, np.divide),
                 (operator.pow, np.power), (operator.matmul, np.matmul),
                 (operator.mod, np.mod), (operator.neg, np.negative),
                 (operator.pos, np.positive), (operator.abs, np.abs)]:
    copy_rules(_op, _uf)

# what the rules above read only for its shape and dtype (see ``uses_only_shapes``)
for _f in (np.add, np.subtract, operator.add, operator.sub):
    uses_only_shapes(_f, args=(0, 1), ans=True)
for _f in (np.negative, np.positive, operator.neg, operator.pos, np.sum, np.mean, np.reshape,
           np.ravel, np.expand_dims, np.squeeze, np.transpose, np.swapaxes, np.broadcast_to,
           np.cumsum, np.flip, np.roll):
    uses_only_shapes(_f, args=(0,), ans=True)
for _f in (np.exp, np.tanh, np.sqrt, np.expm1, np.exp2, np.reciprocal, np.cbrt):
    uses_only_shapes(_f, args=(0,))
for _f in (np.multiply, operator.mul):  # x * y: x's rule reads y's value and x's shape
    uses_only_shapes(_f, args=(0,), ans=True, rule_of=0)
    uses_only_shapes(_f, args=(1,), ans=True, rule_of=1)
for _f in (np.divide, operator.truediv):  # x / y: x's rule reads y's value and x's shape
    uses_only_shapes(_f, args=(0,), ans=True, rule_of=0)
for _f in (np.multiply, np.divide, operator.mul, operator.truediv, np.matmul, operator.matmul,
           np.dot, np.log, np.log1p, np.sin, np.cos, np.tan, np.arctan, np.square, np.abs,
           np.sinh, np.cosh, np.arcsin, np.arccos, np.arcsinh, np.arccosh, np.arctanh, np.log2,
           np.log10, np.deg2rad, np.rad2deg, np.fabs):
    uses_only_shapes(_f, ans=True)

nondifferentiable(
    np.sign, np.floor, np.ceil, np.round, np.rint, np.trunc, np.floor_divide,
    np.zeros_like, np.ones_like, np.empty_like, np.shape, np.ndim, np.size,
    np.result_type, np.argmax, np.argmin, np.argsort, np.nonzero, np.isfinite, np.isnan,
    np.isinf, operator.floordiv, operator.lt, operator.le, operator.gt, operator.ge,
    operator.eq, operator.ne, np.heaviside,
)
