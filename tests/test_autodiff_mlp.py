"""An MLP (two ReLU hidden layers, softmax cross-entropy) written with ``tnp`` ops
and as plain-NumPy ``@tg.delayed`` layers: every weight's gradient against
finite differences, and both styles agreeing."""

import numpy as np
import pytest

import taskgrad as tg
import taskgrad.numpy as tnp

SCHEDULERS = ["sync", "threads"]


def make_problem(dtype=np.float64, sizes=(5, 4, 4, 3), batch=6, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, sizes[0])).astype(dtype)
    labels = rng.integers(0, sizes[-1], size=batch)
    onehot = np.eye(sizes[-1], dtype=dtype)[labels]
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        params.append(rng.normal(scale=1 / np.sqrt(n_in), size=(n_in, n_out)).astype(dtype))
        params.append(rng.normal(scale=0.1, size=n_out).astype(dtype))
    return x, onehot, params


def tnp_loss(x, onehot, W1, b1, W2, b2, W3, b3):
    h1 = tnp.maximum(x @ W1 + b1, 0.0)
    h2 = tnp.maximum(h1 @ W2 + b2, 0.0)
    z = h2 @ W3 + b3
    m = tnp.max(z, axis=1, keepdims=True)
    lse = m + tnp.log(tnp.sum(tnp.exp(z - m), axis=1, keepdims=True))
    return -tnp.mean(tnp.sum(onehot * (z - lse), axis=1))


@tg.delayed
def dense_relu(x, W, b):
    """ReLU as ``where`` and a method-style softmax: other spellings than ``tnp_loss``."""
    a = np.dot(x, W) + b
    return np.where(a > 0, a, 0.0)


@tg.delayed
def softmax_cross_entropy(x, W, b, onehot):
    logits = np.dot(x, W) + b
    top = logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(logits - top).sum(axis=1, keepdims=True)) + top
    return -(onehot * (logits - log_norm)).sum(axis=1).mean()


def layered_loss(x, onehot, W1, b1, W2, b2, W3, b3):
    return softmax_cross_entropy(dense_relu(dense_relu(x, W1, b1), W2, b2), W3, b3, onehot)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("loss", [tnp_loss, layered_loss], ids=["tnp", "layers"])
def test_mlp_gradients_match_finite_differences(loss, scheduler):
    x, onehot, params = make_problem()
    tg.check_grads(lambda *p: loss(x, onehot, *p), *params, scheduler=scheduler)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_tnp_and_layered_mlp_agree(scheduler):
    x, onehot, params = make_problem(sizes=(8, 16, 16, 4), batch=10)
    results = []
    for loss in (tnp_loss, layered_loss):
        leaves = [tg.delayed(p) for p in params]
        y = loss(x, onehot, *leaves)
        results.append(tg.compute(y, *tg.grad(y, leaves), scheduler=scheduler))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("loss", [tnp_loss, layered_loss], ids=["tnp", "layers"])
def test_mlp_float32_gradients_stay_float32(loss):
    x, onehot, params = make_problem(dtype=np.float32)
    leaves = [tg.delayed(p) for p in params]
    y = loss(x, onehot, *leaves)
    value, *grads = tg.compute(y, *tg.grad(y, leaves), scheduler="sync")
    assert np.result_type(value) == np.float32
    assert all(g.dtype == np.float32 and g.shape == p.shape for g, p in zip(grads, params))
    tg.check_grads(lambda *p: loss(x, onehot, *p), *params)


@pytest.mark.parametrize("loss", [tnp_loss, layered_loss], ids=["tnp", "layers"])
def test_mlp_gradients_bit_identical_on_sync_and_threads(loss):
    x, onehot, params = make_problem(sizes=(8, 16, 16, 4), batch=10)
    leaves = [tg.delayed(p) for p in params]
    y = loss(x, onehot, *leaves)
    grads = tg.grad(y, leaves)
    runs = [tg.compute(*grads, scheduler=s) for s in SCHEDULERS * 2]
    for run in runs[1:]:
        assert [g.tobytes() for g in run] == [g.tobytes() for g in runs[0]]


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_sgd_steps_reduce_the_loss(scheduler):
    x, onehot, params = make_problem(sizes=(8, 16, 16, 4), batch=32)
    losses = []
    for _ in range(5):
        leaves = [tg.delayed(p) for p in params]
        y = layered_loss(x, onehot, *leaves)
        grads = tg.grad(y, leaves)
        value, *params = tg.compute(y, *[w - 0.5 * g for w, g in zip(leaves, grads)],
                                    scheduler=scheduler)
        losses.append(float(value))
    assert losses[-1] < losses[0]
