"""grad / vjp: the worked examples, the shape of the backward graph, and errors."""

import operator
import re

import numpy as np
import pytest

import taskgrad as tg
import taskgrad.numpy as tnp
from taskgrad.autodiff import MissingRuleError

SCHEDULERS = ["sync", "threads"]


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_micrograd_example(scheduler):
    x, y, z = tg.delayed(1.0), tg.delayed(3.0), tg.delayed(-3.0)
    g = (x + y) * z
    value, *grads = tg.compute(g, *tg.grad(g, [x, y, z]), scheduler=scheduler)
    assert value == -12.0
    assert [float(v) for v in grads] == [-3.0, -3.0, 4.0]


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_exp_sin_square_against_analytic_derivative(scheduler):
    xs = np.linspace(-2, 2, 7)
    x = tg.delayed(xs)
    f = tnp.exp(tnp.sin(x ** 2))
    g = tg.vjp(f, x, np.ones(7)).compute(scheduler=scheduler)
    np.testing.assert_allclose(g, np.exp(np.sin(xs ** 2)) * np.cos(xs ** 2) * 2 * xs)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_fan_out_accumulates(scheduler):
    x = tg.delayed(2.0)
    a = x * 3.0
    y = a * a + a + tnp.sin(x)  # x used twice, a three times
    assert float(tg.grad(y, x).compute(scheduler=scheduler)) == pytest.approx(
        18 * 2.0 + 3 + np.cos(2.0))


def test_same_argument_twice_in_one_call():
    x = tg.delayed(np.array([1.0, -2.0]))
    y = tnp.sum(tnp.multiply(x, x))
    np.testing.assert_array_equal(tg.grad(y, x).compute(), [2.0, -4.0])


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_wrt_intermediate_node(scheduler):
    x = tg.delayed(np.array([0.5, 1.0]))
    h = tnp.tanh(x)
    y = tnp.sum(h * h)
    gh, gx = tg.compute(*tg.grad(y, [h, x]), scheduler=scheduler)
    np.testing.assert_allclose(gh, 2 * np.tanh([0.5, 1.0]))
    np.testing.assert_allclose(gx, 2 * np.tanh([0.5, 1.0]) * (1 - np.tanh([0.5, 1.0]) ** 2))


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_unrelated_wrt_gets_zeros_of_its_shape_and_dtype(scheduler):
    x = tg.delayed(np.ones(3))
    w = tg.delayed(np.ones((2, 2), np.float32))
    n = tg.delayed(np.arange(4))
    y = tnp.sum(x)
    gw, gn = tg.compute(*tg.grad(y, (w, n)), scheduler=scheduler)
    assert gw.dtype == np.float32 and gw.shape == (2, 2) and not gw.any()
    assert gn.shape == (4,) and not gn.any()


def test_grad_returns_the_container_type_given():
    x = tg.delayed(1.0)
    y = x * 2.0
    assert isinstance(tg.grad(y, [x]), list)
    assert isinstance(tg.grad(y, (x,)), tuple)
    assert isinstance(tg.grad(y, x), tg.Delayed)


def test_grad_of_y_with_respect_to_itself_is_one():
    x = tg.delayed(3.0)
    y = x * x
    assert float(tg.grad(y, y).compute()) == 1.0


def test_non_scalar_y_without_cotangent_is_a_clear_error():
    x = tg.delayed(np.ones(3))
    y = tnp.sin(x)
    g = tg.grad(y, x)
    with pytest.raises(ValueError, match="scalar y.*shape \\(3,\\).*tg.vjp"):
        g.compute(scheduler="sync")


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_vjp_with_explicit_cotangent(scheduler):
    x = tg.delayed(np.array([1.0, 2.0]))
    y = x * x
    ct = tg.delayed(np.array([3.0, 5.0]))
    np.testing.assert_array_equal(tg.vjp(y, x, ct).compute(scheduler=scheduler), [6.0, 20.0])
    np.testing.assert_array_equal(tg.vjp(y, x, np.array([1.0, 1.0])).compute(), [2.0, 4.0])


def test_vjp_cotangent_of_another_shape_is_a_clear_error():
    x = tg.delayed(np.array([1.0, 2.0, 3.0]))
    y = x * 2.0
    for cotangent in (np.ones(4), tg.delayed(np.ones((3, 1))), 1.0):
        with pytest.raises(ValueError, match="cotangent has shape .* but the value of 'mul-"):
            tg.vjp(y, x, cotangent).compute(scheduler="sync")
    np.testing.assert_array_equal(tg.vjp(y, x, [1.0, 0.0, 2.0]).compute(), [2.0, 0.0, 4.0])
    with pytest.raises(ValueError, match="cotangent is complex, but the value of 'mul-.* real"):
        tg.vjp(y, x, np.ones(3) * 1j).compute(scheduler="sync")


def test_vjp_is_linear_in_its_cotangent_and_differentiable_in_it():
    """The double-VJP trick: differentiating a VJP in its cotangent gives a JVP."""
    x = tg.delayed(np.array([1.0, 2.0, 3.0]))
    c = tg.delayed(np.array([0.5, -1.0, 2.0]))
    v = np.array([1.0, 10.0, 100.0])
    u = tg.vjp(tnp.sin(x), x, c)  # cos(x) * c
    jvp = tg.grad(tnp.sum(u * v), c)  # cos(x) * v: the JVP of sin at x along v
    np.testing.assert_allclose(jvp.compute(scheduler="sync"), np.cos([1.0, 2.0, 3.0]) * v)


def test_bad_arguments():
    x = tg.delayed(1.0)
    with pytest.raises(TypeError, match="y must be a taskgrad Delayed"):
        tg.grad(1.0, x)
    with pytest.raises(TypeError, match="wrt\\[1\\] must be a taskgrad Delayed"):
        tg.grad(x * 2, [x, 3.0])
    with pytest.raises(TypeError, match="wrt must be"):
        tg.grad(x * 2, {x})


def test_grad_runs_nothing():
    calls = []

    @tg.delayed
    def f(x):
        calls.append(1)
        return np.sin(x)

    x = tg.delayed(1.0)
    tg.grad(f(x) * 2.0, x)
    assert calls == []


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_forward_runs_once_with_tnp_and_traced_functions(scheduler):
    calls = []

    @tg.delayed
    def layer(x, w):
        calls.append(1)
        return np.tanh(x @ w)

    x = tg.delayed(np.ones((2, 3)))
    w = tg.delayed(np.full((3, 2), 0.1))
    y = tnp.sum(layer(x, w) ** 2)
    value, gx, gw = tg.compute(y, *tg.grad(y, [x, w]), scheduler=scheduler)
    assert calls == [1]
    expected = np.tanh(np.full((2, 2), 0.3))
    assert value == pytest.approx(np.sum(expected ** 2))
    np.testing.assert_allclose(gw, np.ones((3, 2)) * 2 * 2 * expected[0] * (1 - expected[0] ** 2))


def test_backward_graph_structure():
    x = tg.delayed(np.ones(3), name="x")
    w = tg.delayed(np.ones(3), name="w")
    a = x * w
    b, c = a * 2.0, tnp.sin(a)
    s = b + c
    y = tnp.sum(s)
    gx = tg.grad(y, x)
    graph = dict(gx.graph)
    forward = {k for k, t in graph.items() if t.role == "forward"}
    backward = {k for k, t in graph.items() if t.role == "backward"}
    # the backward graph reuses the forward nodes its rules read
    assert forward == {"x", "w", a.key, b.key, c.key, s.key, y.key}
    # one task per (forward task, active dependency), one sum where ``a`` fans out, a seed,
    # and a ``describe`` task for each value that rules read only for its shape and dtype
    # (not for ``a``, whose value sin's rule reads, nor ``y``, whose value the seed reads)
    kinds = sorted(k.split("-")[0] for k in backward)
    assert kinds == ["grad"] + ["meta"] * 3 + ["seed"] + ["vjp"] * 6
    described = {graph[k].dependencies[0] for k in backward if k.startswith("meta-")}
    assert described == {b.key, c.key, s.key}
    assert any(k.startswith(f"grad-{a.key}") for k in backward)
    # nothing for w: it is not a wrt, so the multiply's rule for w is never built
    assert not any(k.startswith(f"vjp-{a.key}-1") for k in backward)


def test_fan_in_sum_order_is_fixed_by_the_graph():
    x = tg.delayed(np.float32(0.1))
    terms = [x * np.float32(c) for c in (1e8, 1.0, -1e8, 3.0, 1e-3)]
    y = terms[0]
    for t in terms[1:]:
        y = y + t
    results = {s: tg.grad(y, [t for t in terms]) for s in SCHEDULERS}
    values = {s: [np.asarray(v).tobytes() for v in tg.compute(*g, scheduler=s)]
              for s, g in results.items()}
    assert values["sync"] == values["threads"]


@pytest.mark.parametrize("scheduler,length", [("sync", 100_000), ("threads", 10_000)])
def test_deep_chain_does_not_recurse(scheduler, length):
    x = tg.delayed(0.0)
    y = x
    for _ in range(length):
        y = y + 1.0
    assert float(tg.grad(y, x).compute(scheduler=scheduler)) == 1.0


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_deep_traced_function_does_not_recurse(scheduler):
    @tg.delayed
    def long_body(x):
        for _ in range(20_000):
            x = x * 1.0
        return np.sum(x)

    x = tg.delayed(np.ones(2))
    np.testing.assert_array_equal(tg.grad(long_body(x), x).compute(scheduler=scheduler), [1, 1])


# ---------------------------------------------------------------- custom rules

@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_delayed_vjp_keyword(scheduler):
    @tg.delayed(vjp=(lambda ans, x, y: lambda g: g * 10.0, lambda ans, x, y: lambda g: g * 20.0))
    def opaque(x, y):
        return float(x) + float(y)  # float() would defeat tracing: the rule is used instead

    x, y = tg.delayed(1.0), tg.delayed(2.0)
    assert tg.compute(*tg.grad(opaque(x, y), [x, y]), scheduler=scheduler) == (10.0, 20.0)


def test_defvjp_on_a_plain_function_and_registered_rule_wins_over_tracing():
    def cube(x):
        return x ** 3

    tg.defvjp(cube, lambda ans, x: lambda g: g * 3 * x ** 2 + 1000.0)  # deliberately off
    x = tg.delayed(2.0)
    assert float(tg.grad(tg.delayed(cube)(x), x).compute()) == 1012.0


def test_custom_rule_for_a_solver_matches_finite_differences():
    def solve(a, b):
        return np.linalg.solve(a, b)

    tg.defvjp(solve,
              lambda ans, a, b: lambda g: -np.outer(np.linalg.solve(a.T, g), ans),
              lambda ans, a, b: lambda g: np.linalg.solve(a.T, g))
    lazy_solve = tg.delayed(solve)
    a = np.array([[3.0, 1.0], [1.0, 2.0]])
    b = np.array([1.0, -1.0])
    tg.check_grads(lambda A, B: tnp.sum(tnp.sin(lazy_solve(A, B))), a, b)


def test_defvjp_none_marks_an_argument_without_gradient():
    def scale(x, n):
        return x * n

    tg.defvjp(scale, lambda ans, x, n: lambda g: g * n, None)
    x, n = tg.delayed(2.0), tg.delayed(3.0)
    gx, gn = tg.compute(*tg.grad(tg.delayed(scale)(x, n), [x, n]))
    assert (float(gx), float(gn)) == (3.0, 0.0)


def test_a_rule_registered_after_tracing_takes_effect():
    """The tracer caches what the registries say of each function: every registration must
    reach it, whether it gives, replaces, or removes a gradient, or composes the function."""
    from taskgrad.autodiff import rules

    @tg.primitive
    def double(x):
        return 2.0 * x

    x = tg.delayed(np.ones(3))
    traced = tg.delayed(lambda a: np.sum(double(a)))

    def gradient():
        return tg.grad(traced(x), x).compute(scheduler="sync")

    with pytest.raises(MissingRuleError, match="double"):
        gradient()
    tg.defvjp(double, lambda ans, a: lambda g: 2.0 * g)
    np.testing.assert_array_equal(gradient(), [2.0, 2.0, 2.0])
    tg.defvjp(double, lambda ans, a: lambda g: 3.0 * g)  # deliberately off: the new rule wins
    np.testing.assert_array_equal(gradient(), [3.0, 3.0, 3.0])
    tg.defvjp(double, None)
    np.testing.assert_array_equal(gradient(), [0.0, 0.0, 0.0])
    rules.defvjp_argnum(double, lambda pos: lambda ans, a: lambda g: 4.0 * g)
    np.testing.assert_array_equal(gradient(), [4.0, 4.0, 4.0])
    rules.defcomposite(double, lambda a: a * 5.0)  # deliberately off: traced through a * 5
    try:
        np.testing.assert_array_equal(gradient(), [5.0, 5.0, 5.0])
    finally:
        del rules._COMPOSITES[double]


def test_tracing_keeps_no_unregistered_function_alive():
    """The tracer's cache holds only functions the registries hold anyway."""
    import gc
    import weakref

    x = tg.delayed(np.arange)(3.0)

    def traced_once():
        @tg.primitive
        def twice(v):
            return v * 2

        with pytest.raises(MissingRuleError):
            tg.grad(tg.delayed(lambda v: np.sum(twice(v)))(x), x).compute(scheduler="sync")
        return weakref.ref(twice)

    ref = traced_once()
    gc.collect()
    assert ref() is None


def test_defvjp_rejects_bad_rules():
    with pytest.raises(TypeError, match="at least one rule"):
        tg.defvjp(np.linalg.det)
    with pytest.raises(TypeError, match="must be callable"):
        tg.defvjp(np.linalg.det, 3)


# ---------------------------------------------------------------- missing rules

def test_missing_rule_error_names_function_and_operation():
    @tg.delayed
    def uses_sinc(x):
        return np.sum(np.sinc(x))

    x = tg.delayed(np.ones(2))
    y = uses_sinc(x)
    assert y.compute() == pytest.approx(2 * np.sinc(1.0))  # forward alone is fine
    g = tg.grad(y, x)
    with pytest.raises(MissingRuleError, match="'uses_sinc'.*numpy.sinc.*tg.defvjp"):
        g.compute(scheduler="sync")


def test_missing_rule_error_on_threads_keeps_its_type():
    @tg.delayed
    def to_list(x):
        return np.array(x.tolist())

    x = tg.delayed(np.ones(2))
    with pytest.raises(MissingRuleError, match="to_list"):
        tg.grad(tnp.sum(to_list(x)), x).compute(scheduler="threads")


@tg.delayed
def _assign_into_traced(x):
    y = x * 1.0
    y[0] = 5.0
    return np.sum(y)


@tg.delayed
def _store_element_into_plain(x):
    out = np.zeros(3)
    out[0] = x[1]
    return np.sum(out)


@tg.delayed
def _store_slice_into_plain(x):
    out = np.zeros(3)
    out[:2] = x[1:]
    return np.sum(out)


@pytest.mark.parametrize("func, error, message", [
    (_assign_into_traced, MissingRuleError,
     "'_assign_into_traced'.*item assignment.*np.where, np.concatenate"),
    (_store_element_into_plain, ValueError,
     "sequence(.|\n)*_store_element_into_plain.*storing a traced value into a plain NumPy array"),
    (_store_slice_into_plain, MissingRuleError,
     "'_store_slice_into_plain'.*storing into a plain array.*np.where, np.concatenate"),
])
def test_in_place_assignment_is_a_clear_error(func, error, message):
    """NumPy code that writes traced values in place cannot be traced: the error says so and
    what to write instead (the forward pass alone still runs)."""
    x = tg.delayed(np.array([1.0, 2.0, 3.0]))
    assert np.isfinite(func(x).compute())
    with pytest.raises(error) as info:
        tg.grad(func(x), x).compute(scheduler="sync")
    text = str(info.value) + "\n" + "\n".join(getattr(info.value, "__notes__", []))
    assert re.search(message, text), text


@tg.delayed
def _augmented(a):
    s = a * 1.0
    alias = s
    s += a
    s *= a
    s -= 0.5
    s /= 2.0
    s **= 2
    return np.sum(alias)


def test_augmented_assignment_updates_the_traced_value_as_numpy_does():
    """An alias of the updated array sees the change, with or without a gradient."""
    xv = np.array([[1.0, 2.0], [0.5, -1.0]])
    x = tg.delayed(xv)
    y = _augmented(x)
    alone, (with_grad, _) = y.compute(), tg.compute(y, tg.grad(y, x))
    assert alone == with_grad == np.sum(((2 * xv * xv - 0.5) / 2.0) ** 2)
    tg.check_grads(_augmented, xv)


def test_non_float_results_are_not_traced():
    @tg.delayed
    def masked(x):
        idx = np.argmax(x)
        return x[idx] * np.sum(x > 0)

    x = tg.delayed(np.array([1.0, 3.0, -2.0]))
    np.testing.assert_array_equal(tg.grad(masked(x), x).compute(), [0.0, 2.0, 0.0])


def test_methods_and_attributes_on_traced_values():
    @tg.delayed
    def body(x, w):
        return (x.T.dot(w).reshape(-1).sum() + x.mean(axis=0).max()
                + x.astype(np.float64).transpose().ravel()[0])

    tg.check_grads(body, np.arange(6.0).reshape(2, 3) / 7, np.ones((2, 2)))


def test_delayed_attribute_and_method_tasks_are_differentiable():
    x = tg.delayed(np.arange(6.0).reshape(2, 3))
    y = x.T.sum(axis=0).mean()
    np.testing.assert_allclose(tg.grad(y, x).compute(), np.full((2, 3), 1 / 2))


def test_nout_function_outputs_are_differentiable():
    @tg.delayed(nout=2)
    def split(x):
        return np.sin(x), np.cos(x)

    x = tg.delayed(np.array([0.2, 0.4]))
    s, c = split(x)
    y = tnp.sum(s * 2.0) + tnp.sum(c)
    np.testing.assert_allclose(tg.grad(y, x).compute(), 2 * np.cos([0.2, 0.4]) - np.sin([0.2, 0.4]))
    only_s = tg.grad(tnp.sum(s), x).compute(scheduler="threads")
    np.testing.assert_allclose(only_s, np.cos([0.2, 0.4]))


def test_container_arguments_of_traced_functions():
    @tg.delayed
    def total(parts, scale=1.0):
        return np.sum(np.concatenate(parts)) * scale["s"]

    a, b = tg.delayed(np.ones(2)), tg.delayed(np.ones(3))
    s = tg.delayed(2.0)
    ga, gb, gs = tg.compute(*tg.grad(total([a, b], scale={"s": s}), [a, b, s]))
    np.testing.assert_array_equal(ga, [2.0, 2.0])
    np.testing.assert_array_equal(gb, [2.0, 2.0, 2.0])
    assert float(gs) == 5.0


def test_rule_functions_reject_keyword_dependencies():
    x = tg.delayed(np.ones(3))
    lo = tg.delayed(0.0)
    y = tnp.sum(tnp.clip(x, a_min=lo, a_max=2.0))
    with pytest.raises(TypeError, match="positional"):
        tg.grad(y, lo)


def test_operator_getitem_rule_is_shared_with_numpy_indexing():
    from taskgrad.autodiff.rules import rule_for

    assert rule_for(operator.getitem, 0) is not None
    assert rule_for(operator.add, 0) is rule_for(np.add, 0)


def test_delayed_container_nodes_are_differentiable():
    a, b = tg.delayed(np.array([1.0, 2.0])), tg.delayed(np.array([3.0, 5.0]))
    pair = tg.delayed([a, b])
    y = tnp.sum(pair[0] * pair[1])
    ga, gb = tg.compute(*tg.grad(y, [a, b]), scheduler="threads")
    np.testing.assert_array_equal(ga, [3.0, 5.0])
    np.testing.assert_array_equal(gb, [1.0, 2.0])


def test_pure_nodes_and_persisted_leaves():
    x = tg.delayed(np.array([1.0, 2.0])).persist()
    sq = tg.delayed(np.square, pure=True)
    y = tnp.sum(sq(x) + sq(x))  # equal pure calls share one node
    np.testing.assert_array_equal(tg.grad(y, x).compute(), [4.0, 8.0])


def test_second_grad_call_shares_the_forward_and_tape_tasks():
    calls = []

    @tg.delayed
    def f(x):
        calls.append(1)
        return np.sum(np.exp(x))

    x = tg.delayed(np.zeros(2))
    y = f(x)
    g1, g2 = tg.grad(y, x), tg.grad(y, x)
    a, b = tg.compute(g1, g2, scheduler="sync")
    np.testing.assert_array_equal(a, b)
    assert len(calls) == 1


def _tanh_layers(h, *params):
    """A plain-NumPy tanh MLP: differentiated by tracing it."""
    for w, b in zip(params[::2], params[1::2]):
        h = np.tanh(h @ w + b)
    return np.sum(h * h)


def _tanh_mlp_peak(layers=12, batch=128, width=128, traced=False):
    """Peak traced memory of computing a deep MLP's loss and weight gradients, written
    with ``tnp`` (one task per op) or as one plain-NumPy task (``traced``)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    ws = [tg.delayed(rng.normal(size=(width, width)) / 12, name=f"w{i}") for i in range(layers)]
    bs = [tg.delayed(np.zeros(width), name=f"b{i}") for i in range(layers)]
    h = tg.delayed(rng.normal(size=(batch, width)), name="x")
    if traced:
        loss = tg.delayed(_tanh_layers)(h, *[p for wb in zip(ws, bs) for p in wb])
    else:
        for w, b in zip(ws, bs):
            h = tnp.tanh(h @ w + b)
        loss = tnp.sum(h * h)
    grads = tg.grad(loss, ws)
    tracemalloc.start()
    try:
        values = tg.compute(loss, *grads, scheduler="sync")
        return tracemalloc.get_traced_memory()[1], values
    finally:
        tracemalloc.stop()


def test_backward_keeps_only_the_forward_values_its_rules_read(monkeypatch):
    """``x @ W`` and ``... + b`` are read by their rules only for their shapes: with
    ``describe`` tasks run right after them, they are freed during the forward pass."""
    from taskgrad.autodiff import rules

    lean, lean_values = _tanh_mlp_peak()
    monkeypatch.setattr(rules, "_SHAPE_ONLY", {})
    rules._registered()  # (what a registration does: grad's caches forget the old entries)
    try:
        kept, kept_values = _tanh_mlp_peak()
    finally:
        monkeypatch.undo()
        rules._registered()
    for a, b in zip(lean_values, kept_values):
        np.testing.assert_array_equal(a, b)
    assert lean < 0.75 * kept, (lean, kept)


def test_a_traced_tape_keeps_only_the_values_its_rules_read(monkeypatch):
    """The same for plain NumPy traced in one task: the tape keeps the shape of ``x @ W``
    and ``... + b``, not the arrays, so they die when the traced function drops them."""
    from taskgrad.autodiff import rules, trace

    lean, lean_values = _tanh_mlp_peak(traced=True)
    monkeypatch.setattr(trace, "_SHAPE_ONLY", {})
    rules._registered()  # (what a registration does: the tracer's cache forgets its entries)
    try:
        kept, kept_values = _tanh_mlp_peak(traced=True)
    finally:
        monkeypatch.undo()
        rules._registered()
    for a, b in zip(lean_values, kept_values):
        np.testing.assert_array_equal(a, b)
    assert lean < 0.75 * kept, (lean, kept)


def _scaled_chain_peak(n, traced):
    """Peak traced memory of the gradient of a chain of ``n`` scalings (and divisions) by
    constants of a 1 MB array, as ``tnp`` tasks or traced in one task."""
    import tracemalloc

    def chain(d):
        for i in range(n):
            d = d * 1.0001 if i % 2 else d / 2.0
        return d

    w = tg.delayed(np.ones(125_000))
    loss = tg.delayed(lambda a: np.sum(chain(a)))(w) if traced else tnp.sum(chain(w))
    grad = tg.grad(loss, w)
    tracemalloc.start()
    try:
        value = grad.compute(scheduler="sync")
        return tracemalloc.get_traced_memory()[1], value
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("traced", [False, True])
def test_scaling_by_a_constant_does_not_keep_the_scaled_value(traced):
    """``x * c`` and ``x / c`` with a constant ``c``: the rule for ``x`` reads only ``x``'s
    shape, so memory does not grow with the chain's length."""
    short, _ = _scaled_chain_peak(4, traced)
    long, value = _scaled_chain_peak(40, traced)
    assert long < short + 2 * 1_000_000, (short, long)
    np.testing.assert_allclose(value, np.full(125_000, 1.0001 ** 20 / 2.0 ** 20))


def test_a_task_returning_a_list_can_be_an_argument_of_a_differentiated_op():
    """Its shape and dtype are read as NumPy sees it (the ``describe`` of a list)."""
    values = tg.delayed(lambda: [1.0, 2.0])()
    x = tg.delayed(np.array([3.0, 4.0]))
    y = tnp.sum(tnp.add(values, x) * x)
    np.testing.assert_array_equal(tg.grad(y, x).compute(), [7.0, 10.0])


def test_a_rule_registered_again_replaces_the_one_grad_used_before():
    """grad keeps what the registry says of each function between graphs; registering
    new rules (or shape-only declarations) for a function must be seen by the next grad."""
    from taskgrad.autodiff import rules

    @tg.delayed
    def scale(x):
        return 3.0 * x

    tg.defvjp(scale.__wrapped__, lambda ans, x: lambda g: 3.0 * g)
    x = tg.delayed(2.0)
    assert tg.grad(scale(x), x).compute(scheduler="sync") == 3.0
    tg.defvjp(scale.__wrapped__, lambda ans, x: lambda g: 5.0 * g)  # a (wrong) rule wins
    assert tg.grad(scale(x), x).compute(scheduler="sync") == 5.0
    rules.uses_only_shapes(scale.__wrapped__, args=(0,))
    assert tg.grad(scale(x), x).compute(scheduler="sync") == 5.0


@pytest.mark.parametrize("traced", [False, True])
def test_the_order_compute_finds_in_one_walk_is_the_graphs_postorder(traced):
    """A backward graph (describe tasks hoisted after their inputs; traced layers whose
    forward values are read from their tapes) is ordered as graph.postorder orders it,
    before and after the tapes are fused."""
    from taskgrad.autodiff.fuse_tape import fuse_tapes
    from taskgrad.delayed import collect_graph, collect_in_order
    from taskgrad.graph import postorder
    from taskgrad.optimize import optimize_in_order

    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 4))
    W1, W2 = tg.delayed(rng.normal(size=(4, 3))), tg.delayed(rng.normal(size=(3, 2)))
    if traced:
        layer = tg.delayed(lambda a, W: np.tanh(a @ W))
        loss = tg.delayed(lambda h: np.sum(h ** 2))(layer(layer(x, W1), W2))
    else:
        loss = tnp.sum(tnp.tanh(tnp.tanh(x @ W1) @ W2) ** 2)
    outs = [loss, *tg.grad(loss, [W1, W2])]
    keys = [d.key for d in outs]
    graph, order = collect_in_order(outs)
    assert graph == collect_graph(outs)
    assert order == postorder(graph, keys)
    fused, fused_order = optimize_in_order(graph, order, keys)
    assert {k: repr(t) for k, t in fused.items()} == \
        {k: repr(t) for k, t in fuse_tapes(graph).items()}
    assert fused_order == postorder(fused, keys)  # (each tape moved before its value)
    for a, b in zip(tg.compute(*outs, scheduler="sync"),
                    tg.compute(*outs, scheduler="sync", optimize_graph=["cull"])):
        np.testing.assert_array_equal(a, b)  # (ordered by postorder after the pass)
