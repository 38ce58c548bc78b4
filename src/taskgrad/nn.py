"""``taskgrad.nn`` (``import taskgrad.nn as tnn``): fused neural-network functions.

Why: a softmax cross-entropy written with ``tnp`` is a dozen small tasks forward
and a dozen backward, and their per-task overhead is what makes a float32 MLP
step slower than hand-written NumPy.  Each function here is one primitive with
its own VJP rule, as ``jax.nn`` / ``torch.nn.functional`` have:

- called with a Delayed (or a container holding one) it builds ONE task;
- inside a plain-NumPy ``@tg.delayed`` function it is ONE traced op;
- on plain values it computes at once.

The rules are written with NumPy functions that have rules themselves, so
gradients of gradients work.  ``relu``'s gradient at 0 is 0 (as in PyTorch and
JAX), where ``maximum(x, 0)`` splits it, 0.5.
"""

from __future__ import annotations

import functools

import numpy as np

from .autodiff.numpy_vjps import _keepdims, _sum, unbroadcast
from .autodiff.rules import defvjp, uses_only_shapes
from .autodiff.trace import primitive
from .delayed import _ATOMS, _make_delayed, unpack_delayed

__all__ = ["log_softmax", "logsumexp", "relu", "softmax"]


def _fused(func):
    """``func`` as a ``tg.primitive`` that, given Delayeds, builds one task of itself.

    The primitive is what the module holds under ``func``'s name, so it pickles (and
    ``tg.save`` stores it) by name, with the rules registered on it.
    """
    @functools.wraps(func)
    def call(*args, **kwargs):
        if _holds_delayed(args) or kwargs and _holds_delayed(kwargs.values()):
            return _make_delayed(prim, args, kwargs, prefix=func.__name__)
        return func(*args, **kwargs)

    prim = primitive(call)
    return prim


def _holds_delayed(values):
    for v in values:  # (arrays and numbers at once: this runs on every call)
        if type(v) not in _ATOMS and unpack_delayed(v)[1]:
            return True
    return False


def _shifted(x, axis):
    """``x`` minus its max along ``axis``: ``exp`` of it cannot overflow."""
    return x - np.max(x, axis=axis, keepdims=True)


@_fused
def log_softmax(x, axis=-1):
    """``x - logsumexp(x, axis, keepdims=True)``, computed stably."""
    shifted = _shifted(x, axis)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


@_fused
def softmax(x, axis=-1):
    """``exp(x) / sum(exp(x), axis, keepdims=True)``, computed stably."""
    e = np.exp(_shifted(x, axis))
    return e / np.sum(e, axis=axis, keepdims=True)


@_fused
def logsumexp(x, axis=None, keepdims=False):
    """``log(sum(exp(x), axis))``, computed stably, as ``scipy.special.logsumexp``: -inf
    entries count as zeros, a slice of them only gives -inf (without a warning)."""
    top = np.max(x, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0)  # (-inf, inf, nan: exp of them is the answer)
    with np.errstate(divide="ignore"):
        total = np.log(np.sum(np.exp(x - top), axis=axis, keepdims=keepdims))
    return total + np.reshape(top, np.shape(total))


@_fused
def relu(x):
    """``maximum(x, 0)``, whose gradient is 0 at 0 (not ``maximum``'s 0.5)."""
    if type(x) is np.ndarray and x.dtype == np.float32:
        # NumPy (2.4) compares float32 with a scalar in a slow loop, and with an array in a
        # vector one (measured for 256x256: 33 us against 0, 15 us against fresh zeros)
        return np.maximum(x, np.zeros(x.shape, np.float32))
    return np.maximum(x, 0)


defvjp(log_softmax, lambda ans, x, axis=-1: lambda g: unbroadcast(
    x, g - np.exp(ans) * _sum(g, axis, keepdims=True)))
defvjp(softmax, lambda ans, x, axis=-1: lambda g: unbroadcast(
    x, ans * (g - _sum(g * ans, axis, keepdims=True))))
defvjp(logsumexp, lambda ans, x, axis=None, keepdims=False: lambda g: unbroadcast(
    x, _keepdims(g, x, axis, keepdims) * np.exp(x - _keepdims(ans, x, axis, keepdims))))
defvjp(relu, lambda ans, x: lambda g: unbroadcast(x, g * (ans > 0)))  # (ans > 0 iff x > 0)

# the rules read x only for its shape and dtype (logsumexp's reads its value)
for _f in (log_softmax, softmax, relu):
    uses_only_shapes(_f, args=(0,))
