"""A representative few gradients on ``"processes"`` and a dask.distributed
cluster, bit-identical to ``"sync"``; second derivatives on every scheduler."""

import sys

import cloudpickle
import numpy as np
import pytest

import taskgrad as tg
import taskgrad.numpy as tnp

from test_autodiff_mlp import layered_loss, make_problem, tnp_loss


@pytest.fixture(scope="module")
def client(dask_client):
    """The session's cluster, with this module's functions sent by value to its workers."""
    for name in (__name__, "test_autodiff_mlp"):
        cloudpickle.register_pickle_by_value(sys.modules[name])
    yield dask_client
    for name in (__name__, "test_autodiff_mlp"):
        cloudpickle.unregister_pickle_by_value(sys.modules[name])


@pytest.fixture(params=["processes", "distributed"])
def scheduler(request):
    if request.param == "distributed":
        return request.getfixturevalue("client")
    return request.param


def same_bits(values, expected):
    return [np.asarray(v).tobytes() for v in values] == [np.asarray(v).tobytes()
                                                         for v in expected]


def test_micrograd_example(scheduler):
    x, y, z = tg.delayed(1.0), tg.delayed(3.0), tg.delayed(-3.0)
    g = (x + y) * z
    assert tg.compute(g, *tg.grad(g, [x, y, z]), scheduler=scheduler) == (-12.0, -3.0, -3.0, 4.0)


@pytest.mark.parametrize("loss", [tnp_loss, layered_loss], ids=["tnp", "layers"])
def test_mlp_gradients_bit_identical_to_sync(loss, scheduler):
    x, onehot, params = make_problem(sizes=(8, 16, 16, 4), batch=10)
    leaves = [tg.delayed(p) for p in params]
    y = loss(x, onehot, *leaves)
    grads = tg.grad(y, leaves)
    assert same_bits(tg.compute(y, *grads, scheduler=scheduler),
                     tg.compute(y, *grads, scheduler="sync"))


def test_custom_vjp_travels_to_workers(scheduler):
    def opaque(x):
        return np.exp(x)

    tg.defvjp(opaque, lambda ans, x: lambda g: g * ans)
    x = tg.delayed(np.array([0.1, 0.2]))
    g = tg.grad(tnp.sum(tg.delayed(opaque)(x)), x)
    np.testing.assert_array_equal(g.compute(scheduler=scheduler), np.exp([0.1, 0.2]))


@pytest.mark.parametrize("sched", ["sync", "threads", "processes", "distributed"])
def test_second_derivative_through_tnp_and_traced_code(sched, request):
    scheduler = request.getfixturevalue("client") if sched == "distributed" else sched

    @tg.delayed
    def f(x):
        return np.sum(np.sin(x) ** 3)

    xs = np.array([0.3, 0.5])
    v = np.array([1.0, 2.0])
    x = tg.delayed(xs)
    for y in (f(x), tnp.sum(tnp.sin(x) ** 3)):
        hv = tg.grad(tnp.sum(tg.grad(y, x) * v), x)
        expected = (6 * np.sin(xs) * np.cos(xs) ** 2 - 3 * np.sin(xs) ** 3) * v
        np.testing.assert_allclose(hv.compute(scheduler=scheduler), expected)
