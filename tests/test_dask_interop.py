"""dask interoperability: a Delayed is a dask collection; a distributed Client is a scheduler."""

import dask
import numpy as np
import pytest

import taskgrad as tg
import taskgrad.numpy as tnp
from tasks import add, fail, inc


def test_delayed_is_a_dask_collection():
    d = add(inc(1), 5)
    assert dask.is_dask_collection(d)
    assert d.__dask_keys__() == [d.key]
    assert dask.base.tokenize(d) == dask.base.tokenize(d)
    assert set(d.__dask_graph__()) == set(d.graph)


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes"])
def test_dask_compute_runs_our_graph(scheduler):
    a = inc(1)
    b = add(a, tg.delayed(np.arange(3)))
    got_a, got_b = dask.compute(a, b, scheduler=scheduler)
    assert got_a == 2
    np.testing.assert_array_equal(got_b, [2, 3, 4])


def test_dask_persist_returns_delayed_holding_values():
    (p,) = dask.persist(add(inc(1), 1))
    assert isinstance(p, tg.Delayed)
    assert p.dependencies == ()
    assert p.compute() == 3


def test_string_arguments_are_not_mistaken_for_keys():
    a = inc(1)
    # a literal string equal to another task's key stays a string
    echo = tg.delayed(lambda s, x: (s, x))(a.key, a)
    assert dask.compute(echo)[0] == (a.key, 2)


def test_distributed_client_runs_the_graph(dask_client):
    a = inc(1)
    outs = [add(a, i) for i in range(10)]
    assert tg.compute(*outs, scheduler=dask_client) == tuple(range(2, 12))
    assert a.compute(scheduler=dask_client) == 2


def test_distributed_closures_and_arrays(dask_client):
    scale = 3.0
    f = tg.delayed(lambda x: x * scale)
    x = tg.delayed(np.ones(4))
    np.testing.assert_array_equal(f(x).compute(scheduler=dask_client), np.full(4, 3.0))


def test_distributed_uses_both_workers(dask_client):
    import os
    import time

    @tg.delayed
    def pid(i):
        time.sleep(0.05)
        return os.getpid()

    pids = set(tg.compute(*[pid(i) for i in range(20)], scheduler=dask_client))
    assert len(pids) == 2


def test_distributed_error_keeps_type_and_names_task(dask_client):
    bad = fail(inc(1))
    with pytest.raises(ZeroDivisionError, match="cannot use 2") as info:
        add(bad, 1).compute(scheduler=dask_client)
    assert any(bad.key in note for note in getattr(info.value, "__notes__", []))


def test_distributed_persist(dask_client):
    (p,) = tg.persist(add(inc(1), 1), scheduler=dask_client)
    assert p.compute(scheduler="sync") == 3


def test_dask_persist_with_a_default_distributed_client(dask_client):
    (p,) = dask.persist(add(inc(1), 1), scheduler=dask_client)
    assert p.compute(scheduler="sync") == 3


def test_dask_optimize_gives_back_a_delayed_that_computes_the_same():
    """dask.optimize rebuilds a collection from its uncomputed graph (it was taken for values)."""
    a = tg.delayed(np.arange(3.0), name="a")
    c = (a * 2).sum() + 1
    optimized, = dask.optimize(c)
    assert optimized.compute() == tg.compute(optimized)[0] == c.compute() == 7.0


def test_a_key_that_stands_for_other_work_is_never_answered_from_the_cluster(dask_client):
    """Each compute gets keys of its own on the cluster: a leaf named again with another
    value, or a forward task that reads its tape once a gradient is asked for."""
    assert (tg.delayed(1.0, name="w") * 2).compute(scheduler=dask_client) == 2.0
    assert (tg.delayed(5.0, name="w") * 2).compute(scheduler=dask_client) == 10.0
    x = tg.delayed(np.arange(3.0))
    h = tg.delayed(lambda a: np.tanh(a) * 2.0)(x)
    first = tg.compute(h, scheduler=dask_client)[0]
    again, grad = tg.compute(h, tg.grad(tnp.sum(h), x), scheduler=dask_client)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(grad, 2.0 * (1 - np.tanh(np.arange(3.0)) ** 2))
