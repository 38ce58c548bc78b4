"""The graph: templates, execution, iterative order, cycles, missing keys, huge chains."""

import pytest

import taskgrad as tg
from taskgrad.graph import (CycleError, Literal, MissingDependencyError, Pack, Ref, Task,
                            execute, materialize, postorder)


def test_task_dependencies_from_templates():
    t = Task("t", max, (Ref("a"), Pack(list, (Ref("b"), 1, Ref("a")))), {"k": Ref("c")})
    assert t.dependencies == ("a", "b", "c")


def test_execute_fills_nested_templates():
    t = Task("t", lambda xs, d: (xs, d),
             (Pack(list, (Ref("a"), Pack(tuple, (Ref("b"), 2)))),
              Pack(dict, (("x", Ref("a")),))))
    assert execute(t, {"a": 1, "b": 3}) == ([1, (3, 2)], {"x": 1})
    assert materialize(Pack(set, (Ref("a"), 5)), {"a": 1}) == {1, 5}


def test_execute_top_level_refs_and_kwargs():
    t = Task("t", lambda a, b, c=0: a - b + c, (Ref("x"), 10), {"c": 100})
    assert execute(t, {"x": 1}) == 91


def test_literal_task():
    lit = Literal("w", [1, 2])
    assert lit.dependencies == ()
    assert execute(lit, {}) == [1, 2]
    assert lit.value == [1, 2]


def test_postorder_puts_dependencies_first_and_culls():
    g = {
        "a": Literal("a", 1),
        "b": Task("b", abs, (Ref("a"),)),
        "c": Task("c", max, (Ref("a"), Ref("b"))),
        "unused": Task("unused", abs, (Ref("a"),)),
    }
    order = postorder(g, ["c"])
    assert order == ["a", "b", "c"]


def test_cycle_is_reported_with_its_path():
    g = {
        "a": Task("a", abs, (Ref("b"),)),
        "b": Task("b", max, (Ref("c"), Ref("d"))),
        "c": Task("c", abs, (Ref("a"),)),
        "d": Literal("d", 1),
    }
    with pytest.raises(CycleError, match="'a' -> 'b' -> 'c' -> 'a'"):
        postorder(g, ["a"])
    with pytest.raises(CycleError):
        tg.get(g, ["a"], scheduler="threads")


def test_self_cycle():
    g = {"a": Task("a", abs, (Ref("a"),))}
    with pytest.raises(CycleError, match="'a' -> 'a'"):
        postorder(g, ["a"])


def test_missing_dependency_names_both_keys():
    g = {"a": Task("a", abs, (Ref("ghost"),))}
    with pytest.raises(MissingDependencyError, match="'a' depends on 'ghost'"):
        tg.get(g, ["a"], scheduler="sync")
    with pytest.raises(MissingDependencyError, match="requested key 'nope'"):
        postorder(g, ["nope"])


def inc(x):
    return x + 1


def test_million_node_chain_builds_orders_and_runs():
    d_inc = tg.delayed(inc)
    x = tg.delayed(0)
    for _ in range(1_000_000):
        x = d_inc(x)
    assert len(postorder(x.graph, [x.key])) == 1_000_001
    assert x.compute(scheduler="sync") == 1_000_000
    del x  # freeing a million-deep chain of objects must not overflow the C stack


def test_long_chain_on_parallel_schedulers():
    d_inc = tg.delayed(inc)
    x = tg.delayed(0)
    for _ in range(100_000):
        x = d_inc(x)
    assert x.compute(scheduler="threads") == 100_000
    assert x.compute(scheduler="processes") == 100_000


def test_run_early_tasks_follow_their_inputs_at_once():
    from taskgrad.graph import run_early

    @run_early
    def size_of(x):
        return len(x)

    class Unhashable:
        __hash__ = None

        def __call__(self, *args):
            return args

    graph = {
        "a": Task("a", list, ((1, 2),)),
        "b": Task("b", Unhashable(), (Ref("a"),)),
        "c": Task("c", list, (Ref("b"),)),
        "early": Task("early", size_of, (Ref("a"),)),
        "early2": Task("early2", size_of, ([Ref("early"), Ref("a")],)),
        "out": Task("out", list, ([Ref("c"), Ref("early2")],)),
    }
    order = postorder(graph, ["out"])
    assert order == ["a", "early", "early2", "b", "c", "out"]
    position = {k: i for i, k in enumerate(order)}
    for key in order:
        assert all(position[d] < position[key] for d in graph[key].dependencies)
