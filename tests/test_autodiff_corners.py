"""Corners of differentiation that once gave wrong answers or unclear errors.

Each test states the right answer and how it is known (worked by hand,
finite differences, or NumPy's own forward value).
"""

import numpy as np
import pytest

import taskgrad as tg
import taskgrad.numpy as tnp
from taskgrad.autodiff.rules import MissingRuleError


def grad_of(body, value, scheduler="sync"):
    x = tg.delayed(value)
    return tg.grad(tg.delayed(body)(x), x).compute(scheduler=scheduler)


# ---------------------------------------------------------------- tuple and list values

@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_a_tuple_value_read_by_two_consumers_adds_their_cotangents(scheduler):
    # y = sum(concat(x, 2x)^2) + sum(3 * stack(x, 2x)) -> dy/dx = 2x + 8x + 3 + 6
    x = tg.delayed(np.array([1.0, 2.0]))
    pair = tg.delayed(lambda x: (x, x * 2.0))(x)
    y = tnp.sum(tnp.concatenate(pair) ** 2) + tnp.sum(tnp.stack(pair) * 3.0)
    np.testing.assert_allclose(tg.grad(y, x).compute(scheduler=scheduler), [19.0, 29.0])


def test_the_same_inside_a_traced_function():
    def body(x):
        pair = (x, x * 2.0)
        return np.sum(np.concatenate(pair) ** 2) + np.sum(np.stack(pair) * 3.0)
    np.testing.assert_allclose(grad_of(body, np.array([1.0, 2.0])), [19.0, 29.0])


def test_a_list_leaf_gets_one_cotangent_per_item():
    a = np.array([1.0, 2.0])
    leaf = tg.delayed([a, 3 * a])
    y = tnp.sum(tnp.concatenate(leaf) ** 2) + tnp.sum(tnp.stack(leaf))
    g = tg.grad(y, leaf).compute(scheduler="sync")
    assert len(g) == 2
    np.testing.assert_allclose(g[0], 2 * a + 1)
    np.testing.assert_allclose(g[1], 2 * 3 * a + 1)


def test_indexing_and_concatenating_the_same_tuple_add():
    x = tg.delayed(np.array([1.0, 2.0]))
    pair = tg.delayed(lambda x: (x, x * 2.0))(x)
    y = tnp.sum(pair[0] * 5.0) + tnp.sum(tnp.concatenate(pair) * 3.0)
    np.testing.assert_allclose(tg.grad(y, x).compute(scheduler="sync"), [14.0, 14.0])


# ---------------------------------------------------------------- copies and integers

def test_a_traced_copy_is_independent_of_the_original():
    def body(x):
        c = np.copy(x)
        c += 1.0
        d = x.copy()
        d *= 2.0
        return np.sum(x * c) + np.sum(d)   # sum(x^2 + x) + 2 sum(x) -> 2x + 3

    xv = np.array([1.0, 2.0, 3.0])
    x = tg.delayed(xv)
    y = tg.delayed(body)(x)
    value, g = tg.compute(y, tg.grad(y, x), scheduler="sync")
    assert value == body(xv) == 32.0
    np.testing.assert_allclose(g, 2 * xv + 3)


@pytest.mark.parametrize("body, expected", [
    (lambda x: np.sum(x ** 2 * 1.0), [2.0, 4.0, 6.0]),
    (lambda x: np.sum(x) / 2, [0.5, 0.5, 0.5]),
    (lambda x: np.sum((x * x)[1:]) * 1.5, [0.0, 6.0, 9.0]),
])
def test_integer_inputs_of_a_traced_function_are_differentiated(body, expected):
    g = grad_of(body, np.array([1, 2, 3]))
    assert g.dtype == np.float64
    np.testing.assert_allclose(g, expected)


def test_a_float_turned_integer_carries_no_gradient():
    g = grad_of(lambda x: np.sum(x.astype(np.int64) * 1.0) + np.sum(x), np.array([1.5, 2.5]))
    np.testing.assert_allclose(g, [1.0, 1.0])


@pytest.mark.parametrize("traced", [True, False])
def test_an_integer_input_nothing_flows_into_gets_real_zeros(traced):
    x = tg.delayed(np.arange(3))
    y = tg.delayed(lambda x: np.sum(x > 1) * 1.0)(x) if traced else tnp.sum(tg.delayed(1.0))
    g = tg.grad(y, x).compute()
    assert g.dtype == np.float64
    np.testing.assert_array_equal(g, np.zeros(3))


# ---------------------------------------------------------------- complex values

def test_complex_values_are_refused_not_differentiated_wrongly():
    z = tg.delayed(np.array([1.0 + 2.0j]))
    with pytest.raises(MissingRuleError, match="complex"):
        tg.grad(tnp.sum(tnp.abs(z * z)), z).compute(scheduler="sync")
    with pytest.raises(MissingRuleError, match="complex"):
        grad_of(lambda z: np.sum(np.abs(z * z)), np.array([1.0 + 2.0j]))


def test_a_complex_y_is_refused():
    z = tg.delayed(np.array([1.0 + 2.0j]))
    with pytest.raises(ValueError, match="real y"):
        tg.grad(tnp.sum(z), z).compute(scheduler="sync")


def test_check_grads_refuses_complex_arguments():
    with pytest.raises(TypeError, match="argument 0 is complex"):
        tg.check_grads(lambda z: tnp.sum(tnp.abs(z)), np.array([1.0 + 2.0j]))


# ---------------------------------------------------------------- take_along_axis

@pytest.mark.parametrize("x_shape, index_shape, axis", [
    ((3,), (4,), None), ((2, 3), (5,), None), ((1, 3), (2, 2), 1), ((2, 3), (1, 4), 1),
    ((2, 3, 1), (2, 2, 4), -2), ((3, 4), (2, 4), 0),
])
def test_take_along_axis_flattened_and_broadcast(x_shape, index_shape, axis):
    rng = np.random.default_rng(0)
    x = rng.normal(size=x_shape)
    size = x.size if axis is None else x_shape[axis]
    index = rng.integers(0, size, size=index_shape)
    weights = rng.normal(size=np.take_along_axis(x, index, axis).shape)
    tg.check_grads(lambda v: tnp.sum(tnp.take_along_axis(v, index, axis=axis) * weights), x)
    tg.check_grads(tg.delayed(lambda v: np.sum(np.take_along_axis(v, index, axis) ** 2)), x)


def test_take_along_axis_flattened_by_hand():
    v = tg.delayed(np.array([1.0, 2.0, 3.0]))
    y = tnp.sum(tnp.take_along_axis(v, np.array([2, 2, 0]), axis=None) ** 2)
    np.testing.assert_allclose(tg.grad(y, v).compute(), [2.0, 0.0, 12.0])


# ---------------------------------------------------------------- keyword forms

X = np.arange(1.0, 7.0).reshape(2, 3)


@pytest.mark.parametrize("body, expected", [
    (lambda x: np.sum(np.swapaxes(x, axis1=0, axis2=1) ** 2), 2 * X),
    (lambda x: np.sum(np.dot(x, x.T, out=None)), np.broadcast_to(2 * X.sum(0), X.shape)),
    (lambda x: np.sum(np.outer(x, x, out=None)), np.full(X.shape, 2 * X.sum())),
    (lambda x: np.add.reduce(x, axis=None, where=x > 2), (X > 2) * 1.0),
    (lambda x: np.maximum.reduce(x, axis=None, initial=0.0), (X == X.max()) * 1.0),
])
def test_keyword_forms_of_numpy_calls(body, expected):
    np.testing.assert_allclose(grad_of(body, X), expected)


def test_keyword_forms_of_tnp_calls():
    x = tg.delayed(X)
    y = tnp.sum(tnp.swapaxes(x, axis1=0, axis2=1) ** 2)
    np.testing.assert_allclose(tg.grad(y, x).compute(), 2 * X)


def test_a_traced_value_passed_by_keyword_is_a_clear_error():
    with pytest.raises(MissingRuleError, match=r"by keyword \(arrays=\).*pass it by position"):
        grad_of(lambda x: np.sum(np.concatenate(arrays=[x, x])), X)


def test_out_with_a_traced_value_is_a_clear_error():
    buffer = np.empty((2, 2))
    with pytest.raises(MissingRuleError, match="out="):
        grad_of(lambda x: np.sum(np.dot(x, x.T, out=buffer)), X)


# ---------------------------------------------------------------- containers as wrt

@pytest.mark.parametrize("container", [tuple, list])
def test_an_unused_container_wrt_gets_zeros_of_its_items(container):
    W, b = np.ones((2, 2)), np.ones(2)
    params = tg.delayed(container([W, b]))
    g = tg.grad(tnp.sum(tg.delayed(W)), params).compute()
    assert type(g) is container and len(g) == 2
    np.testing.assert_array_equal(g[0], np.zeros((2, 2)))
    np.testing.assert_array_equal(g[1], np.zeros(2))


def test_items_of_a_container_that_y_does_not_read_get_zeros():
    W, b = np.ones((2, 2)), np.ones(2)
    params = tg.delayed((W, b))
    g = tg.grad(tg.delayed(lambda p: np.sum(p[0]))(params), params).compute()
    np.testing.assert_array_equal(g[0], np.ones((2, 2)))
    np.testing.assert_array_equal(g[1], np.zeros(2))


def test_check_grads_takes_a_list_of_numbers():
    tg.check_grads(lambda x: tnp.sum(tnp.sin(x)), [0.1, 0.2])
    with pytest.raises(TypeError, match="not an array of numbers"):
        tg.check_grads(lambda x: x, ["a", "b"])


# ---------------------------------------------------------------- composites

@pytest.mark.parametrize("body", [
    lambda v: np.nansum(v.astype(np.float32), dtype=np.float64),
    lambda v: np.sum(np.hstack([v, v], dtype=np.float32)),
    lambda v: np.sum(np.vstack([v, v], dtype=np.float32)),
])
def test_composites_keep_numpys_dtype_when_differentiated(body):
    xv = np.linspace(0.1, 1.0, 7)
    x = tg.delayed(xv)
    y = tg.delayed(body)(x)
    value, g = tg.compute(y, tg.grad(y, x), scheduler="sync")
    assert np.result_type(value) == np.result_type(body(xv))
    assert g.dtype == np.float64


def test_norm_over_a_one_axis_tuple_is_a_vector_norm():
    x = np.array([[3.0, -4.0], [1.0, 2.0]])
    tg.check_grads(tg.delayed(lambda v: np.sum(np.linalg.norm(v, ord=1, axis=(1,)))), x)
    tg.check_grads(tg.delayed(lambda v: np.sum(np.linalg.norm(v, ord=np.inf, axis=(0,)))), x)


def test_zero_cotangents_of_mixed_containers():
    from taskgrad.autodiff.trace import zeros_like_value

    zeros = zeros_like_value((np.ones(2, np.float32), None, "name", 3, {"k": [2.5]}))
    assert zeros[0].dtype == np.float32 and zeros[0].shape == (2,)
    assert zeros[1] is None and zeros[2] is None
    assert zeros[3].dtype == np.float64 and zeros[3] == 0
    assert zeros[4]["k"][0] == 0


# ---------------------------------------------------------------- found by a second round

@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_a_traced_function_indexing_nested_containers(scheduler):
    params = tg.delayed({"l1": {"W": np.array([1.0, 2.0])}, "l2": {"b": 1.0}, "n": 3})
    loss = tg.delayed(lambda P: np.sum(P["l1"]["W"] ** 2) * P["n"] + P["l2"]["b"] * 2.0)(params)
    g = tg.grad(loss, params).compute(scheduler=scheduler)
    np.testing.assert_allclose(g["l1"]["W"], [6.0, 12.0])
    assert g["l2"]["b"] == 2.0 and g["n"] == 5.0
    assert list(g) == ["l1", "l2", "n"]


def test_a_traced_list_of_pairs_gets_a_list_gradient():
    layers = tg.delayed([(np.array([1.0, 2.0]), 1.0), (np.array([2.0, 4.0]), 1.0)])
    loss = tg.delayed(lambda L: sum(np.sum(W ** 2) + b for W, b in L))(layers)
    g = tg.grad(loss, layers).compute()
    assert type(g) is list
    np.testing.assert_allclose(g[0][0], [2.0, 4.0])
    np.testing.assert_allclose(g[1][0], [4.0, 8.0])
    assert g[0][1] == g[1][1] == 1.0


@pytest.mark.parametrize("body", [
    lambda a: np.sum(a.astype(np.float64) * 0.5),
    lambda a: a.sum(dtype=np.float64) * 0.5,
])
def test_an_integer_input_cast_to_float_gets_its_gradient(body):
    g = grad_of(body, np.array([1, 2, 3]))
    assert g.dtype == np.float64
    np.testing.assert_allclose(g, [0.5, 0.5, 0.5])
    np.testing.assert_allclose(grad_of(lambda a: np.sum(a.astype(np.float64)) * 200.0,
                                       np.array([1], np.int8)), [200.0])


def test_an_integer_y_or_cotangent_makes_a_real_backward_pass():
    x = tg.delayed(np.array([1, 2, 3, 2]))
    np.testing.assert_allclose(tg.grad(tnp.sum(tnp.maximum(x, 2)), x).compute(),
                               [0.0, 0.5, 1.0, 0.5])
    u = tg.delayed(np.array([1, 2], np.uint8))
    np.testing.assert_allclose(tg.grad(tnp.sum(10 - u), u).compute(), [-1.0, -1.0])
    xf = tg.delayed(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(tg.vjp(tnp.maximum(xf, 2.0), xf, np.array([1, 1, 1])).compute(),
                               [0.0, 0.5, 1.0])


def test_a_float64_cotangent_keeps_a_float32_gradient_float32():
    x = tg.delayed(np.ones((2, 3), np.float32))
    for y in (tnp.reshape(x, (3, 2)), tnp.transpose(x)):
        assert tg.vjp(y, x, np.ones((3, 2))).compute().dtype == np.float32


def test_vjp_cotangents_of_tuple_and_dict_values_are_checked_item_by_item():
    x = tg.delayed(np.array([1.0, 2.0, 3.0]))
    pair = tg.delayed(lambda a: (a * 2.0, np.sum(a)))(x)
    np.testing.assert_allclose(tg.vjp(pair, x, (np.ones(3), 1.0)).compute(), [3.0, 3.0, 3.0])
    both = tg.delayed(lambda a: {"a": a * 2.0, "b": np.sum(a)})(x)
    with pytest.raises(ValueError, match=r"\['a'\] has shape \(3,\)"):
        tg.vjp(both, x, {"a": np.ones((2, 3)), "b": 1.0}).compute()
    np.testing.assert_allclose(tg.vjp(both, x, {"b": 1.0}).compute(), [1.0, 1.0, 1.0])


def test_indices_computed_from_the_differentiated_value():
    x0 = np.array([3.0, -1.0, 7.0, 2.0])
    x = tg.delayed(x0)
    np.testing.assert_allclose(tg.grad(x[x.argmax()] * 2.0, x).compute(), [0, 0, 2, 0])
    np.testing.assert_allclose(
        tg.grad(tnp.sum(x[x.astype(int) % 4] ** 2), x).compute(), [0, 0, 14, 12])

    @tg.delayed
    def nll(z, labels):
        return -np.mean(z[np.arange(len(labels)), labels])

    z = tg.delayed(lambda x: np.stack([x, -x]))(x)
    labels = tg.delayed(lambda z: np.argmax(z, axis=1))(z)
    np.testing.assert_allclose(tg.grad(nll(z, labels), x).compute(),
                               tg.grad(nll(z, np.argmax(np.stack([x0, -x0]), 1)), x).compute())


def test_two_gradients_through_a_checkpoint_with_cse():
    x0 = np.array([0.5, 1.0, -0.3])
    block = tg.checkpoint(lambda a: np.sum(np.sin(a) ** 2))
    x = tg.delayed(x0, name="x")
    y = block(x) + tnp.sum(x)
    for ga, gb in [tg.compute(tg.grad(y, x), tg.grad(y, x), optimize_graph=["cse"]),
                   tg.compile([tg.grad(y, x), tg.grad(y, x)])()]:
        np.testing.assert_allclose(ga, np.sin(2 * x0) + 1)
        np.testing.assert_allclose(gb, np.sin(2 * x0) + 1)


@pytest.mark.parametrize("reduce", [tnp.max, tnp.min])
def test_the_nan_of_a_max_or_min_gets_the_gradient(reduce):
    x = tg.delayed(np.array([[1.0, np.nan, 3.0], [4.0, 5.0, 6.0]]))
    g = tg.grad(tnp.sum(reduce(x, axis=1)), x).compute()
    np.testing.assert_array_equal(g[0], [0.0, 1.0, 0.0])
    assert g[1].sum() == 1.0


@pytest.mark.parametrize("reduce", [tnp.max, tnp.min])
def test_a_nan_slice_beside_a_tie_still_gets_its_gradient(reduce):
    """As many entries chosen as slices, but one slice chose none (NaN) and one two (a
    tie): the rule's quick check of one choice per slice must not be fooled."""
    x = tg.delayed(np.array([[np.nan, 1.0, 0.0], [2.0, 2.0, 2.0], [7.0, 7.0, 7.0]]))
    g = tg.grad(tnp.sum(reduce(x[:2], axis=1)), x).compute()
    np.testing.assert_array_equal(g, [[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0, 0, 0]])
    y = tg.delayed(np.array([[np.nan, 1.0], [2.0, 2.0]]))
    np.testing.assert_array_equal(tg.grad(tnp.sum(reduce(y, axis=1)), y).compute(),
                                  [[1.0, 0.0], [0.5, 0.5]])


# ---------------------------------------------------------------- found by a third round

def test_a_traced_dict_iterates_and_looks_up_keys_as_a_dict_does():
    params = tg.delayed({"W": np.array([1.0, 2.0]), "b": np.array([0.5])})

    def loss(p):
        out = sum(np.sum(v ** 2) for k, v in p.items() if k in p)
        return out + (np.sum(p["b"]) if "b" in p else 0.0) + sum(np.sum(p[k]) for k in p) * 0

    g = tg.grad(tg.delayed(loss)(params), params).compute()
    np.testing.assert_allclose(g["W"], [2.0, 4.0])
    np.testing.assert_allclose(g["b"], [2.0])
    ints = tg.delayed({0: 2.0, 1: 3.0})
    g = tg.grad(tg.delayed(lambda d: d[1] * (2.0 if 1 in d else 5.0) + sum(d))(ints), ints)
    assert g.compute() == {0: 0.0, 1: 2.0}


def test_a_vjp_cotangent_holding_delayeds_is_differentiable():
    x = tg.delayed(np.array([1.0, 2.0, 3.0]))
    ct, c1 = tg.delayed(np.ones(3)), tg.delayed(2.0)
    pair = tg.delayed(lambda a: (a * 2.0, np.sum(a ** 2)))(x)
    g = tg.vjp(pair, x, (ct, c1))
    np.testing.assert_allclose(g.compute(), 2.0 + 2.0 * 2 * np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(tg.grad(tnp.sum(g), ct).compute(), [2.0, 2.0, 2.0])
    assert tg.grad(tnp.sum(g), c1).compute() == 12.0
    with pytest.raises(TypeError, match="None"):
        tg.vjp(tnp.sum(x), x, None)


def test_a_list_gradient_is_a_list_whatever_the_order_of_its_uses():
    items = tg.delayed([1.0, 2.0])
    for body in (lambda t: t[0] * 10.0 + t[1],
                 lambda t: np.sum(np.multiply(t, 2.0)) + t[0] * 10.0,
                 lambda t: t[0] * 10.0 + np.sum(np.multiply(t, 2.0))):
        g = tg.grad(tg.delayed(body)(items), items).compute()
        assert type(g) is list and len(g) == 2


def test_a_ufunc_cast_to_integers_carries_no_gradient():
    x = tg.delayed(np.array([1.2, 2.7]))
    y = tnp.sum(tnp.add(x, 0.5, dtype=int, casting="unsafe")) + tnp.sum(x)
    np.testing.assert_array_equal(tg.grad(y, x).compute(), [1.0, 1.0])


@pytest.mark.parametrize("value, body", [
    (2 ** 32, lambda n: n * n * 1.0),        # Python's big integers, not wrapping int64
    (True, lambda t: (t + t) * 1.5),         # True + True == 2, not True
    (3, lambda n: (n ** 2) / 2 + (-n) + abs(n) % 2),
])
def test_python_numbers_in_a_traced_function_keep_pythons_arithmetic(value, body):
    x = tg.delayed(value)
    y = tg.delayed(body)(x)
    with_grad, _ = tg.compute(y, tg.grad(y, x), scheduler="sync")
    assert with_grad == y.compute(scheduler="sync") == body(value)


def test_a_gradient_with_respect_to_a_dataclass_value_says_so():
    import dataclasses

    @dataclasses.dataclass
    class Params:
        W: np.ndarray
        b: float

    @tg.delayed
    def loss(p):
        return np.sum((p.W @ np.ones(2) + p.b) ** 2)

    params = tg.delayed(Params(np.eye(2), 0.5))
    with pytest.raises(MissingRuleError, match="Params dataclass, whose values are not "
                                               "differentiable.*namedtuple or dict"):
        tg.grad(loss(params), params).compute()


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_max_of_huge_slices_warns_of_nothing(dtype):
    """The max rule's check that no slice is NaN must not overflow where the slices' maxima
    together would (NumPy would warn, or raise under np.errstate(over="raise"))."""
    import warnings

    big = np.finfo(dtype).max / 2
    x = tg.delayed(np.array([[big, 1], [big, 2], [big, 3]], dtype))
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        g = tg.grad(tnp.sum(tnp.max(x, axis=1).astype(np.float64)), x).compute(scheduler="sync")
    np.testing.assert_array_equal(g, [[1, 0], [1, 0], [1, 0]])


@pytest.mark.parametrize("traced", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_gradient_has_the_same_bits_computed_with_its_own_gradient(traced, dtype):
    """With a gradient of it in the same compute, a gradient is taken from its traced run
    (the tape fusion): the sums that undo broadcasting must be the same arithmetic there."""
    rng = np.random.default_rng(0)
    X = tg.delayed(rng.standard_normal((1000, 7)).astype(dtype))
    b = tg.delayed(rng.standard_normal(7).astype(dtype))
    col = tg.delayed(rng.standard_normal((1000, 1)).astype(dtype))
    if traced:
        y = tg.delayed(lambda X, b, c: np.sum(np.tanh(X + b + c) ** 3))(X, b, col)
    else:
        y = tnp.sum(tnp.tanh(X + b + col) ** 3)
    gb, gc = tg.grad(y, [b, col])  # (leading and trailing axes summed)
    hvp = tg.grad(tnp.sum(gb * gb) + tnp.sum(gc * gc), [b, col])
    alone = tg.compute(gb, gc, scheduler="sync")
    together = tg.compute(gb, gc, *hvp, scheduler="sync")
    assert [a.tobytes() for a in alone] == [t.tobytes() for t in together[:2]]


def test_a_rule_registered_while_another_thread_reads_the_rules_is_not_lost(monkeypatch):
    """grad and the tracer cache what the registry says of a function; a registration that
    lands while a thread reads the registry must not leave the old reading cached."""
    import threading
    import time

    grad_module = __import__("taskgrad.autodiff.grad", fromlist=["rule_for"])
    trace_module = __import__("taskgrad.autodiff.trace", fromlist=["_read_op"])

    @tg.delayed
    def f(v):
        return 2 * v

    tg.defvjp(f, lambda ans, v: lambda g: g * 1.0)
    x = tg.delayed(3.0)
    slow_rule_for, slow_read_op = grad_module.rule_for, trace_module._read_op
    monkeypatch.setattr(grad_module, "rule_for",
                        lambda *a: (slow_rule_for(*a), time.sleep(0.2))[0])
    monkeypatch.setattr(trace_module, "_read_op", lambda *a: (slow_read_op(*a), time.sleep(0.2))[0])
    reader = threading.Thread(target=lambda: tg.grad(f(x), x))
    reader.start()
    time.sleep(0.05)
    tg.defvjp(f, lambda ans, v: lambda g: g * 2.0)  # while the reader reads the old rule
    reader.join()
    monkeypatch.undo()
    assert tg.grad(f(x), x).compute(scheduler="sync") == 2.0

    def plain(v):  # the same for a traced call of a primitive
        return cube(v)

    cube = tg.primitive(lambda v: v ** 3)
    tg.defvjp(cube, lambda ans, v: lambda g: g * 1.0)
    monkeypatch.setattr(trace_module, "_read_op", lambda *a: (slow_read_op(*a), time.sleep(0.2))[0])
    reader = threading.Thread(target=lambda: tg.grad(tg.delayed(plain)(x), x).compute(
        scheduler="sync"))
    reader.start()
    time.sleep(0.05)
    tg.defvjp(cube, lambda ans, v: lambda g: g * 2.0)
    reader.join()
    monkeypatch.undo()
    assert tg.grad(tg.delayed(plain)(x), x).compute(scheduler="sync") == 2.0
