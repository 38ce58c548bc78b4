"""``taskgrad.nn``: fused neural-network functions, each one task lazily and one op traced,
against finite differences (first and second order) and scipy.special, on every
scheduler, and against the ``tnp`` composite they replace."""

import pickle

import cloudpickle
import numpy as np
import pytest

import taskgrad as tg
import taskgrad.nn as tnn
import taskgrad.numpy as tnp
from taskgrad.autodiff.shape_dtype import ShapeDtype
from taskgrad.autodiff.trace import trace_call

rng = np.random.default_rng(0)


def r(*shape):
    return rng.uniform(-2.0, 2.0, size=shape)


def away_from_zero(*shape):
    return rng.uniform(0.2, 1.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)


FUNCTIONS = [tnn.log_softmax, tnn.softmax, tnn.logsumexp, tnn.relu]

# (name, body(*args), args): the body uses taskgrad.nn on Delayeds or on traced arrays
CASES = [
    ("log_softmax", lambda x: tnn.log_softmax(x), [r(3, 4)]),
    ("log_softmax-axis0", lambda x: tnn.log_softmax(x, axis=0), [r(3, 4)]),
    ("log_softmax-negative-axis", lambda x: tnn.log_softmax(x, -2), [r(2, 3, 2)]),
    ("log_softmax-axes", lambda x: tnn.log_softmax(x, axis=(0, 2)), [r(2, 3, 2)]),
    ("log_softmax-large", lambda x: tnn.log_softmax(x), [1000.0 + r(2, 3)]),
    ("log_softmax-1d", lambda x: tnn.log_softmax(x), [r(5)]),
    ("softmax", lambda x: tnn.softmax(x), [r(3, 4)]),
    ("softmax-axis0", lambda x: tnn.softmax(x, axis=0), [r(3, 4)]),
    ("softmax-axes", lambda x: tnn.softmax(x, axis=(-1, 0)), [r(2, 3, 2)]),
    ("softmax-large", lambda x: tnn.softmax(x, 1), [1000.0 + r(2, 3)]),
    ("logsumexp", lambda x: tnn.logsumexp(x), [r(3, 4)]),
    ("logsumexp-axis", lambda x: tnn.logsumexp(x, axis=1), [r(3, 4)]),
    ("logsumexp-keepdims", lambda x: tnn.logsumexp(x, -1, keepdims=True) * x, [r(3, 4)]),
    ("logsumexp-axes", lambda x: tnn.logsumexp(x, axis=(0, 2)), [r(2, 3, 2)]),
    ("logsumexp-axes-keepdims", lambda x: tnn.logsumexp(x, (0, 2), True), [r(2, 3, 2)]),
    ("logsumexp-large", lambda x: tnn.logsumexp(x, axis=0), [1000.0 + r(3, 2)]),
    ("logsumexp-python-scalar", lambda x: tnn.logsumexp(x), [0.7]),
    ("logsumexp-0d", lambda x: tnn.logsumexp(x) * x, [np.array(0.3)]),
    ("relu", lambda x: tnn.relu(x), [away_from_zero(3, 4)]),
    ("relu-python-scalar", lambda x: tnn.relu(x) * x, [0.8]),
    ("relu-composed", lambda x: tnn.log_softmax(tnn.relu(x) * 2.0 - 0.5), [away_from_zero(2, 3)]),
]


def lazy_fn(body):  # (sin: the gradient of a softmax's plain sum would be zero)
    return lambda x: tnp.sum(tnp.sin(body(x)))


def traced_fn(body):
    @tg.delayed
    def plain(x):
        return np.sum(np.sin(body(x)))
    return plain


WEIGHTS = np.cos(np.arange(6.0)).reshape(2, 3)


def as_dtype(args, dtype):
    return [a if isinstance(a, float) else np.asarray(a, dtype=dtype) for a in args]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("make", [lazy_fn, traced_fn], ids=["lazy", "traced"])
@pytest.mark.parametrize("name,body,args", CASES, ids=[c[0] for c in CASES])
def test_rule_matches_finite_differences(name, body, args, make, dtype):
    """check_grads also checks that a float32 argument's gradient is float32."""
    tg.check_grads(make(body), *as_dtype(args, dtype))


@pytest.mark.parametrize("func", FUNCTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("mode", ["lazy", "traced", "eager"])
def test_float32_stays_float32(func, mode):
    x0 = r(2, 3).astype(np.float32)
    if mode == "eager":
        assert func(x0).dtype == np.float32
        return
    x = tg.delayed(x0)
    if mode == "lazy":
        out = func(x)
    else:
        out = tg.delayed(lambda v: func(v) * np.float32(2.0))(x)
    value, g = tg.compute(out, tg.grad(tnp.sum(out * WEIGHTS.astype(np.float32)), x),
                          scheduler="sync")
    assert value.dtype == np.float32 and g.dtype == np.float32


@pytest.mark.parametrize("func", FUNCTIONS[:3], ids=lambda f: f.__name__)
def test_integer_input_gives_float_result_and_gradient(func):
    x = tg.delayed(np.array([[1, 2, 3], [0, -1, 4]]))
    out = func(x)
    value, g = tg.compute(out, tg.grad(tnp.sum(out * WEIGHTS), x), scheduler="sync")
    np.testing.assert_allclose(value, func(np.array([[1.0, 2, 3], [0, -1, 4]])))
    assert value.dtype == np.float64 and g.dtype == np.float64


def test_relu_of_integers_stays_integer_as_maximum_does_and_its_gradient_is_float():
    x = tg.delayed(np.array([-2, 0, 3]))
    value, g = tg.compute(tnn.relu(x), tg.grad(tnp.sum(tnn.relu(x) * 1.5), x), scheduler="sync")
    assert value.tolist() == [0, 0, 3] and value.dtype.kind == "i"
    assert g.tolist() == [0.0, 0.0, 1.5] and g.dtype == np.float64


# ---------------------------------------------------------------- values

REFERENCE_INPUTS = [
    pytest.param(r(3, 4), id="small"),
    pytest.param(np.array([[1000.0, 1000.0, 999.0], [-1000.0, 0.0, 1000.0]]), id="large"),
    pytest.param(r(3, 4).astype(np.float32), id="float32"),
    pytest.param(np.array([[1000.0, 1001.0], [-1e4, 80.0]], np.float32), id="float32-large"),
]


@pytest.mark.parametrize("x", REFERENCE_INPUTS)
@pytest.mark.parametrize("axis", [-1, 0, (0, 1)])
def test_values_match_scipy(x, axis):
    special = pytest.importorskip("scipy.special")
    rtol = 1e-6 if x.dtype == np.float32 else 1e-13
    for ours, theirs in [(tnn.log_softmax, special.log_softmax),
                         (tnn.softmax, special.softmax)]:
        got = ours(x, axis=axis)
        assert got.dtype == x.dtype and np.all(np.isfinite(got))
        np.testing.assert_allclose(got, theirs(x, axis=axis), rtol=rtol, atol=1e-30)
    for keepdims in (False, True):
        got = tnn.logsumexp(x, axis=axis, keepdims=keepdims)
        want = special.logsumexp(x, axis=axis, keepdims=keepdims)
        assert got.shape == want.shape and got.dtype == x.dtype
        np.testing.assert_allclose(got, want, rtol=rtol)
    assert tnn.logsumexp(x) == pytest.approx(special.logsumexp(x), rel=rtol)


def test_logsumexp_handles_infinities_as_scipy_does_without_warnings():
    special = pytest.importorskip("scipy.special")
    inf, nan = np.inf, np.nan
    x = np.array([[-inf, -inf], [0.0, -inf], [inf, 1.0], [inf, -inf], [nan, 1.0],
                  [-inf, 1000.0]])
    with np.errstate(all="raise"):
        got = tnn.logsumexp(x, axis=1)
        assert tnn.logsumexp(np.full((2, 2), -inf)) == -inf
        lazy = tnn.logsumexp(tg.delayed(x), axis=1).compute(scheduler="sync")
    np.testing.assert_array_equal(got, special.logsumexp(x, axis=1))
    np.testing.assert_array_equal(lazy, got)
    # a -inf entry gets no gradient; the others get their softmax
    leaf = tg.delayed(np.array([-inf, 0.0, 0.0]))
    np.testing.assert_array_equal(tg.grad(tnn.logsumexp(leaf), leaf).compute(), [0, 0.5, 0.5])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_values_are_maximums_with_zero_bit_for_bit(dtype):
    # (float32 takes another route to np.maximum, against an array of zeros: faster here)
    x = np.array([[-0.0, 0.0, np.nan, -np.inf], [np.inf, -1.5, 2.5, 1e-40]], dtype)
    for value in (x, x.T, x[:, ::2], dtype(-3.0), np.array(2.0, dtype)):
        out = tnn.relu(value)
        expected = np.maximum(value, 0)
        assert np.asarray(out).dtype == dtype
        np.testing.assert_array_equal(out, expected)
        assert np.array_equal(np.signbit(out), np.signbit(expected))


def test_scalars_and_0d_arrays():
    assert tnn.logsumexp(2.5) == 2.5
    assert tnn.logsumexp(np.array(-1.0), keepdims=True) == -1.0
    assert tnn.relu(-3.0) == 0.0 and tnn.relu(np.array(2.0)) == 2.0
    assert tnn.softmax(7.0, axis=None) == 1.0 and tnn.log_softmax(7.0, axis=None) == 0.0
    x = tg.delayed(0.3)
    assert tg.grad(tnn.relu(x) * x, x).compute() == pytest.approx(0.6)
    assert tg.grad(tnn.logsumexp(x), x).compute() == 1.0


def test_relu_gradient_is_zero_at_zero_and_one_where_positive():
    x0 = np.array([-1.5, 0.0, 2.0, -0.0, 1e-30])
    x = tg.delayed(x0)

    @tg.delayed
    def traced(v):
        return np.sum(tnn.relu(v))

    for y in (tnp.sum(tnn.relu(x)), traced(x)):
        np.testing.assert_array_equal(tg.grad(y, x).compute(), [0.0, 0.0, 1.0, 0.0, 1.0])
    # unlike maximum(x, 0), which splits the tie
    assert tg.grad(tnp.sum(tnp.maximum(x, 0.0)), x).compute()[1] == 0.5
    x32 = tg.delayed(x0.astype(np.float32))
    g32 = tg.grad(tnp.sum(tnn.relu(x32)), x32).compute()
    assert g32.dtype == np.float32 and g32.tolist() == [0.0, 0.0, 1.0, 0.0, 1.0]


# ---------------------------------------------------------------- second order

SECOND_ORDER = [c for c in CASES if c[0] in {
    "log_softmax", "log_softmax-axes", "softmax", "softmax-axis0", "logsumexp",
    "logsumexp-axis", "logsumexp-axes-keepdims", "relu-composed"}]


@pytest.mark.parametrize("name,body,args", SECOND_ORDER, ids=[c[0] for c in SECOND_ORDER])
@pytest.mark.parametrize("make", [lazy_fn, traced_fn], ids=["lazy", "traced"])
def test_hessian_vector_product_matches_finite_differences(name, body, args, make):
    """grad(sum(grad(f) * v)) against central differences of grad(f) along v."""
    f = make(body)
    x0 = args[0]
    v = np.sin(np.arange(np.size(x0)) + 2.0).reshape(np.shape(x0))
    x = tg.delayed(x0)
    hv = tg.grad(tnp.sum(tg.grad(f(x), x) * v), x).compute(scheduler="sync")

    def grad_at(step):
        moved = tg.delayed(x0 + step * v)
        return tg.grad(f(moved), moved).compute(scheduler="sync")

    eps = 1e-5
    np.testing.assert_allclose(hv, (grad_at(eps) - grad_at(-eps)) / (2 * eps), rtol=1e-5,
                               atol=1e-7)


def test_second_derivative_of_a_scalar_function():
    """d2/dx2 of logsumexp([x, 2x, 1]) and of sum(log_softmax([x, -x]) * w): analytic."""
    x0 = 0.4
    x = tg.delayed(x0)
    lse = tnn.logsumexp(tnp.stack([x, 2.0 * x, tg.delayed(1.0)]))
    p = np.exp(np.array([x0, 2 * x0, 1.0]) - np.log(np.exp([x0, 2 * x0, 1.0]).sum()))
    slopes = np.array([1.0, 2.0, 0.0])
    mean = (p * slopes).sum()
    d2_lse = (p * slopes ** 2).sum() - mean ** 2  # the variance of the slopes
    w = np.array([0.3, 1.7])
    ls = tnp.sum(tnn.log_softmax(tnp.stack([x, -x])) * w)
    # log_softmax([x, -x]) = [x, -x] - log(exp(x) + exp(-x)): second derivative
    # -(1 - tanh(x) ** 2) = -4 s (1 - s) in each entry, with s = softmax([x, -x])[0]
    s = 1.0 / (1.0 + np.exp(-2 * x0))
    d2_ls = -w.sum() * 4 * s * (1 - s)
    got = tg.compute(tg.grad(tg.grad(lse, x), x), tg.grad(tg.grad(ls, x), x), scheduler="sync")
    assert got[0] == pytest.approx(d2_lse, rel=1e-12)
    assert got[1] == pytest.approx(d2_ls, rel=1e-12)


# ---------------------------------------------------------------- graphs

def xent_tnn(z, onehot):
    return -tnp.mean(tnp.sum(tnn.log_softmax(z) * onehot, axis=1))


def xent_tnp(z, onehot):
    shifted = z - tnp.max(z, axis=1, keepdims=True)
    return -tnp.mean(tnp.sum((shifted - tnp.log(tnp.sum(tnp.exp(shifted), axis=1,
                                                         keepdims=True))) * onehot, axis=1))


def classifier(xent, dtype=np.float64):
    X = rng.normal(size=(8, 5)).astype(dtype)
    onehot = np.eye(3, dtype=dtype)[rng.integers(0, 3, size=8)]
    W = tg.delayed(rng.normal(size=(5, 3)).astype(dtype))
    b = tg.delayed(np.zeros(3, dtype))
    return xent(tnn.relu(X @ W + b) @ np.ones((3, 3), dtype) + b, onehot), [W, b]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cross_entropy_matches_the_tnp_composite_with_fewer_tasks(dtype):
    state = rng.bit_generator.state
    loss_nn, leaves_nn = classifier(xent_tnn, dtype)
    rng.bit_generator.state = state
    loss_np, leaves_np = classifier(xent_tnp, dtype)
    grads_nn, grads_np = tg.grad(loss_nn, leaves_nn), tg.grad(loss_np, leaves_np)
    got = tg.compute(loss_nn, *grads_nn, scheduler="sync")
    want = tg.compute(loss_np, *grads_np, scheduler="sync")
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for a, b in zip(got, want):
        assert np.result_type(a) == dtype
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
    n_nn = len(tg.delayed(list)(grads_nn).graph)
    n_np = len(tg.delayed(list)(grads_np).graph)
    assert n_nn < n_np - 10, (n_nn, n_np)
    # of the cross-entropy alone and its gradient (README: 15 tasks instead of 32)
    z, onehot = tg.delayed(np.ones((4, 3), dtype)), np.eye(3, dtype=dtype)[[0, 1, 2, 0]]
    n_nn, n_np = (len(tg.grad(xent(z, onehot), z).graph) for xent in (xent_tnn, xent_tnp))
    assert 2 * n_nn <= n_np, (n_nn, n_np)


@pytest.mark.parametrize("func", FUNCTIONS, ids=lambda f: f.__name__)
def test_one_call_is_one_task_and_one_traced_op(func):
    d = tg.delayed(r(2, 3))
    out = func(d)
    assert isinstance(out, tg.Delayed) and len(out.graph) == 2
    assert out.key.startswith(func.__name__ + "-")
    assert len(func([d, d]).graph) == 2  # a list holding Delayeds is lazy too
    if func is not tnn.relu:  # and so is a Delayed keyword
        lazy = func(np.arange(6.0).reshape(2, 3), axis=tg.delayed(0))
        np.testing.assert_array_equal(lazy.compute(), func(np.arange(6.0).reshape(2, 3), 0))
    tape = trace_call("f", lambda x: np.sum(func(x)), [[(0, 0)]], [r(2, 3)], {})
    assert [node[0] for node in tape.nodes] == [None, func, np.sum]
    # the tape keeps of x what the rule reads: its shape and dtype only, but for logsumexp
    assert (type(tape.nodes[1][1][0]) is ShapeDtype) == (func is not tnn.logsumexp)


def test_on_plain_values_it_computes_at_once():
    x = r(2, 3)
    out = tnn.softmax(x)
    assert type(out) is np.ndarray
    np.testing.assert_allclose(out.sum(axis=-1), 1.0)
    np.testing.assert_array_equal(tnn.log_softmax([[1.0, 2.0]]), tnn.log_softmax(
        np.array([[1.0, 2.0]])))


def test_gradients_bit_identical_on_every_scheduler():
    X = rng.normal(size=(6, 4))
    W = tg.delayed(rng.normal(size=(4, 3)))
    h = tnn.relu(X @ W)

    @tg.delayed
    def traced(h, W):  # the functions inside a plain-NumPy body, sent to worker processes
        return np.sum(tnn.softmax(h, axis=0) * np.arange(3.0)) + tnn.logsumexp(W)

    loss = tnp.sum(tnn.log_softmax(h) * np.arange(3.0)) + traced(h, W) + tnn.logsumexp(h)
    g = tg.grad(loss, W)
    hv = tg.grad(tnp.sum(g * np.ones((4, 3))), W)
    results = {s: tg.compute(loss, g, hv, scheduler=s) for s in ("sync", "threads",
                                                                 "processes")}
    for s in ("threads", "processes"):
        assert [np.asarray(v).tobytes() for v in results[s]] == \
            [np.asarray(v).tobytes() for v in results["sync"]]


@pytest.mark.parametrize("func", FUNCTIONS, ids=lambda f: f.__name__)
def test_pickles_by_name(func):
    for dumps in (pickle.dumps, cloudpickle.dumps):
        data = dumps(func)
        assert b"taskgrad.nn" in data and len(data) < 100
        assert pickle.loads(data) is func


def test_compiled_graph_saves_and_loads_by_import_path(tmp_path):
    x = tg.placeholder("x", shape=(None, 4), dtype=np.float64)
    W = tg.delayed(np.linspace(-1, 1, 12).reshape(4, 3), name="W")
    loss = tnp.sum(tnn.log_softmax(tnn.relu(x @ W)) * np.arange(3.0)) + tnn.logsumexp(W)
    step = tg.compile([loss, tg.grad(loss, W)], scheduler="sync")
    path = tmp_path / "nn.tg"
    tg.save(step, path)  # (no allow_pickle: the functions and rules go by import path)
    names = np.load(path, allow_pickle=False)["__taskgrad__"].tobytes().decode()
    assert "taskgrad.nn:log_softmax" in names and "$pickle" not in names
    batch = rng.normal(size=(5, 4))
    got, want = tg.load(path)(x=batch), step(x=batch)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- properties

def test_softmax_properties_on_random_arrays():
    """Rows of softmax sum to 1, log_softmax == log(softmax) == x - logsumexp, and adding a
    constant along the axis changes nothing; any shape, any axis."""
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp

    @settings(max_examples=100, deadline=None, derandomize=True, database=None)
    @given(st.data())
    def check(data):
        x = data.draw(hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3,
                                                              max_side=4),
                                 elements=st.floats(-300, 300)))
        axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
        s, ls = tnn.softmax(x, axis), tnn.log_softmax(x, axis)
        np.testing.assert_allclose(s.sum(axis=axis), 1.0, rtol=1e-12)
        assert np.all(s >= 0) and np.all(ls <= 0)
        lse = tnn.logsumexp(x, axis, keepdims=True)
        np.testing.assert_allclose(ls, x - lse, rtol=1e-12, atol=1e-12)
        positive = s > 1e-300  # (log of an underflowed softmax is -inf)
        np.testing.assert_allclose(ls[positive], np.log(s[positive]), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(tnn.softmax(x + 100.0, axis), s, rtol=1e-9, atol=1e-300)

    check()
