"""Checkpointing: identical gradients, lower peak memory, works compiled and on every scheduler."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import taskgrad as tg
import taskgrad.numpy as tnp
from taskgrad.checkpoint import Segment


def layers(h, *Ws):
    for W in Ws:
        h = np.tanh(h @ W)
    return h


def chain(x, Ws, every):
    """A tanh MLP, as checkpointed blocks of ``every`` layers (0: plain per-block tasks)."""
    block = tg.checkpoint(layers) if every else None
    h = x
    size = every or 2
    for i in range(0, len(Ws), size):
        h = (block or tg.delayed(layers))(h, *Ws[i:i + size])
    return tnp.sum(h * h)


def values(n_layers=6, width=8, batch=5, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(batch, width)),
            [rng.normal(size=(width, width)) / np.sqrt(width) for _ in range(n_layers)])


def leaves(xv, Wv):
    return tg.delayed(xv, name="x"), [tg.delayed(w, name=f"W{i}") for i, w in enumerate(Wv)]


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes"])
def test_checkpointed_gradients_are_identical(scheduler):
    xv, Wv = values()
    x, Ws = leaves(xv, Wv)
    plain = chain(x, Ws, 0)
    want = tg.compute(plain, *tg.grad(plain, [x, *Ws]), scheduler="sync")
    for every in (1, 2, 3):
        loss = chain(x, Ws, every)
        got = tg.compute(loss, *tg.grad(loss, [x, *Ws]), scheduler=scheduler)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


def test_checkpoint_matches_fine_grained_ops_and_finite_differences():
    xv, Wv = values(n_layers=3)
    x, Ws = leaves(xv, Wv)
    h = x
    for W in Ws:
        h = tnp.tanh(h @ W)
    fine = tg.compute(*tg.grad(tnp.sum(h * h), Ws), scheduler="sync")
    loss = chain(x, Ws, 3)
    got = tg.compute(*tg.grad(loss, Ws), scheduler="sync")
    for a, b in zip(got, fine):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    block = tg.checkpoint(layers)
    tg.check_grads(lambda W: tnp.sum(block(tg.delayed(xv), W, Ws[1]) ** 2), Wv[0])


def test_checkpoint_keeps_fewer_activations():
    xv, Wv = values(n_layers=24, width=16, batch=2048)

    def peak(every):
        x, Ws = leaves(xv, Wv)
        loss = chain(x, Ws, every) if every else _per_layer(x, Ws)
        return traced_peak(tg.compute, loss, *tg.grad(loss, Ws), scheduler="sync")

    activation = 2048 * 16 * 8
    unchecked, checked = peak(0), peak(4)
    # every layer's output is held for the backward pass (tanh's rule reads it; its input,
    # h @ W, only for its shape, so that one is not held)
    assert unchecked > 24 * activation
    assert checked < 0.6 * unchecked


def traced_peak(fn, *args, **kwargs):
    """The peak of traced memory (NumPy buffers included) while ``fn`` runs."""
    tracemalloc.start()
    try:
        fn(*args, **kwargs)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _per_layer(x, Ws):
    h = x
    for W in Ws:
        h = tg.delayed(layers)(h, W)
    return tnp.sum(h * h)


def test_checkpoint_with_placeholders_compiled():
    xv, Wv = values(n_layers=4)
    x = tg.placeholder("x", shape=(None, 8))
    Ws = [tg.placeholder(f"W{i}", shape=(8, 8)) for i in range(4)]
    loss = chain(x, Ws, 2)
    step = tg.compile([loss, *tg.grad(loss, Ws)])
    x2, W2 = leaves(xv, Wv)
    plain = chain(x2, W2, 0)
    want = tg.compute(plain, *tg.grad(plain, W2), scheduler="sync")
    feeds = {f"W{i}": w for i, w in enumerate(Wv)}
    for _ in range(2):
        for a, b in zip(step(x=xv, **feeds), want):
            np.testing.assert_array_equal(a, b)


def test_checkpoint_accepts_containers_and_constants():
    def block(h, weights, scale=1.0, *, shift):
        return layers(h, *weights) * scale + shift

    xv, Wv = values(n_layers=2)
    x, Ws = leaves(xv, Wv)
    out = tg.checkpoint(block)(x, Ws, 2.0, shift=0.5)
    assert isinstance(out.task.func, Segment) and out.task.func.__name__ == "checkpoint:block"
    np.testing.assert_array_equal(out.compute(), layers(xv, *Wv) * 2.0 + 0.5)
    gx = tg.grad(tnp.sum(out), x).compute()
    want = tg.grad(tnp.sum(tg.delayed(block)(x, Ws, 2.0, shift=0.5)), x).compute()
    np.testing.assert_array_equal(gx, want)


def test_checkpointed_block_without_a_rule_names_the_operation():
    def bad(h):
        return np.linalg.eigvalsh(h @ h.T)

    x = tg.delayed(np.eye(3), name="x")
    loss = tnp.sum(tg.checkpoint(bad)(x))
    assert np.isclose(loss.compute(), 3.0)
    with pytest.raises(TypeError, match="eigvalsh"):
        tg.grad(loss, x).compute(scheduler="sync")


def test_second_order_through_a_checkpoint_is_a_clear_error():
    x = tg.delayed(np.ones(3), name="x")
    y = tnp.sum(tg.checkpoint(np.sin)(x))
    g = tg.grad(y, x)
    np.testing.assert_array_equal(g.compute(), np.cos(np.ones(3)))
    with pytest.raises(NotImplementedError, match="gradients of gradients through a tg.checkpoint"):
        tg.grad(tnp.sum(g), x).compute(scheduler="sync")


def test_checkpointing_lazy_code_is_a_clear_error():
    """tg.checkpoint takes plain NumPy: a block written with tnp returns a Delayed."""
    x, Ws = leaves(*values(n_layers=1))
    block = tg.checkpoint(lambda h, W: tnp.tanh(h @ W))
    with pytest.raises(TypeError, match="returned a lazy Delayed.*plain NumPy"):
        tg.compute(block(x, Ws[0]), scheduler="sync")
