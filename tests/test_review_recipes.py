"""Review of grad's recipes and their written-out runs (recipe.py, recipe_runs.py): cases
where computing a recipe's gradients again differs from the usual path."""

import gc
import weakref

import numpy as np
import pytest

import taskgrad as tg
import taskgrad.numpy as tnp
from taskgrad.autodiff import recipe as recipes


@pytest.fixture(autouse=True)
def empty_cache():
    recipes._RECIPES.clear()
    yield
    recipes._RECIPES.clear()


def test_a_wrt_outside_the_graph_computed_from_another_node_gets_its_own_shape():
    # The signature records an outside wrt only as (task type, leaf?, number of
    # dependencies), not which node it reads; the written-out run of the first graphs
    # then computes the later graphs' wrt from the node the first ones read.
    for i in range(4):
        x = tg.delayed(np.ones(3))
        z = tg.delayed(np.ones(4))
        y = tnp.sum(x) + tnp.sum(z)
        w = tnp.sin(x) if i < 3 else tnp.sin(z)  # (not in y's graph)
        grads = tg.grad(y, [x, w])
        fast = tg.compute(y, *grads, scheduler="sync")
        usual = tg.compute(y, *grads, scheduler="threads")
        assert fast[2].shape == usual[2].shape == ((3,) if i < 3 else (4,))


def test_a_wrt_sharing_its_key_with_a_leaf_of_the_graph_does_not_replace_the_leaf():
    # The analysis finds wrts by key (the gradient is the leaf's); the written-out run
    # maps keys to pool positions with the wrt positions last, so it computes the graph's
    # leaf "w" from the wrt's task instead: y comes out as 30, not 6.
    for _ in range(4):
        a = tg.delayed(np.ones(2), name="w")
        y = tnp.sum(a * 3.0)
        b = tg.delayed(np.full(2, 5.0), name="w")
        grads = tg.grad(y, [b])
        fast = tg.compute(y, *grads, scheduler="sync")
        usual = tg.compute(y, *grads, scheduler="threads")
        assert fast[0] == usual[0] == 6.0
        np.testing.assert_array_equal(fast[1], usual[1])


class _Array(np.ndarray):  # (an ndarray that a weakref can follow)
    pass


def _freed_without_a_collection(make_grads):
    gc.collect()
    gc.disable()
    try:
        value = np.ones(1000).view(_Array)
        ref = weakref.ref(value)
        x = tg.delayed(value)
        y = tnp.sum(tnp.sin(x))
        grads = make_grads(y, x)
        tg.compute(y, *grads, scheduler="sync")
        del value, x, y, grads
        return ref() is None
    finally:
        gc.enable()


def test_gradients_leave_their_graph_to_reference_counting():
    # vjp's gradients (no origin) are freed as soon as they are dropped
    assert _freed_without_a_collection(lambda y, x: [tg.vjp(y, x, 1.0)])
    # grad's carry _origin = (recipe, pool, position) and the pool holds them: a
    # reference cycle through the whole graph, leaves' values included, which only
    # the cyclic collector frees
    assert _freed_without_a_collection(lambda y, x: [tg.grad(y, x)])
