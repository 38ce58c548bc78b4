"""NumPy beyond the core list: rules and compositions, through the tracer and through tnp,
against finite differences (first and second order), and clear errors for what is not covered."""

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
}


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
