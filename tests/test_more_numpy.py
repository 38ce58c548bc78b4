"""NumPy beyond the core list: rules and compositions, through the tracer and through tnp,
against finite differences (first and second order), and clear errors for what is not covered."""

import collections

import numpy as np
import pytest

import taskgrad as tg
import taskgrad.numpy as tnp

X = np.array([[0.3, -0.7, 0.2], [0.55, 0.1, -0.4]])
W = np.arange(1.0, 7.0).reshape(2, 3) / 6

# name -> body(m, x) for m = numpy (traced) or tnp (tasks); x has shape (2, 3)
CASES = {
    "var": lambda m, x: m.sum(m.var(x, axis=0, ddof=1)),
    "std": lambda m, x: m.sum(m.std(x, axis=1, keepdims=True) * x),
    "tensordot": lambda m, x: m.sum(m.tensordot(x, x * W, axes=([1], [1]))),
    "tensordot-int": lambda m, x: m.tensordot(x, x * 2.0, axes=2),
    "logaddexp": lambda m, x: m.sum(m.logaddexp(x, 0.3)),
    "logaddexp2": lambda m, x: m.sum(m.logaddexp2(x, x * W)),
    "cumsum": lambda m, x: m.sum(m.cumsum(x, axis=1) ** 2),
    "cumsum-flat": lambda m, x: m.sum(m.cumsum(x) ** 2),
    "hyperbolic": lambda m, x: m.sum(m.sinh(x) * m.cosh(x)),
    "inverse-trig": lambda m, x: m.sum(m.arcsin(x * 0.5) + m.arccos(x * 0.3) + m.arctan2(x, 2.0)),
    "inverse-hyperbolic": lambda m, x: m.sum(m.arcsinh(x) + m.arccosh(x * x + 1.5)
                                             + m.arctanh(x * 0.5)),
    "logs-and-powers": lambda m, x: m.sum(m.log2(x + 2.0) + m.log10(x + 2.0) + m.exp2(x)
                                          + m.reciprocal(x + 3.0) + m.cbrt(x + 2.0)),
    "hypot-fmax": lambda m, x: m.sum(m.hypot(x, 1.0) + m.fmax(x, 0.0) * W),
    "flip-roll": lambda m, x: m.sum((m.flip(x, 1) + m.roll(x, 1, axis=1)) * W),
    "pad": lambda m, x: m.sum(m.pad(x, ((0, 1), (2, 0))) ** 2 * np.arange(15.0).reshape(3, 5)),
    "diagonal": lambda m, x: m.sum(m.diagonal(x, 1) ** 2),
    "diag": lambda m, x: m.sum(m.diag(x[0], 1) * np.arange(16.0).reshape(4, 4)),
    "trace": lambda m, x: m.trace((x * W) @ x.T),
    "triangles": lambda m, x: m.sum(m.triu(x) * W + m.tril(x, -1) ** 2),
    "sort": lambda m, x: m.sum(m.sort(x, axis=1) * W),
    "repeat-tile": lambda m, x: m.sum(m.repeat(x, 2, axis=0) ** 2) + m.sum(m.tile(x, 2) ** 3),
    "take": lambda m, x: m.sum(m.take(x, [0, 2, 2], axis=1) ** 2),
    "take_along_axis": lambda m, x: m.sum(m.take_along_axis(x, np.array([[0, 0], [2, 1]]), 1)
                                          ** 2),
    "diff": lambda m, x: m.sum(m.diff(x, n=2) ** 2),
    "moveaxis": lambda m, x: m.sum(m.moveaxis(x, 0, 1) * W.T),
    "average": lambda m, x: m.sum(m.average(x, axis=1, weights=[1.0, 2.0, 3.0]) ** 2),
    "nan-reductions": lambda m, x: m.nansum(x ** 2) + m.nanmean(x * W),
    "stacks": lambda m, x: m.sum(m.hstack([x, x * 2]) ** 2) + m.sum(m.vstack([x[0], x]) ** 3),
}

# plain NumPy only (no tnp counterpart: methods, submodules, ufunc methods)
TRACED_ONLY = {
    "norm": lambda x: np.linalg.norm(x) + np.sum(np.linalg.norm(x, axis=1))
    + np.linalg.norm(x[0], 1) + np.linalg.norm(x[1], np.inf),
    "inv-det-solve": lambda x: np.sum(np.linalg.inv(x @ x.T + np.eye(2)))
    + np.linalg.det(x @ x.T + np.eye(2)) + np.sum(np.linalg.solve(x @ x.T + np.eye(2), x))
    + np.sum(np.linalg.solve(x @ x.T + np.eye(2), x[:, 0])),
    "ufunc-methods": lambda x: np.sum(np.add.reduce(x) ** 2) + np.sum(np.maximum.reduce(x, axis=1))
    + np.sum(np.add.accumulate(x, axis=1) ** 2),
    "array-methods": lambda x: x.var() + x.std() + np.sum(x.cumsum(axis=0) ** 2) + (x.T @ x).trace()
    + np.sum(x.repeat(2, axis=1) ** 2) + np.sum(x.take([1, 1]) ** 2) + np.sum(x.copy() * W)
    + np.sum(x.real ** 2) + np.sum(x.diagonal() ** 2),
    "splits": lambda x: np.sum(np.split(x, 3, axis=1)[1] ** 2) + np.sum(np.array_split(x, 2, 1)[0])
    + np.sum(np.hsplit(x, [1])[1] ** 2) + np.sum(np.vsplit(x, 2)[1] ** 3),
    "atleast": lambda x: np.sum(np.atleast_2d(x[0]) ** 2) + np.sum(np.atleast_3d(x) ** 3),
    "heaviside": lambda x: np.sum(x * np.heaviside(x, 0.5)),
    "masked-reductions": lambda x: np.sum(x ** 2, where=MASK) + np.mean(x * W, axis=1,
                                                                          where=MASK).sum()
    + np.prod(x + 2.0, axis=0, where=MASK).sum()
    + np.max(x, axis=1, where=MASK, initial=-9.0).sum(),
    "positional-keepdims": lambda x: np.sum(np.sum(x, 1, None, None, True) * x)
    + np.sum(np.amax(x, 1, None, True) * x),
    "fortran-order": lambda x: np.sum(x.reshape(3, 2, order="F") * W.T) + np.sum(
        np.ravel(x, "F") * np.arange(6.0)) + np.sum(x.ravel("F") ** 2 * np.arange(6.0)),
    "clip-bounds": lambda x: np.sum(np.clip(x, x[0, 0] - 0.25, x[1, 1] + 0.3) * W),
    "full_like": lambda x: np.sum(np.full_like(x, x[0, 1] * 2.0) * W),
    "concatenate-flat": lambda x: np.sum(np.concatenate([x, x[0]], axis=None) ** 2
                                         * np.arange(9.0)),
    "ufunc-dtype": lambda x: np.sum(np.exp(x, dtype=np.float64) * W),
    "index-methods": lambda x: x[0, x[0].argmax()] * 3 + np.sum(x[x.nonzero()] * 2)
    + x.ravel()[x.argsort(axis=None)[0]] + x[1, x[1].argmin()],
}

MASK = np.array([[True, False, True], [True, True, False]])


def traced(body):
    return tg.delayed(lambda x: body(np, x))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(CASES))
def test_traced_and_tnp_match_finite_differences(name, dtype):
    body = CASES[name]
    x = X.astype(dtype)
    tg.check_grads(traced(body), x)
    tg.check_grads(lambda v: body(tnp, v), x)


@pytest.mark.parametrize("name", sorted(TRACED_ONLY))
def test_traced_only_match_finite_differences(name):
    tg.check_grads(tg.delayed(TRACED_ONLY[name]), X)


@pytest.mark.parametrize("name", ["var", "tensordot", "cumsum", "sort", "trace", "pad",
                                  "logaddexp", "diag", "take_along_axis"])
def test_second_order_matches_finite_differences(name):
    body = CASES[name]
    v = np.cos(np.arange(6.0)).reshape(2, 3)

    def grad_dot_v(x):
        return tnp.sum(tg.grad(body(tnp, x), x) * v)

    tg.check_grads(grad_dot_v, X)


def test_functions_returning_several_arrays_never_drop_the_gradient():
    """A function without a rule that returns several float arrays is an error, not a zero."""
    f = tg.delayed(lambda x: np.sum(np.divmod(x, 0.3)[1]))
    x = tg.delayed(X)
    with pytest.raises(tg.MissingRuleError, match="numpy.divmod.*several arrays"):
        tg.grad(f(x), x).compute()


@pytest.mark.parametrize("body", [
    lambda x: np.linalg.slogdet(x @ x.T)[1],
    lambda x: np.sum(np.linalg.eigh(x @ x.T)[0]),
    lambda x: np.sum(np.linalg.qr(x)[1]),
    lambda x: np.sum(np.linalg.svd(x)[1]),
])
def test_numpy_results_in_namedtuples_never_drop_the_gradient(body):
    """NumPy 2 returns several arrays in namedtuples (slogdet, eigh, qr, svd): an error too."""
    x = tg.delayed(X)
    with pytest.raises(tg.MissingRuleError, match="several arrays"):
        tg.grad(tg.delayed(body)(x), x).compute()


def _copyto(x):
    out = np.zeros(3)
    np.copyto(out, x[0])
    return np.sum(out ** 2)


def _putmask(x):
    out = np.zeros((2, 3))
    np.putmask(out, MASK, x)
    return np.sum(out)


@pytest.mark.parametrize("body", [_copyto, _putmask])
def test_numpy_functions_writing_in_place_are_clear_errors(body):
    x = tg.delayed(X)
    with pytest.raises(tg.MissingRuleError, match="writes into an array in place.*np.where"):
        tg.grad(tg.delayed(body)(x), x).compute()


def test_clip_bounds_given_as_tasks_get_their_gradient():
    x, lo, hi = tg.delayed(X), tg.delayed(np.array(-0.1)), tg.delayed(np.array([0.3, 0.4, 0.5]))
    y = tnp.sum(tnp.clip(x, lo, hi) * W)
    gx, glo, ghi = tg.compute(*tg.grad(y, [x, lo, hi]), scheduler="sync")
    clipped_low, clipped_high = X < -0.1, X > np.array([0.3, 0.4, 0.5])
    np.testing.assert_allclose(gx, W * ~(clipped_low | clipped_high))
    np.testing.assert_allclose(glo, np.sum(W * clipped_low))
    np.testing.assert_allclose(ghi, np.sum(W * clipped_high, axis=0))


def test_rules_that_stop_short_are_an_error_not_a_zero():
    """A rule tuple covering fewer arguments than are differentiated says nothing of the rest."""
    def scale(x, s):
        return x * s

    tg.defvjp(scale, lambda ans, x, s: lambda g: g * s)
    x, s = tg.delayed(X), tg.delayed(2.0)
    with pytest.raises(tg.MissingRuleError, match="scale.*argument 1.*first 1 argument"):
        tg.grad(tnp.sum(tg.delayed(scale)(x, s)), [x, s])
    np.testing.assert_allclose(tg.grad(tnp.sum(tg.delayed(scale)(x, s)), x).compute(), 2.0)
    # the same inside traced code, where the rule applies to a tg.primitive
    primitive_scale = tg.primitive(scale)
    tg.defvjp(primitive_scale, lambda ans, x, s: lambda g: g * s)
    traced = tg.delayed(lambda a, b: np.sum(primitive_scale(a, b)))
    np.testing.assert_allclose(tg.grad(traced(x, s), x).compute(), 2.0)
    with pytest.raises(tg.MissingRuleError, match="with respect to its argument 1"):
        tg.grad(traced(x, s), s).compute()


@pytest.mark.parametrize("body", [
    lambda m, x, b: m.sum(m.outer(x[0], b)),
    lambda m, x, b: m.sum(m.linalg.solve(x @ x.T + 1.0, b[:2])) if m is np else m.sum(x * b),
])
def test_float32_inputs_keep_float32_gradients_beside_float64(body):
    x = tg.delayed(X.astype(np.float32))
    b = np.ones(3)
    grad = tg.grad(tg.delayed(lambda v: body(np, v, b))(x), x).compute()
    assert grad.dtype == np.float32


@pytest.mark.parametrize("body, message", [
    (lambda x: np.sum(np.pad(x, 1, mode="reflect")), "mode='reflect'"),
    (lambda x: np.linalg.norm(x, "nuc"), "numpy.linalg.norm with ord='nuc'"),
    (lambda x: np.var(x, where=x > 0), "numpy.var with where="),
])
def test_uncovered_options_are_clear_errors(body, message):
    f = tg.delayed(body)
    x = tg.delayed(X)
    with pytest.raises((tg.MissingRuleError, NotImplementedError), match=message):
        tg.grad(f(x), x).compute()


def test_a_traced_namedtuple_reads_its_fields():
    """A task's namedtuple value, traced in the next task, is read by field name."""
    pair = collections.namedtuple("pair", "total doubled")
    make = tg.delayed(lambda a: pair(np.sum(a), a * 2), nout=2)
    use = tg.delayed(lambda p: p.total * np.sum(p.doubled))
    x = tg.delayed(X)
    np.testing.assert_allclose(tg.grad(use(make(x)), x).compute(), np.full(X.shape, 4 * X.sum()))


def test_masked_reductions_through_tnp():
    tg.check_grads(lambda v: tnp.sum(v ** 2, where=MASK) + tnp.mean(v * W, axis=0, where=MASK)
                   .sum() + tnp.prod(v + 2.0, where=MASK), X)


@pytest.mark.parametrize("body", [
    lambda v: tnp.sum(tnp.transpose(v.reshape(2, 3, 1), (-1, 0, 1))
                      * np.arange(6.0).reshape(1, 2, 3)),
    lambda v: tnp.sum(tnp.concatenate(v) * np.arange(6.0)),
    lambda v: tnp.sum(tnp.stack(v, axis=1) * np.arange(6.0).reshape(3, 2)),
    lambda v: tnp.sum(tnp.sum(v, axis=np.int64(1)) ** 2),
    lambda v: tnp.sum(tnp.power(v + 1.0, [1.0, 2.0, 3.0]))
    + tnp.sum(tnp.arctan2(v, [1.0, 2.0, 3.0])),
    lambda v: tnp.sum(tnp.take_along_axis(v, np.array([[2, 0], [1, 1]]))),
    lambda v: tnp.sum(tnp.add(v, 1.0, out=np.zeros((2, 3))) ** 2)
    + tnp.sum(tnp.exp(v, dtype=np.float64)),
    lambda v: tnp.sum(tnp.max(tnp.concatenate([v, v[:, :1]], axis=1), axis=1, initial=0.4)),
    lambda v: tnp.sum(tnp.sum([v, v * 2.0], axis=0) ** 2) + tnp.mean((v, v ** 2)),
    lambda v: tg.delayed(lambda a: a.sum(where=MASK, initial=1.0) ** 2)(v),
])
def test_numpy_signatures_through_tnp_match_finite_differences(body):
    """Negative transpose axes, one array as the sequence of concatenate/stack, NumPy integer
    axes, lists as operands, default axes, ufunc keywords that change no derivative, max
    with initial (a slice where initial wins), lists of tasks as arrays, method keywords."""
    tg.check_grads(body, X)


@pytest.mark.parametrize("call, message", [
    (lambda v: tnp.sum(tnp.sqrt(v, where=MASK, out=np.zeros((2, 3)))), "numpy.sqrt with where="),
    (lambda v: tnp.sum(tnp.einsum(v, [0, 1], W, [0, 1], [])), "einsum in its interleaved form"),
])
def test_options_that_change_the_derivative_are_clear_errors(call, message):
    x = tg.delayed(X)
    with pytest.raises(tg.MissingRuleError, match=message):
        tg.compute(tg.grad(call(x), x), scheduler="sync")


def test_a_composite_keeps_numpys_forward_value():
    """nanmean and triu are differentiated through their compositions, but their values are
    NumPy's, with or without a gradient in the same compute (dtype, inf off the triangle)."""
    x = tg.delayed(np.array([[1.0, np.nan], [np.inf, 3.0]], np.float32))
    mean, upper = tnp.nanmean(x[0]), tnp.triu(x)
    alone = tg.compute(mean, upper)
    with_grads = tg.compute(mean, upper, tg.grad(mean + tnp.sum(upper[0]), x))
    for a, b in zip(alone, with_grads):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(with_grads[2], [[2.0, 1.0], [0.0, 0.0]])


def test_numpy_2_3_pad_dict_and_triangles_of_a_vector():
    """pad takes {axis: widths}; triu/tril of a 1-d array make a square matrix of its rows."""
    v = np.array([1.0, 2.0, 3.0])
    tg.check_grads(lambda a: tnp.sum(tnp.pad(a, {1: (1, 2)}) ** 2), X)
    tg.check_grads(tg.delayed(lambda a: np.sum(np.pad(a, {-1: (2, 0)}) ** 2 * 1.5)), X)
    tg.check_grads(lambda a: tnp.sum(tnp.triu(a) * np.arange(9.0).reshape(3, 3)), v)
    tg.check_grads(tg.delayed(lambda a: np.sum(np.tril(a, -1) ** 2)), v)
