"""Higher order: gradients of gradients are ordinary differentiable graphs."""

import collections

import numpy as np
import pytest

import taskgrad as tg
import taskgrad.numpy as tnp

SCHEDULERS = ["sync", "threads"]


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_second_and_third_derivative_of_exp_sin_square(scheduler):
    x0 = 0.7
    x = tg.delayed(x0)
    f = tnp.exp(tnp.sin(x ** 2))
    d1 = tg.grad(f, x)
    d2 = tg.grad(d1, x)
    d3 = tg.grad(d2, x)
    v1, v2, v3 = tg.compute(d1, d2, d3, scheduler=scheduler)
    u, du, d2u = x0 ** 2, 2 * x0, 2.0
    s, c = np.sin(u), np.cos(u)
    e = np.exp(s)
    first = e * c * du
    second = e * (c * du) ** 2 + e * (-s * du ** 2 + c * d2u)
    assert float(v1) == pytest.approx(first)
    assert float(v2) == pytest.approx(second)
    eps = 1e-5
    around = []
    for step in (eps, -eps):
        xe = tg.delayed(x0 + step)
        around.append(tg.grad(tg.grad(tnp.exp(tnp.sin(xe ** 2)), xe), xe))
    up, down = tg.compute(*around, scheduler=scheduler)
    assert float(v3) == pytest.approx((up - down) / (2 * eps), rel=1e-6)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_hessian_vector_product_of_mlp_layer(scheduler):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 3))
    W0 = rng.normal(size=(3, 2))
    v = rng.normal(size=(3, 2))

    @tg.delayed
    def loss(W):
        return np.sum(np.tanh(X @ W) ** 2)

    W = tg.delayed(W0)
    hv = tg.grad(tnp.sum(tg.grad(loss(W), W) * v), W).compute(scheduler=scheduler)

    eps = 1e-6
    plus, minus = tg.delayed(W0 + eps * v), tg.delayed(W0 - eps * v)
    gp, gm = tg.compute(tg.grad(loss(plus), plus), tg.grad(loss(minus), minus))
    np.testing.assert_allclose(hv, (gp - gm) / (2 * eps), rtol=1e-6, atol=1e-8)


def test_full_hessian_of_quadratic_form():
    A = np.array([[2.0, 1.0], [0.5, 3.0]])
    x = tg.delayed(np.array([1.0, -1.0]))
    y = tnp.dot(x, tnp.dot(A, x))
    g = tg.grad(y, x)
    rows = [tg.grad(g[i], x) for i in range(2)]
    np.testing.assert_allclose(np.array(tg.compute(*rows)), A + A.T)


def test_grad_of_grad_with_custom_rule_written_in_numpy():
    def softplus(x):
        return np.log1p(np.exp(x))

    tg.defvjp(softplus, lambda ans, x: lambda g: g / (1.0 + np.exp(-x)))
    x = tg.delayed(0.3)
    d2 = tg.grad(tg.grad(tg.delayed(softplus)(x), x), x).compute()
    sig = 1 / (1 + np.exp(-0.3))
    assert float(d2) == pytest.approx(sig * (1 - sig))


def test_second_order_graph_runs_each_forward_task_once():
    calls = []

    @tg.delayed
    def f(x):
        calls.append(1)
        return np.sum(x ** 3)

    x = tg.delayed(np.array([1.0, 2.0]))
    y = f(x)
    g = tg.grad(y, x)
    h = tg.grad(tnp.sum(g), x)
    value, gv, hv = tg.compute(y, g, h, scheduler="sync")
    np.testing.assert_allclose(gv, [3.0, 12.0])
    np.testing.assert_allclose(hv, [6.0, 12.0])
    # once for y and the first-order tape (fused), once inside the retraced backward task
    assert len(calls) == 2


_Named = collections.namedtuple("_Named", "total scaled")


def _several_outputs(kind):
    """A plain-NumPy function returning ``sum(x)`` and ``3 * x`` in a container of ``kind``."""
    def several(a):
        total, scaled = np.sum(a), a * 3.0
        if kind == "dict":
            return {"total": total, "scaled": scaled}
        if kind == "namedtuple":
            return _Named(total, scaled)
        return (total, scaled)
    return several


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("kind", ["tuple", "namedtuple", "dict"])
def test_functions_with_several_outputs_to_second_order(kind, scheduler):
    """y = s**2 + sum(t**2) with (s, t) = (sum(x), 3x) from one traced call: its value holds
    no traced values, and its first and second derivatives are exact: 2s + 18x, and the
    derivative of their sum is 2n + 18 = 24 in every entry."""
    xv = np.array([1.0, 2.0, 3.0])
    x = tg.delayed(xv)
    out = tg.delayed(_several_outputs(kind), nout=None if kind == "dict" else 2)(x)
    s, t = (out["total"], out["scaled"]) if kind == "dict" else (out[0], out[1])
    y = s * s + tnp.sum(t * t)
    g1 = tg.grad(y, x)
    value, d1, d2 = tg.compute(out, g1, tg.grad(tnp.sum(g1), x), scheduler=scheduler)
    items = list(value.values()) if kind == "dict" else list(value)
    assert type(value).__name__ == {"tuple": "tuple", "namedtuple": "_Named", "dict": "dict"}[kind]
    assert all(type(v) in (np.float64, np.ndarray) for v in items), value
    np.testing.assert_allclose(d1, 2 * xv.sum() + 18 * xv)
    np.testing.assert_allclose(d2, np.full(3, 24.0))


@pytest.mark.parametrize("kind", ["tuple", "dict"])
def test_functions_with_several_outputs_to_third_order(kind):
    """d3/dx3 of sin(x) * cos(x) = sin(2x) / 2 is -4 cos(2x), through one traced call."""
    def both(a):
        s, c = np.sin(a), np.cos(a)
        return {"s": s, "c": c} if kind == "dict" else (s, c)

    x = tg.delayed(0.7)
    out = tg.delayed(both, nout=None if kind == "dict" else 2)(x)
    s, c = (out["s"], out["c"]) if kind == "dict" else (out[0], out[1])
    third = tg.grad(tg.grad(tg.grad(s * c, x), x), x)
    assert float(third.compute(scheduler="sync")) == pytest.approx(-4 * np.cos(1.4))
