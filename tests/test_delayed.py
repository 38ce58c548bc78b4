"""Building graphs with tg.delayed: decorator forms, leaves, containers, operators."""

import dataclasses
import operator
import pickle
from collections import namedtuple

import numpy as np
import pytest

import taskgrad as tg


@tg.delayed
def inc(x):
    return x + 1


@tg.delayed(pure=True)
def add(x, y):
    return x + y


def test_bare_and_parameterised_decorator():
    assert isinstance(inc(1), tg.Delayed)
    assert inc(1).compute() == 2
    assert add(1, 2).compute() == 3
    assert inc.__name__ == "inc"


def test_calls_do_not_run():
    calls = []

    @tg.delayed
    def record(x):
        calls.append(x)
        return x

    d = record(1)
    assert calls == []
    assert d.compute() == 1
    assert calls == [1]


def test_impure_calls_get_distinct_keys():
    assert inc(1).key != inc(1).key
    assert inc(1).key.startswith("inc-")


def test_pure_calls_share_one_key_and_node():
    a, b = add(1, 2), add(1, 2)
    assert a.key == b.key
    assert add(1, 3).key != a.key
    calls = []

    @tg.delayed(pure=True)
    def count(x):
        calls.append(x)
        return x

    assert tg.compute(count(5), count(5), scheduler="sync") == (5, 5)
    assert calls == [5]


def test_pure_key_depends_on_array_content():
    x = np.arange(10.0)
    y = x.copy()
    y[3] = -1
    assert add(x, 1).key == add(x.copy(), 1).key
    assert add(x, 1).key != add(y, 1).key


def test_name_replaces_prefix():
    f = tg.delayed(lambda x: x * 2, name="double")
    d = f(3)
    assert d.key.startswith("double-")
    assert d.compute() == 6


def test_lambda_prefix():
    assert tg.delayed(lambda x: x)(1).key.startswith("lambda-")


def test_wrapping_values_makes_distinct_leaves():
    a, b = tg.delayed(3), tg.delayed(3)
    assert a.key != b.key
    assert a.compute() == 3
    named = tg.delayed(np.ones(3), name="weights")
    assert named.key == "weights"
    np.testing.assert_array_equal(named.compute(), np.ones(3))
    assert tg.delayed(a) is a


def test_same_name_for_different_leaves_is_an_error():
    a = tg.delayed(1, name="w")
    b = tg.delayed(2, name="w")
    with pytest.raises(ValueError, match="share the key 'w'"):
        tg.compute(a + b)


def test_nested_containers_of_delayed_are_dependencies():
    x, y = inc(1), inc(2)

    @tg.delayed
    def describe(data):
        return data

    d = describe({"a": [x, (y, 5)], "b": {x}, "c": frozenset([y])})
    assert set(dep.key for dep in d.dependencies) == {x.key, y.key}
    assert d.compute() == {"a": [2, (3, 5)], "b": {2}, "c": frozenset([3])}


def test_namedtuple_arguments_are_rebuilt():
    Point = namedtuple("Point", "x y")

    @tg.delayed
    def norm1(p):
        assert isinstance(p, Point)
        return p.x + p.y

    assert norm1(Point(inc(1), 3)).compute() == 5


def test_kwargs_holding_delayed():
    @tg.delayed
    def scale(x, *, by):
        return x * by

    assert scale(2, by=inc(2)).compute() == 6
    assert scale(2, by=[inc(2)][0]).compute() == 6


def test_wrapping_a_container_of_delayed():
    items = tg.delayed([inc(1), inc(2), 10])
    assert items.compute() == [2, 3, 10]


def test_sum_list_of_many_delayed():
    @tg.delayed
    def sum_list(xs):
        return sum(xs)

    squares = [tg.delayed(lambda i: i * i)(i) for i in range(2000)]
    assert sum_list(squares).compute() == sum(i * i for i in range(2000))


@pytest.mark.parametrize("op", [operator.add, operator.sub, operator.mul, operator.truediv,
                                operator.floordiv, operator.mod, operator.pow,
                                operator.lt, operator.le, operator.eq, operator.ne,
                                operator.gt, operator.ge, operator.and_, operator.or_,
                                operator.xor, operator.lshift, operator.rshift])
def test_binary_operators_and_reflections(op):
    a, b = 7, 3
    assert op(tg.delayed(a), b).compute() == op(a, b)
    assert op(a, tg.delayed(b)).compute() == op(a, b)
    assert op(tg.delayed(a), tg.delayed(b)).compute() == op(a, b)


def test_matmul_and_unary_operators():
    m = np.arange(4.0).reshape(2, 2)
    np.testing.assert_array_equal((tg.delayed(m) @ m).compute(), m @ m)
    np.testing.assert_array_equal((m @ tg.delayed(m)).compute(), m @ m)
    assert (-tg.delayed(3)).compute() == -3
    assert (+tg.delayed(3)).compute() == 3
    assert abs(tg.delayed(-3)).compute() == 3
    assert (~tg.delayed(5)).compute() == ~5


def test_numpy_array_on_the_left_defers_to_delayed():
    arr = np.ones(3)
    d = arr + tg.delayed(np.arange(3.0))
    assert isinstance(d, tg.Delayed)
    np.testing.assert_array_equal(d.compute(), [1, 2, 3])


def test_getitem_attr_and_method():
    d = tg.delayed(np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(d[1].compute(), [3, 4, 5])
    np.testing.assert_array_equal(d[:, 1:].compute(), [[1, 2], [4, 5]])
    assert d.shape.compute() == (2, 3)
    assert d.sum().compute() == 15
    assert d.sum(axis=0).compute().tolist() == [3, 5, 7]
    s = tg.delayed("a,b")
    assert s.split(",").compute() == ["a", "b"]
    assert s.upper().key.startswith("upper-")


def test_calling_a_delayed_value():
    f = tg.delayed(len)
    assert tg.delayed(lambda: max)()([1, 5]).compute() == 5
    assert f([1, 2]).compute() == 2


def test_bool_raises_clear_type_error():
    with pytest.raises(TypeError, match="truth of a Delayed"):
        bool(inc(1))
    with pytest.raises(TypeError, match="truth of a Delayed"):
        if inc(1) > 0:
            pass


def test_iter_and_len_without_nout_raise():
    d = inc(1)
    with pytest.raises(TypeError, match="not iterable"):
        iter(d)
    with pytest.raises(TypeError, match="not iterable"):
        a, b = d
    with pytest.raises(TypeError, match="no known length"):
        len(d)


def test_nout_makes_unpackable():
    @tg.delayed(nout=2)
    def divmod_(a, b):
        return divmod(a, b)

    q, r = divmod_(17, 5)
    assert (q.compute(), r.compute()) == (3, 2)
    assert len(divmod_(1, 1)) == 2
    assert tg.delayed((1, 2), nout=2)[1].compute() == 2
    with pytest.raises(TypeError, match="nout"):
        tg.delayed(divmod, nout=-1)
    assert list(tg.delayed(lambda: (), nout=0)()) == []


def test_delayed_is_immutable():
    d = inc(1)
    with pytest.raises(TypeError, match="immutable"):
        d.foo = 1
    with pytest.raises(TypeError, match="immutable"):
        d[0] = 1


def test_private_attributes_are_not_tasks():
    with pytest.raises(AttributeError):
        inc(1)._secret


def test_dependencies_and_graph():
    a = inc(1)
    b = inc(a)
    c = add(a, b)
    assert set(d.key for d in c.dependencies) == {a.key, b.key}
    graph = c.graph
    assert set(graph) == {a.key, b.key, c.key}
    with pytest.raises(TypeError):
        graph["x"] = 1  # read-only mapping
    assert graph[b.key].dependencies == (a.key,)


def test_delayed_hashable_and_picklable():
    a = inc(1)
    assert {a: 1}[a] == 1
    b = pickle.loads(pickle.dumps(inc(a)))
    assert b.compute(scheduler="sync") == 3


def test_delayed_function_pickles():
    f = pickle.loads(pickle.dumps(inc))
    assert f(1).compute() == 2


def test_build_is_lazy_for_big_arrays():
    big = np.zeros(10_000_000)  # impure: building must not hash it
    d = inc(big)
    assert d.task.args[0] is big


@dataclasses.dataclass
class _Settings:
    scale: object
    offset: float = 1.0


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes"])
def test_dataclass_arguments_holding_delayeds_are_looked_into(scheduler):
    """As in dask.delayed: the task gets an instance made from the computed fields."""
    scale = tg.delayed(3.0) * 2
    out = tg.delayed(_scaled)(_Settings(scale), 2.0)
    assert out.compute(scheduler=scheduler) == 13.0
    assert out.dependencies == (scale,)


def _scaled(settings, value):
    assert isinstance(settings, _Settings)
    return settings.scale * value + settings.offset


def test_gradients_flow_through_dataclass_fields():
    x = tg.delayed(np.array([1.0, 2.0]))
    y = tg.delayed(lambda s: np.sum(s.scale ** 2) * s.offset)(_Settings(x, 3.0))
    np.testing.assert_array_equal(tg.grad(y, x).compute(scheduler="sync"), [6.0, 12.0])


def test_a_long_chain_pickles_without_recursion():
    x = tg.delayed(0)
    for _ in range(30_000):
        x = x + 1
    back = pickle.loads(pickle.dumps(x))
    assert back.key == x.key and back.compute(scheduler="sync") == 30_000


def test_none_can_be_wrapped_as_a_leaf():
    """``tg.delayed(None)`` is a leaf holding None, as in dask; options alone make a decorator."""
    assert tg.delayed(None).compute() is None
    assert tg.delayed(name="n")(lambda: 3)().compute() == 3


def test_numpy_cannot_make_an_array_of_a_lazy_value():
    d = tg.delayed(np.ones(3))
    with pytest.raises(TypeError, match="no value yet.*compute.*tnp"):
        np.asarray(d)
    np.testing.assert_array_equal((np.ones(3) + d).compute(), [2.0, 2.0, 2.0])
