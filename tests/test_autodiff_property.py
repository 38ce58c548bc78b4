"""Property: random compositions of ops have gradients that match finite
differences, the same through ``tnp`` and through traced plain NumPy, and
bit-identical on ``"sync"`` and ``"threads"``."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import taskgrad as tg
import taskgrad.numpy as tnp

UNARY = {
    "sin": lambda m, a: m.sin(a),
    "tanh": lambda m, a: m.tanh(a),
    "exp-small": lambda m, a: m.exp(a * 0.3),
    "square": lambda m, a: m.square(a),
    "softplus": lambda m, a: m.log1p(m.exp(a)),
    "arctan": lambda m, a: m.arctan(a),
    "neg": lambda m, a: -a,
    "sum-keep": lambda m, a: m.sum(a, axis=-1, keepdims=True) * a,
    "transpose-twice": lambda m, a: m.transpose(m.transpose(a)),
}
BINARY = {
    "add": lambda m, a, b: a + b,
    "sub": lambda m, a, b: a - b,
    "mul": lambda m, a, b: a * b,
    "div": lambda m, a, b: a / (1.5 + m.sin(b)),
    "max": lambda m, a, b: m.maximum(a, b),
    # (offset: a and b may be equal in exact arithmetic, as b and a + (b - a), and then
    # rounding alone picks the branch, a step no finite difference can follow)
    "where": lambda m, a, b: m.where(a > b + 0.125, a * b, a + b),
}

ops = st.one_of(
    st.tuples(st.just("u"), st.sampled_from(sorted(UNARY)), st.integers(0, 9)),
    st.tuples(st.just("b"), st.sampled_from(sorted(BINARY)), st.integers(0, 9),
              st.integers(0, 9)),
)


def build(program, m, leaves):
    """Apply the program; every value stays shape (2, 3) (or broadcasts to it)."""
    values = list(leaves)
    for op in program:
        if op[0] == "u":
            values.append(UNARY[op[1]](m, values[op[2] % len(values)]))
        else:
            values.append(BINARY[op[1]](m, values[op[2] % len(values)],
                                        values[op[3] % len(values)]))
    total = values[-1]
    for v in values[len(leaves):-1]:
        total = total + v * 0.5
    return m.sum(total * np.arange(1.0, 7.0).reshape(2, 3))


@settings(max_examples=25, deadline=None)
@given(program=st.lists(ops, min_size=1, max_size=6),
       seed=st.integers(0, 2 ** 16))
def test_random_compositions(program, seed):
    rng = np.random.default_rng(seed)
    args = [rng.uniform(-1, 1, size=(2, 3)), rng.uniform(-1, 1, size=(3,))]
    tg.check_grads(lambda *ls: build(program, tnp, ls), *args)

    traced = tg.delayed(lambda *xs: build(program, np, xs))
    leaves = [tg.delayed(a) for a in args]
    via_tnp = tg.grad(build(program, tnp, leaves), leaves)
    via_trace = tg.grad(traced(*leaves), leaves)
    sync = tg.compute(*via_tnp, *via_trace, scheduler="sync")
    threads = tg.compute(*via_tnp, *via_trace, scheduler="threads")
    assert [g.tobytes() for g in sync] == [g.tobytes() for g in threads]
    for a, b in zip(sync[:2], sync[2:]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
