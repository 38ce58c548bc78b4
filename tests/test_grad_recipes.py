"""grad's recipes: a graph of a structure seen before gets its backward tasks from the
recipe of the first, and they must be the tasks a fresh analysis would build."""

import gc
import weakref

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import taskgrad as tg
import taskgrad.nn as tnn
import taskgrad.numpy as tnp
from taskgrad.autodiff import recipe as recipes
from taskgrad.autodiff import recipe_runs
from taskgrad.autodiff.backward_tasks import TapeSpec
from taskgrad.delayed import collect_graph
from taskgrad.graph import Pack, Ref

from test_autodiff_property import build, ops


@pytest.fixture(autouse=True)
def empty_cache():
    recipes._RECIPES.clear()
    yield
    recipes._RECIPES.clear()


def shape_of_graph(outputs):
    """The backward graph with keys replaced by their order of discovery: equal for two
    graphs that have the same tasks with the same arguments."""
    graph = collect_graph(outputs)
    names = {}

    def name(key):
        return names.setdefault(key, f"k{len(names)}")

    def template(value):
        if type(value) is Ref:
            return ("ref", name(value.key))
        if type(value) is Pack:
            return ("pack", value.kind, tuple(template(v) for v in value.items))
        if isinstance(value, tuple):
            return tuple(template(v) for v in value)
        if type(value) is TapeSpec:
            return ("tape", name(value.fkey), value.name, value.paths)
        if isinstance(value, str) and value in graph:  # (the seed names y)
            return ("key", name(value))
        if isinstance(value, np.ndarray):
            return ("array", value.tobytes(), value.dtype.str, value.shape)
        return value

    for d in outputs:
        name(d.key)
    rows = []
    for key in sorted(graph, key=lambda k: (k not in names, names.get(k, ""), k)):
        task = graph[key]
        if task.role != "backward":
            continue
        rows.append((name(key), task.func, template(task.args), task.kwargs,
                     tuple(map(name, task.dependencies)),
                     None if task._refs is None else tuple((i, name(k)) for i, k in task._refs),
                     key.split("-", 1)[0]))
    return sorted(rows, key=repr)


def mlp(dtype=np.float64, rng=0):
    r = np.random.default_rng(rng)
    x = r.normal(size=(4, 5)).astype(dtype)
    onehot = np.eye(3, dtype=dtype)[[0, 2, 1, 2]]
    params = [tg.delayed(r.normal(size=s).astype(dtype)) for s in [(5, 6), (6,), (6, 3), (3,)]]
    W1, b1, W2, b2 = params
    logits = tnn.relu(x @ W1 + b1) @ W2 + b2
    return -tnp.mean(tnp.sum(onehot * tnn.log_softmax(logits, axis=1), axis=1)), params


def fresh_grads(y, wrt):
    """The gradients of a fresh analysis, the cache left as it was."""
    saved = dict(recipes._RECIPES)
    recipes._RECIPES.clear()
    try:
        return tg.grad(y, wrt)
    finally:
        recipes._RECIPES.clear()
        recipes._RECIPES.update(saved)


def test_a_rebuilt_graph_takes_the_recipe_and_gets_the_same_tasks_and_values():
    y1, p1 = mlp()
    g1 = tg.grad(y1, p1)
    assert len(recipes._RECIPES) == 1
    y2, p2 = mlp(rng=1)  # other values, same structure
    g2 = tg.grad(y2, p2)
    assert len(recipes._RECIPES) == 1  # (the second graph took the recipe)
    assert shape_of_graph(g2) == shape_of_graph(fresh_grads(y2, p2))
    values = tg.compute(*g2, scheduler="sync")
    expected = tg.compute(*fresh_grads(y2, p2), scheduler="sync")
    for a, b in zip(values, expected):
        assert a.tobytes() == b.tobytes()
    assert not any(np.array_equal(a, b) for a, b in zip(values, tg.compute(*g1)))


def test_constants_and_keywords_are_read_from_the_new_graph():
    x = tg.delayed(np.arange(6.0).reshape(2, 3))
    tg.grad(tnp.sum(tnp.sum(np.full((2, 3), 2.0) * x, axis=0) ** 2), x)
    for c, axis in [(np.full((2, 3), 3.0), 0), (np.arange(6.0).reshape(2, 3), 1)]:
        y = tnp.sum(tnp.sum(c * x, axis=axis) ** 2)
        g = tg.grad(y, x)
        assert len(recipes._RECIPES) == 1
        xv = np.arange(6.0).reshape(2, 3)
        expected = 2 * np.expand_dims((c * xv).sum(axis), axis) * c
        np.testing.assert_allclose(tg.compute(g, scheduler="sync")[0], expected)


def test_the_structure_includes_the_wrt_positions_and_the_argument_count():
    a, b = tg.delayed(np.ones(3)), tg.delayed(np.full(3, 2.0))
    ga = tg.grad(tnp.sum(a * b), a)
    gb = tg.grad(tnp.sum(a * b), b)
    assert len(recipes._RECIPES) == 2
    np.testing.assert_array_equal(tg.compute(ga, gb)[0], np.full(3, 2.0))
    np.testing.assert_array_equal(tg.compute(gb)[0], np.ones(3))
    m1 = tg.grad(tnp.sum(tnp.mean(a * b)), [a, b])
    y = tnp.sum(tnp.mean(a * b, 0))
    m2 = tg.grad(y, [a, b])
    assert len(recipes._RECIPES) == 4
    assert shape_of_graph(m2) == shape_of_graph(fresh_grads(y, [a, b]))
    for x, y in zip(tg.compute(*m1), tg.compute(*m2)):
        np.testing.assert_allclose(x, y)


def test_wrt_outside_the_graph_shared_nodes_and_y_itself():
    a, b, unused = (tg.delayed(np.full(2, v)) for v in (1.0, 2.0, 3.0))
    for _ in range(2):
        c = a * b
        y = tnp.sum(c * c + a)
        grads = tg.grad(y, [a, unused, y, a])
        assert shape_of_graph(grads) == shape_of_graph(fresh_grads(y, [a, unused, y, a]))
        ga, gu, gy, ga2 = tg.compute(*grads, scheduler="sync")
        np.testing.assert_allclose(ga, 2 * 2.0 * 2.0 * 1.0 + 1.0)
        np.testing.assert_array_equal(gu, np.zeros(2))
        assert gy == 1.0
        np.testing.assert_array_equal(ga, ga2)
    assert len(recipes._RECIPES) == 1


def test_a_rule_registered_later_applies_to_graphs_of_a_known_structure():
    def triple(x):
        return 3 * x

    tg.defvjp(triple, lambda ans, x: lambda g: 3 * g)
    x = tg.delayed(np.ones(2))
    lazy = tg.delayed(triple)
    assert tg.compute(tg.grad(tnp.sum(lazy(x)), x))[0].tolist() == [3.0, 3.0]
    assert len(recipes._RECIPES) == 1
    tg.defvjp(triple, lambda ans, x: lambda g: 30 * g)  # (a wrong rule, to see it taken)
    assert tg.compute(tg.grad(tnp.sum(lazy(x)), x))[0].tolist() == [30.0, 30.0]


def test_traced_functions_take_recipes_with_their_constants_and_keywords_from_the_graph():
    @tg.delayed
    def layer(x, w, scale=1.0):  # plain NumPy: traced
        return np.tanh(x @ w) * scale

    w = tg.delayed(np.full((2, 2), 0.5))
    wv = np.full((2, 2), 0.5)
    for x, scale in [(np.ones((1, 2)), 1.0), (np.array([[1.0, -2.0]]), 3.0)]:
        y = tnp.sum(layer(x, w, scale=scale))
        g = tg.grad(y, w)
        assert shape_of_graph([g]) == shape_of_graph([fresh_grads(y, w)])
        expected = x.T @ ((1 - np.tanh(x @ wv) ** 2) * scale)
        np.testing.assert_allclose(tg.compute(g, scheduler="sync")[0], expected)
    assert len(recipes._RECIPES) == 1


def test_graphs_whose_analysis_reads_values_get_no_recipe():
    w = tg.delayed(np.ones((2, 2)))
    nested = tg.grad(tnp.sum(tnp.concatenate([w, w * 2.0])), w)
    np.testing.assert_array_equal(tg.compute(nested)[0], np.full((2, 2), 3.0))
    listed = tg.grad(tnp.sum(tg.delayed(np.add)([1.0, 2.0], w)), w)  # (a ufunc given a list)
    np.testing.assert_array_equal(tg.compute(listed)[0], np.ones((2, 2)))
    # a gradient of a gradient through a traced function differentiates its tape's walk
    x = tg.delayed(np.array([0.3, -0.2]))
    cube = tg.delayed(lambda v: np.sum(v ** 3))
    h = tg.grad(tnp.sum(tg.grad(cube(x), x)), x)
    np.testing.assert_allclose(tg.compute(h)[0], 6 * np.array([0.3, -0.2]))
    assert len(recipes._RECIPES) == 1  # (the first-order grad's, only)


def test_the_cache_keeps_no_function_made_for_one_graph():
    class Big:
        pass

    big = Big()
    held = weakref.ref(big)
    w = tg.delayed(np.ones(2))
    data = tg.delayed(lambda held=big: np.full(2, 3.0))()  # (functions of this graph only)
    traced = tg.delayed(lambda v, held=big: np.sin(v))(w)
    g = tg.grad(tnp.sum(data * traced), w)
    np.testing.assert_allclose(tg.compute(g, scheduler="sync")[0], 3.0 * np.cos(1.0))
    assert len(recipes._RECIPES) == 1
    del big, data, traced, g
    gc.collect()
    assert held() is None


def test_the_cache_is_bounded():
    x = tg.delayed(np.ones(2))
    for n in range(recipes.MAX_RECIPES + 5):
        y = x
        for _ in range(n):
            y = tnp.sin(y)
        tg.grad(tnp.sum(y), x)
    assert len(recipes._RECIPES) <= recipes.MAX_RECIPES


def test_vjp_takes_recipes_too():
    x = tg.delayed(np.arange(3.0))
    for c in (np.ones(3), np.arange(3.0)):
        g = tg.vjp(tnp.sin(x) * 2.0, x, c)
        np.testing.assert_allclose(tg.compute(g)[0], 2 * np.cos(np.arange(3.0)) * c)
    assert len(recipes._RECIPES) == 1


@settings(max_examples=30, deadline=None)
@given(program=st.lists(ops, min_size=1, max_size=6), seed=st.integers(0, 2 ** 16))
def test_random_graphs_from_a_recipe_match_a_fresh_analysis(program, seed):
    recipes._RECIPES.clear()  # (the fixture runs once for all examples)
    rng = np.random.default_rng(seed)
    args = [rng.uniform(-1, 1, size=(2, 3)), rng.uniform(-1, 1, size=(3,))]
    leaves = [tg.delayed(a) for a in args]
    tg.grad(build(program, tnp, leaves), leaves)
    assert len(recipes._RECIPES) == 1  # (the recipe the next graph takes)
    leaves = [tg.delayed(a * 0.5) for a in args]
    y = build(program, tnp, leaves)
    grads = tg.grad(y, leaves)
    fresh = fresh_grads(y, leaves)
    assert shape_of_graph(grads) == shape_of_graph(fresh)
    values = tg.compute(*grads, scheduler="sync")
    expected = tg.compute(*fresh, scheduler="threads")
    assert [v.tobytes() for v in values] == [v.tobytes() for v in expected]
    # the same written in plain NumPy, traced
    for scale in (1.0, 0.5):
        leaves = [tg.delayed(a * scale) for a in args]
        y = tg.delayed(lambda *xs: build(program, np, xs))(*leaves)
        grads = tg.grad(y, leaves)
    assert len(recipes._RECIPES) == 2
    fresh = fresh_grads(y, leaves)
    assert shape_of_graph(grads) == shape_of_graph(fresh)
    traced = tg.compute(*grads, scheduler="sync")
    assert [v.tobytes() for v in traced] == [v.tobytes() for v in tg.compute(*fresh)]
    for a, b in zip(traced, values):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- computing them again

def steps(make_loss, n=4):
    """``n`` training-step graphs of one structure, each computed on "sync" and with the
    usual path forced (no optimization passes but the default's), with their recipe."""
    out = []
    for i in range(n):
        y, params = make_loss(i)
        grads = tg.grad(y, params)
        fast = tg.compute(y, *grads, scheduler="sync")
        usual = tg.compute(y, *grads, scheduler="threads")
        out.append((fast, usual, grads))
    return out


def test_a_recipes_gradients_computed_again_run_its_written_out_run_with_the_same_bits():
    for fast, usual, grads in steps(lambda i: mlp(rng=i)):
        assert [v.tobytes() for v in fast] == [v.tobytes() for v in usual]
    assert written(grads)


def written(grads):
    """Whether the recipe of ``grads`` has a written-out run."""
    return any(run is not recipe_runs._SEEN for run in grads[0]._origin[0].runs.values())


def test_traced_layers_computed_again_keep_their_bits():
    @tg.delayed
    def layer(x, w, b):
        return np.tanh(x @ w + b)

    def loss(i):
        r = np.random.default_rng(i)
        w, b = tg.delayed(r.normal(size=(3, 2))), tg.delayed(r.normal(size=2))
        return tnp.sum(layer(r.normal(size=(4, 3)), w, b) ** 2), [w, b]

    for fast, usual, grads in steps(loss):
        assert [v.tobytes() for v in fast] == [v.tobytes() for v in usual]
    assert written(grads)


def test_a_failing_task_in_a_written_out_run_is_named():
    @tg.delayed
    def checked(x):
        if np.any(x > 10):
            raise ValueError("too large")
        return x * 2.0

    for scale in (1.0, 2.0, 3.0):
        x = tg.delayed(np.full(2, scale))
        y = tnp.sum(checked(x))
        tg.compute(y, *tg.grad(y, [x]), scheduler="sync")
    x = tg.delayed(np.full(2, 100.0))
    y = tnp.sum(checked(x))
    grads = tg.grad(y, [x])
    assert written(grads)
    with pytest.raises(ValueError, match="too large") as info:
        tg.compute(y, *grads, scheduler="sync")
    assert any("checked-" in note for note in info.value.__notes__)


def test_other_requests_are_computed_as_usual():
    results = []
    for i in range(3):
        y, params = mlp(rng=i)
        grads = tg.grad(y, params)
        other = tg.grad(y, params)
        results.append((
            tg.compute(grads[1], grads[3], scheduler="sync"),  # a subset: a request of its own
            tg.compute(y, grads[0], other[0], scheduler="sync"),  # two grad calls
            tg.compute(y, *grads, y * 2.0, scheduler="sync"),  # a node outside the recipe
            tg.compute(y, *grads, scheduler="sync", optimize_graph=["cse"]),
        ))
    for (sub, two, extra, cse), i in zip(results, range(3)):
        y, params = mlp(rng=i)
        expected = tg.compute(y, *tg.grad(y, params), scheduler="threads")
        assert [v.tobytes() for v in sub] == [expected[2].tobytes(), expected[4].tobytes()]
        assert two[1].tobytes() == two[2].tobytes() == expected[1].tobytes()
        assert extra[-1] == 2 * expected[0]
        for a, b in zip(cse, expected):
            np.testing.assert_allclose(a, b, rtol=1e-12)


def test_callbacks_see_every_task_of_a_graph_computed_again():
    for i in range(3):
        y, params = mlp(rng=i)
        grads = tg.grad(y, params)
        with tg.Profiler() as prof:
            tg.compute(y, *grads, scheduler="sync")
        assert len(prof.results) == sum(t.func is not None for t in
                                        collect_graph([y, *grads]).values())


def test_a_wrt_outside_the_graph_computed_in_another_way_gets_its_own_run():
    y_of = lambda: tnp.sum(tg.delayed(np.ones(2)) * 3.0)  # noqa: E731
    for w in [tg.delayed(np.ones(3))] * 3 + [tg.delayed(np.ones)(5)] * 3:
        y = y_of()
        g = tg.grad(y, [w])
        assert tg.compute(y, *g, scheduler="sync")[1].shape == tg.compute(w)[0].shape


def test_vjp_gradients_are_never_run_from_a_recipe_run():
    x = tg.delayed(np.arange(3.0))
    for c in (np.ones(3), tg.delayed(np.arange(3.0)), np.full(3, 2.0)):
        g = tg.vjp(tnp.sin(x) * 2.0, x, c)
        value = tg.compute(g, scheduler="sync")[0]
        np.testing.assert_allclose(value, 2 * np.cos(np.arange(3.0)) * tg.compute(c)[0])


def test_leaves_sharing_a_name_are_refused_every_time():
    for _ in range(3):
        a = tg.delayed(np.ones(2), name="w")
        b = tg.delayed(np.full(2, 2.0), name="w")
        y = tnp.sum(a * tnp.sin(b))
        grads = tg.grad(y, [a])
        with pytest.raises(ValueError, match="share the key"):
            tg.compute(y, *grads, scheduler="sync")


@settings(max_examples=20, deadline=None)
@given(program=st.lists(ops, min_size=1, max_size=6), seed=st.integers(0, 2 ** 16))
def test_random_graphs_computed_again_match_the_usual_run(program, seed):
    rng = np.random.default_rng(seed)
    args = [rng.uniform(-1, 1, size=(2, 3)), rng.uniform(-1, 1, size=(3,))]

    def loss(i):
        leaves = [tg.delayed(a * (1 + i / 4)) for a in args]
        return build(program, tnp, leaves), leaves

    for fast, usual, _ in steps(loss, 3):
        assert [v.tobytes() for v in fast] == [v.tobytes() for v in usual]


def test_one_graph_computed_three_times_runs_its_written_out_run_even_without_a_recipe():
    w = tg.delayed(np.arange(4.0).reshape(2, 2))
    y = tnp.sum(tnp.concatenate([w, w * 2.0]) ** 2)  # (nested: no signature)
    grads = tg.grad(y, [w])
    values = [tg.compute(y, *grads, scheduler="sync") for _ in range(3)]
    assert written(grads)
    assert recipes._RECIPES == {}
    for v in values[1:]:
        assert [a.tobytes() for a in v] == [a.tobytes() for a in values[0]]
    np.testing.assert_allclose(values[2][1], 2 * np.arange(4.0).reshape(2, 2) * 5)


def test_a_registration_drops_the_written_out_runs_of_graphs_built_before():
    y, params = mlp()
    grads = tg.grad(y, params)
    first = [tg.compute(y, *grads, scheduler="sync") for _ in range(3)]
    assert written(grads)
    tg.defvjp(lambda v: v, lambda ans, v: lambda g: g)  # (any registration)
    again = tg.compute(y, *grads, scheduler="sync")
    assert not written(grads)
    assert [v.tobytes() for v in again] == [v.tobytes() for v in first[0]]


# ---------------------------------------------------------------- from a review

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
