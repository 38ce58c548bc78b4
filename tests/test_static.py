"""Placeholders and compiled graphs: build once, run many times with fresh feeds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import taskgrad as tg
import taskgrad.numpy as tnp
import taskgrad.schedulers.local as local
import taskgrad.schedulers.plan as plan_module
import taskgrad.static as static
from taskgrad.optimize import PASSES

SCHEDULERS = ["sync", "threads", "processes"]


def affine(x, W, b):
    return np.tanh(x @ W + b)


def model():
    x = tg.placeholder("x", shape=(None, 3), dtype="float64")
    W = tg.placeholder("W", shape=(3, 2))
    b = tg.delayed(np.array([0.5, -0.5]), name="b")
    h = tg.delayed(affine)(x, W, b)
    return x, W, (h * 2).sum(), h


# ---------------------------------------------------------------- placeholders

def test_placeholder_is_a_named_leaf():
    x = tg.placeholder("x", shape=[None, 4], dtype=np.float32)
    assert x.key == "x" and x.dependencies == ()
    assert x.task.shape == (None, 4) and x.task.dtype == np.float32


@pytest.mark.parametrize("kwargs, message", [
    ({"name": ""}, "non-empty str"),
    ({"name": 3}, "non-empty str"),
    ({"name": "x", "shape": (2, -1)}, "non-negative ints or None"),
    ({"name": "x", "shape": (2.5,)}, "non-negative ints or None"),
    ({"name": "x", "shape": object()}, "tuple of ints"),
])
def test_placeholder_rejects_bad_declarations(kwargs, message):
    with pytest.raises(TypeError, match=message):
        tg.placeholder(**kwargs)


def test_placeholder_rejects_unknown_dtype():
    with pytest.raises(TypeError):
        tg.placeholder("x", dtype="not-a-dtype")


def test_unfed_placeholder_in_a_dynamic_graph_is_a_clear_error():
    x = tg.placeholder("x")
    with pytest.raises(tg.PlaceholderError, match="placeholder 'x' has no value"):
        (x + 1).compute(scheduler="sync")


def test_placeholders_sharing_a_name_are_one_input_if_declared_alike():
    step = tg.compile((tg.placeholder("x", (2,)) + 1) * (tg.placeholder("x", (2,)) - 1))
    np.testing.assert_array_equal(step(x=np.array([2, 3])), [3, 8])
    with pytest.raises(tg.PlaceholderError, match="two placeholders named 'x' declare"):
        tg.compile((tg.placeholder("x", (2,)) + 1) * (tg.placeholder("x", (3,)) - 1))


# ---------------------------------------------------------------- compile

@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_compiled_matches_numpy_on_every_scheduler(scheduler):
    x, W, loss, h = model()
    step = tg.compile([loss, h], scheduler=scheduler)
    rng = np.random.default_rng(0)
    for batch in (1, 5, 2):
        xv, Wv = rng.normal(size=(batch, 3)), rng.normal(size=(3, 2))
        got_loss, got_h = step(x=xv, W=Wv)
        want_h = affine(xv, Wv, np.array([0.5, -0.5]))
        np.testing.assert_array_equal(got_h, want_h)
        assert got_loss == (want_h * 2).sum()


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.just(3)),
                  elements=st.floats(-10, 10)),
       hnp.arrays(np.float64, (3, 2), elements=st.floats(-10, 10)),
       st.sampled_from([True, False, ["fuse"], ["inline", "cse"]]))
def test_compiled_equals_dynamic_for_any_feed(xv, Wv, passes):
    _, _, loss, h = model()
    step = tg.compile((loss, h), optimize=passes, scheduler="sync")
    dyn_loss, dyn_h = _dynamic(xv, Wv)
    got_loss, got_h = step(x=xv, W=Wv)
    np.testing.assert_array_equal(got_h, dyn_h)
    assert got_loss == dyn_loss or (np.isnan(got_loss) and np.isnan(dyn_loss))


def _dynamic(xv, Wv):
    x, W = tg.delayed(xv), tg.delayed(Wv)
    h = tg.delayed(affine)(x, W, tg.delayed(np.array([0.5, -0.5])))
    return tg.compute((h * 2).sum(), h, scheduler="sync")


def test_output_structure():
    x = tg.placeholder("x")
    single = tg.compile(x + 1, scheduler="sync")
    assert single(x=1) == 2
    assert tg.compile([x + 1, x * 3], scheduler="sync")(x=2) == (3, 6)
    assert tg.compile((x + 1,), scheduler="sync")(x=2) == (3,)
    assert tg.compile({"a": x, "b": [x - 1]}, scheduler="sync")(x=5) == {"a": 5, "b": [4]}


def test_feeds_may_come_in_a_dict():
    a, b = tg.placeholder("my input"), tg.placeholder("b")
    step = tg.compile(a - b, scheduler="sync")
    assert step({"my input": 5}, b=2) == 3


def test_graph_without_placeholders_compiles_to_constants():
    x = tg.delayed(np.arange(3.0), name="x")
    step = tg.compile((x * 2).sum())
    assert step() == 6.0
    assert all(isinstance(t, tg.Task) for t in step.graph.values())


@pytest.mark.parametrize("feeds, message", [
    ({"x": np.ones((2, 3))}, r"missing feed\(s\) for placeholder\(s\) \['W'\]"),
    ({"x": np.ones((2, 3)), "W": np.ones((3, 2)), "Z": 1}, r"unknown feed name\(s\) \['Z'\]"),
    ({"x": np.ones((2, 4)), "W": np.ones((3, 2))}, r"'x' expects shape \(None, 3\), got \(2, 4\)"),
    ({"x": np.ones(3), "W": np.ones((3, 2))}, r"'x' expects shape \(None, 3\), got \(3,\)"),
    ({"x": np.ones((2, 3), np.float32), "W": np.ones((3, 2))},
     "'x' expects dtype float64, got float32"),
    ({"x": [[1, 2, 3]], "W": np.ones((3, 2))}, "'x' expects dtype float64, got int64"),
])
def test_bad_feeds_are_clear_errors(feeds, message):
    _, _, loss, _ = model()
    step = tg.compile(loss, scheduler="sync")
    with pytest.raises(tg.PlaceholderError, match=message):
        step(**feeds)


def test_undeclared_placeholders_take_anything():
    x = tg.placeholder("x")
    step = tg.compile(x * 2, scheduler="sync")
    assert step(x="ab") == "abab"
    np.testing.assert_array_equal(step(x=np.ones((2, 2), np.float32)), 2 * np.ones((2, 2)))


def test_errors_in_tasks_name_the_task():
    x = tg.placeholder("x")
    y = tg.delayed(np.linalg.inv, name="inverse")(x)
    for scheduler in ("sync", "threads"):
        step = tg.compile(y, scheduler=scheduler)
        with pytest.raises(np.linalg.LinAlgError) as info:
            step(x=np.zeros((2, 2)))
        assert "inverse-" in "".join(info.value.__notes__)


def test_no_graph_building_per_call(monkeypatch):
    _, _, loss, h = model()
    steps = [tg.compile([loss, h], scheduler=s) for s in ("sync", "threads")]

    def forbidden(*args, **kwargs):
        raise AssertionError("graph work done per call")

    for module, name in [(static, "collect_graph"), (static, "optimize_graph_"),
                         (local, "postorder"), (local, "Plan"), (plan_module, "postorder")]:
        monkeypatch.setattr(module, name, forbidden)
    for step in steps:
        for _ in range(3):
            step(x=np.ones((2, 3)), W=np.ones((3, 2)))


def test_callbacks_see_every_task_of_a_compiled_run():
    x = tg.placeholder("x")
    y = tg.delayed(np.negative)(tg.delayed(np.exp)(x))
    seen = []
    cb = tg.Callback(pretask=seen.append)
    for scheduler in ("sync", "threads"):
        seen.clear()
        tg.compile(y, scheduler=scheduler, optimize=False)(x=1.0, callbacks=[cb])
        assert len(seen) == 2


def test_optimized_graph_is_smaller_and_plain():
    _, _, loss, _ = model()
    step = tg.compile(loss, optimize=PASSES)
    unoptimized = tg.compile(loss, optimize=False)
    assert len(step.graph) < len(unoptimized.graph) == len(step.source_graph)
    assert all(isinstance(t, tg.Task) for t in step.graph.values())
    assert "placeholders ['x', 'W']" in repr(step) or "placeholders ['W', 'x']" in repr(step)


def _fused_tasks(compiled):
    from taskgrad.passes import Fused

    return [t for t in compiled.graph.values() if isinstance(t.func, Fused)]


def test_fusion_is_on_by_default_only_for_a_cluster(dask_client):
    x = tg.placeholder("x")
    y = tnp.exp(tnp.sin(tnp.tanh(x)))  # a linear chain
    local_step = tg.compile(y)
    cluster_step = tg.compile(y, scheduler=dask_client)
    assert _fused_tasks(local_step) == [] and len(_fused_tasks(cluster_step)) == 1
    assert local_step(x=0.5) == cluster_step(x=0.5) == np.exp(np.sin(np.tanh(0.5)))


def test_optimize_graph_alias_and_bad_selection():
    x = tg.placeholder("x")
    assert len(tg.compile(x + 1, optimize_graph=False).graph) == 2
    with pytest.raises(ValueError, match="unknown optimization pass"):
        tg.compile(x + 1, optimize=["fast"])
    with pytest.raises(TypeError, match="compile needs a Delayed"):
        tg.compile(3)


# ---------------------------------------------------------------- dynamic vs compiled training

def _sgd_data():
    rng = np.random.default_rng(42)
    X = rng.normal(size=(32, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.1 * rng.normal(size=32)
    return X, y


def _sgd_update(X, y, w, lr):
    """One SGD step of least squares, written with Delayed operators."""
    residual = X @ w - y
    grad = (X.T @ residual) * (2.0 / 32)
    return w - grad * lr


def test_sgd_dynamic_and_compiled_give_identical_weights():
    X, y = _sgd_data()
    lr = 0.1
    w_dynamic = np.zeros(4)
    for _ in range(50):  # dynamic: rebuild the graph every step
        w_dynamic = _sgd_update(tg.delayed(X), tg.delayed(y), tg.delayed(w_dynamic), lr).compute()
    Xp, yp, wp = tg.placeholder("X"), tg.placeholder("y"), tg.placeholder("w", shape=(4,))
    step = tg.compile(_sgd_update(Xp, yp, wp, lr))
    w_static = np.zeros(4)
    for _ in range(50):
        w_static = step(X=X, y=y, w=w_static)
    np.testing.assert_array_equal(w_static, w_dynamic)
    assert np.allclose(w_static, [1.0, -2.0, 0.5, 3.0], atol=0.15)


# ---------------------------------------------------------------- gradients of placeholders

def _loss(X, y, w):
    return tnp.mean((X @ w - y) ** 2)


def test_gradients_of_placeholders():
    X, y = _sgd_data()
    Xp, yp, wp = tg.placeholder("X"), tg.placeholder("y"), tg.placeholder("w", shape=(4,))
    loss = _loss(Xp, yp, wp)
    step = tg.compile([loss, *tg.grad(loss, [wp, Xp])])
    for w in (np.zeros(4), np.arange(4.0)):
        value, gw, gX = step(X=X, y=y, w=w)
        residual = X @ w - y
        np.testing.assert_allclose(gw, 2 * X.T @ residual / 32, rtol=1e-12)
        np.testing.assert_allclose(gX, 2 * np.outer(residual, w) / 32, rtol=1e-12, atol=1e-15)
        assert np.isclose(value, np.mean(residual ** 2))


def test_gradient_of_unused_placeholder_is_zeros():
    a, b = tg.placeholder("a"), tg.placeholder("b")
    step = tg.compile(tg.grad(tnp.sum(a * a), [a, b]), scheduler="sync")
    ga, gb = step(a=np.array([1.0, 2.0]), b=np.ones((2, 3)))
    np.testing.assert_array_equal(ga, [2.0, 4.0])
    np.testing.assert_array_equal(gb, np.zeros((2, 3)))


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_sgd_with_grad_identical_in_dynamic_and_compiled_styles(scheduler):
    X, y = _sgd_data()
    lr = 0.1
    w_dynamic = np.zeros(4)
    for _ in range(50):
        w = tg.delayed(w_dynamic)
        g = tg.grad(_loss(tg.delayed(X), tg.delayed(y), w), w)
        w_dynamic = (w - lr * g).compute(scheduler=scheduler)
    Xp, yp, wp = tg.placeholder("X"), tg.placeholder("y"), tg.placeholder("w")
    step = tg.compile(wp - lr * tg.grad(_loss(Xp, yp, wp), wp), scheduler=scheduler)
    w_static = np.zeros(4)
    for _ in range(50):
        w_static = step(X=X, y=y, w=w_static)
    np.testing.assert_array_equal(w_static, w_dynamic)
    assert np.allclose(w_static, [1.0, -2.0, 0.5, 3.0], atol=0.15)


def test_compiled_on_a_distributed_client(dask_client):
    x, W, loss, h = model()
    step = tg.compile([loss, h, *tg.grad(loss, [W])], scheduler=dask_client)
    local = tg.compile([loss, h, *tg.grad(loss, [W])], scheduler="sync")
    feeds = {"x": np.ones((2, 3)), "W": np.arange(6.0).reshape(3, 2) / 10}
    for a, b in zip(step(**feeds), local(**feeds)):
        np.testing.assert_array_equal(a, b)


def test_a_compiled_graph_on_a_cluster_never_returns_an_earlier_call_s_values(dask_client):
    """Every call sends the same graph with new values: the cluster must not answer from
    what it still holds under a key (it did: [0, 0, 4, 4, ...])."""
    x = tg.placeholder("x")
    step = tg.compile([x * 2, x + 1], scheduler=dask_client)
    assert [step(x=i) for i in range(8)] == [(2 * i, i + 1) for i in range(8)]


@pytest.mark.parametrize("build", [
    lambda: tg.placeholder("c") + tg.delayed(5, name="c"),
    lambda: tg.delayed(5, name="c") + tg.placeholder("c"),
    lambda: tg.placeholder("c", shape=(2,)) + tg.placeholder("c", shape=(3,)),
    lambda: tg.placeholder("c", dtype="f4") + tg.placeholder("c", dtype="f8"),
])
def test_a_placeholder_name_given_to_another_task_is_an_error(build):
    """It was silently run instead of fed (or one of two declarations was dropped)."""
    with pytest.raises(tg.PlaceholderError, match="placeholders? named 'c'|name 'c' is given"):
        tg.compile(build())


def test_feeding_by_position_or_twice_is_a_clear_error():
    step = tg.compile(tg.placeholder("x") * 2)
    with pytest.raises(TypeError, match="feed placeholders by name.*not with a ndarray.*'x'"):
        step(np.ones(2))
    with pytest.raises(tg.PlaceholderError, match=r"\['x'\] fed twice"):
        step({"x": 1}, x=2)
    assert step({"x": 1}) == step(x=1) == 2


def test_a_folded_output_changed_by_the_caller_changes_no_later_call():
    a = tg.placeholder("a", shape=(2,))
    c = tg.delayed(np.eye(2)) * 2.0  # no placeholder feeds it: folded at compile time
    for scheduler in ("sync", "threads"):
        step = tg.compile([c, tnp.sum(a) * c], scheduler=scheduler)
        c_value, _ = step(a=np.ones(2))
        c_value += 100
        again, y = step(a=np.ones(2))
        np.testing.assert_array_equal(again, 2 * np.eye(2))
        np.testing.assert_array_equal(y, 4 * np.eye(2))
