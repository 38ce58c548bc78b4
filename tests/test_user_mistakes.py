"""What a newcomer tries first: it works, or the error says what to do instead."""

import math

import numpy as np
import pytest

import taskgrad as tg
import taskgrad.numpy as tnp
from taskgrad.autodiff.rules import MissingRuleError

square = tg.delayed(lambda x: x * x)
total = tg.delayed(sum)


def test_a_generator_of_delayeds_is_read_like_a_list():
    assert total(square(i) for i in range(1, 11)).compute() == 385
    assert tg.compute(square(i) for i in range(3)) == ([0, 1, 4],)


def test_numpy_operators_with_a_delayed_use_its_operators_and_ufuncs_are_refused():
    d = tg.delayed(np.array([1.0, 2.0]))
    np.testing.assert_allclose((np.ones(2) + d).compute(), [2.0, 3.0])
    np.testing.assert_allclose((np.float32(2) * d).compute(), [2.0, 4.0])
    with pytest.raises(TypeError):
        np.exp(d)


def test_an_array_times_a_delayed_sparse_matrix_keeps_sparse_semantics():
    sparse = pytest.importorskip("scipy.sparse")
    d = tg.delayed(sparse.csr_matrix(np.ones((2, 2))))
    np.testing.assert_array_equal(np.asarray(np.ones((2, 2)) @ d.compute()),
                                  np.asarray((np.ones((2, 2)) @ d).compute()))


def test_one_pass_iterators_and_dict_views_are_read_like_lists():
    assert total(map(square, range(4))).compute() == 14
    assert total(iter([square(2)])).compute() == 4
    assert total({"a": square(3)}.values()).compute() == 9
    assert tg.delayed(list)(zip([square(1)], [2])).compute() == [(1, 2)]


@pytest.mark.parametrize("convert", [float, int, math.exp])
def test_python_conversions_of_a_delayed_say_to_compute_first(convert):
    with pytest.raises(TypeError, match="call .compute"):
        convert(tg.delayed(2.0))


def test_int_of_a_traced_value_is_a_missing_rule():
    x = tg.delayed(np.array([1.5]))
    with pytest.raises(MissingRuleError, match="int()"):
        tg.grad(tg.delayed(lambda a: a * int(a[0]))(x)[0], x).compute()


class Scaler:
    def __init__(self, k):
        self.k = k

    @tg.delayed
    def scale(self, x):
        return self.k * x


def test_a_delayed_method_binds_its_instance():
    assert Scaler(3).scale(tg.delayed(2)).compute() == 6
    assert Scaler(2).scale(5).compute(scheduler="processes", num_workers=1) == 10


class Rounder:
    @tg.delayed(vjp=(None, lambda ans, self, x: lambda g: g))  # straight through
    def round(self, x):
        return np.round(x)

    @tg.delayed
    @staticmethod
    def double(x):
        return 2 * x


def test_a_rule_registered_on_a_method_is_used():
    x = tg.delayed(np.array([0.4, 1.6]))
    np.testing.assert_array_equal(tg.grad(tnp.sum(Rounder().round(x)), x).compute(), [1, 1])
    assert Rounder().double(3).compute() == Rounder.double(3).compute() == 6


def test_delayeds_in_the_fields_of_a_methods_instance_are_found():
    import dataclasses

    @dataclasses.dataclass
    class Layer:
        W: object

        @tg.delayed
        def forward(self, x):
            return np.sum(np.tanh(x @ self.W))

    W = tg.delayed(np.eye(2))
    layer = Layer(W)
    x = np.array([[0.5, -1.0]])
    assert np.isclose(layer.forward(x).compute(), np.sum(np.tanh(x)))
    np.testing.assert_allclose(tg.grad(layer.forward(x), W).compute(),
                               x.T @ (1 - np.tanh(x) ** 2))


def test_an_async_function_is_refused():
    async def fetch(x):
        return x

    with pytest.raises(TypeError, match="async function"):
        tg.delayed(fetch)


def test_vjp_rules_may_be_given_as_a_list():
    f = tg.delayed(lambda x, y: x * y, vjp=[lambda ans, x, y: lambda g: g * y, None])
    x = tg.delayed(2.0)
    assert tg.grad(f(x, 3.0), x).compute() == 3.0


def test_compile_options_and_calls_that_cannot_mean_what_they_say():
    x = tg.placeholder("x")
    with pytest.raises(TypeError, match="alias"):
        tg.compile(x * 2, optimize=False, optimize_graph=["cse"])
    with pytest.raises(TypeError, match="alias"):
        tg.compile(x * 2, optimize=True, optimize_graph=False)
    step = tg.compile(x * tg.placeholder("w"))
    with pytest.raises(TypeError):
        step({"x": 1.0}, {"w": 2.0})
    assert step({"x": 1.0}, w=2.0) == 2.0


def test_loading_a_file_that_is_no_archive_gives_no_unpickling_advice(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(tg.FileFormatError) as info:
        tg.load(path)
    assert "pickle" not in str(info.value)


def test_dsplit_differentiates_like_the_other_splits():
    x = np.arange(8.0).reshape(1, 2, 4)
    tg.check_grads(tg.delayed(lambda a: np.sum(np.dsplit(a, 2)[1] ** 2)), x)


def test_a_callback_whose_start_raises_lets_the_started_ones_finish():
    finished = []
    first = tg.Callback(finish=lambda graph, errored: finished.append(errored))
    broken = tg.Callback(start=lambda graph: 1 / 0)
    for scheduler in ("sync", "threads"):
        with pytest.raises(ZeroDivisionError):
            square(2).compute(scheduler=scheduler, callbacks=[first, broken])
    assert finished == [True, True]
