"""check_grads: catches wrong rules, names them, and tolerates only honest rounding."""

import numpy as np
import pytest

import taskgrad as tg
import taskgrad.numpy as tnp


def off_by(factor):
    """A cube whose hand-written VJP is wrong by ``factor``."""
    @tg.delayed(vjp=lambda ans, x: lambda g: g * factor * 3 * x ** 2)
    def cube(x):
        return x ** 3
    return cube


def test_a_wrong_rule_is_caught_and_located():
    x = np.array([[0.5, -1.0], [2.0, 1.5]])
    with pytest.raises(AssertionError) as info:
        tg.check_grads(lambda v: tnp.sum(off_by(1.01)(v)), x)
    message = str(info.value)
    assert "argument 0" in message and "4 of 4 entries" in message and "index (1, 0)" in message


def test_a_right_rule_passes():
    tg.check_grads(lambda v: tnp.sum(off_by(1.0)(v)), np.array([0.5, -1.0, 2.0]))


def test_large_values_allow_for_rounding_in_the_finite_difference():
    """f is about 1e7 here, so the difference quotient itself is off by ~1e-3."""
    x = np.array([0.3, -0.2, 0.1])
    big = lambda v: tnp.sum(tnp.exp(v * 0.1) * 1e7 + tnp.arctan(v))  # noqa: E731
    tg.check_grads(big, x)
    wrong = lambda v: tnp.sum(off_by(1.001)(v) * 1e7 + tnp.arctan(v))  # noqa: E731
    with pytest.raises(AssertionError, match="rounding in the finite difference"):
        tg.check_grads(wrong, x)


def test_fn_must_return_a_delayed():
    with pytest.raises(TypeError, match="must return a Delayed"):
        tg.check_grads(lambda v: 1.0, np.ones(2))
