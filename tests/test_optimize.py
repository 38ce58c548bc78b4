"""Optimization passes: each leaves results unchanged, and each does its job."""

from __future__ import annotations

import operator
from collections import namedtuple
from decimal import Decimal
from itertools import combinations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import taskgrad as tg
from taskgrad.delayed import _identity
from taskgrad.graph import Literal, Ref, Task
from taskgrad.optimize import COMPUTE_PASSES, PASSES, optimize, select_passes
from taskgrad.passes import Fused, cse, cull, fold_constants, fuse, inline
from taskgrad.schedulers import get

M = 1009


def addm(a, b):
    return (a + b) % M


def mulm(a, b):
    return (a * b) % M


def negm(a):
    return (-a) % M


def pair(a, b):
    return (a, b)


def total(items):
    return sum(items) % M


FUNCS = [(addm, 2), (mulm, 2), (negm, 1), (pair, 2), (_identity, 1), (total, 1)]


@st.composite
def random_graphs(draw, max_nodes=25):
    """A random DAG of modular arithmetic over ints and small int arrays.

    Tasks may be pure or not, read earlier tasks directly, through lists, or
    through ``operator.getitem`` of a pair; some tasks duplicate earlier ones
    (same function and arguments, new key) so CSE has work to do.
    """
    graph = {}
    scalars = []  # keys whose value is an int or an int array
    n = draw(st.integers(1, max_nodes))
    for i in range(n):
        key = f"t{i}"
        choice = draw(st.integers(0, 9))
        if not scalars or choice == 0:
            if draw(st.booleans()):
                value = draw(st.integers(0, M - 1))
            else:
                value = np.arange(3) * draw(st.integers(0, 50))
            graph[key] = Literal(key, value)
            scalars.append(key)
            continue
        if choice == 1 and len(graph) > 1:  # duplicate an earlier task under a new key
            old = graph[draw(st.sampled_from(sorted(graph)))]
            if type(old) is not Literal:
                graph[key] = Task(key, old.func, old.args, old.kwargs, pure=old.pure)
                if key_is_scalar(old, graph):
                    scalars.append(key)
                continue
        func, arity = draw(st.sampled_from(FUNCS))
        pure = draw(st.booleans())
        operands = [Ref(draw(st.sampled_from(scalars))) if draw(st.integers(0, 4))
                    else draw(st.integers(0, M - 1)) for _ in range(arity)]
        if func is total:
            args = ([*operands, Ref(draw(st.sampled_from(scalars)))],)
            from taskgrad.graph import Pack
            args = (Pack(list, tuple(args[0])),)
        else:
            args = tuple(operands)
        graph[key] = Task(key, func, args, pure=pure)
        if func is pair:
            getter = f"g{i}"
            graph[getter] = Task(getter, operator.getitem, (Ref(key), draw(st.integers(0, 1))),
                                 pure=draw(st.booleans()))
            scalars.append(getter)
        else:
            scalars.append(key)
    keys = draw(st.lists(st.sampled_from(sorted(graph)), min_size=1, max_size=4, unique=True))
    return graph, keys


def key_is_scalar(task, graph):
    return task.func is not pair


def same(a, b):
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and np.array_equal(a, b)


def check_graph(graph, keys):
    for key in keys:
        assert key in graph
    for key, task in graph.items():
        assert isinstance(task, Task) and task.key == key
        assert all(dep in graph for dep in task.dependencies)


subsets = [set(c) for r in range(len(PASSES) + 1) for c in combinations(PASSES, r)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs(), st.sampled_from(subsets))
def test_any_passes_give_the_unoptimized_results(graph_keys, passes):
    graph, keys = graph_keys
    expected = get(graph, keys, scheduler="sync")
    optimized = optimize(graph, keys, passes)
    check_graph(optimized, keys)
    assert same(tuple(get(optimized, keys, scheduler="sync")), tuple(expected))
    if passes - {"cse"}:  # these passes cull as they go; cse adds at most an alias per output
        assert len(optimized) <= len(cull(graph, keys)) + len(keys)


@settings(max_examples=30, deadline=None)
@given(random_graphs(max_nodes=15))
def test_optimized_graph_runs_on_threads(graph_keys):
    graph, keys = graph_keys
    optimized = optimize(graph, keys, PASSES)
    assert same(tuple(get(optimized, keys, scheduler="threads")),
                tuple(get(graph, keys, scheduler="sync")))


def test_fused_graph_runs_on_processes():
    x = tg.delayed(3, name="x")
    y = x
    for _ in range(5):
        y = tg.delayed(negm)(tg.delayed(addm)(y, 1))
    graph = optimize(dict(y.graph), [y.key], ["fuse"])
    assert len(graph) == 2 and isinstance(graph[y.key].func, Fused)
    assert get(graph, [y.key], scheduler="processes") == [y.compute(scheduler="sync")]


# ---------------------------------------------------------------- cull

def test_cull_drops_dead_tasks():
    graph = {"a": Literal("a", 1), "b": Task("b", negm, (Ref("a"),)),
             "dead": Task("dead", negm, (Ref("b"),))}
    assert list(cull(graph, ["b"])) == ["a", "b"]


# ---------------------------------------------------------------- cse

def test_cse_merges_equal_pure_tasks_only():
    a = Literal("a", 5)
    graph = {
        "a": a,
        "p1": Task("p1", addm, (Ref("a"), 1), pure=True),
        "p2": Task("p2", addm, (Ref("a"), 1), pure=True),
        "impure1": Task("impure1", addm, (Ref("a"), 2)),
        "impure2": Task("impure2", addm, (Ref("a"), 2)),
        "float": Task("float", addm, (Ref("a"), 1.0), pure=True),
        "q1": Task("q1", negm, (Ref("p1"),), pure=True),
        "q2": Task("q2", negm, (Ref("p2"),), pure=True),
        "out": Task("out", pair, (Pack_list(["q1", "q2", "impure1", "impure2", "float"]), 0)),
    }
    out = cse(graph, ["out"])
    assert "p2" not in out and "q2" not in out  # merged, and so is what reads it
    assert "impure1" in out and "impure2" in out
    assert "float" in out  # 1.0 is not 1 for CSE
    assert get(out, ["out"], "sync") == get(graph, ["out"], "sync")


def Pack_list(keys):
    from taskgrad.graph import Pack
    return Pack(list, tuple(Ref(k) for k in keys))


def test_cse_leaves_a_graph_without_duplicates_alone():
    graph = {"a": Literal("a", 2), "x": Task("x", negm, (Ref("a"),), pure=True),
             "y": Task("y", addm, (Ref("a"), 1), pure=True), "dead": Task("dead", negm, (1,))}
    assert cse(graph, ["x", "y"]) is graph


def test_cse_keeps_requested_duplicates_as_aliases():
    graph = {"a": Literal("a", 2), "x": Task("x", negm, (Ref("a"),), pure=True),
             "y": Task("y", negm, (Ref("a"),), pure=True)}
    out = cse(graph, ["x", "y"])
    assert out["y"].func is _identity and out["y"].dependencies == ("x",)
    assert get(out, ["x", "y"], "sync") == [M - 2, M - 2]


def test_cse_keeps_equal_looking_but_different_literals_apart():
    """0.0 and -0.0, True/1/1.0 inside namedtuples and sets, and equal but distinct objects
    are different inputs: merging them changed results."""
    point = namedtuple("point", "v")
    pairs = [(0.0, -0.0), (np.float64(0.0), np.float64(-0.0)), (point(True), point(1)),
             (point(1), point(1.0)), (frozenset({1}), frozenset({1.0})),
             (Decimal("1.0"), Decimal("1.00")), (1j, complex(0.0, 1.0) * -1 * -1 + -0.0)]
    for a, b in pairs:
        graph = {"a": Task("a", repr, (a,), pure=True), "b": Task("b", repr, (b,), pure=True)}
        out = cse(graph, ["a", "b"])
        assert get(out, ["a", "b"], "sync") == [repr(a), repr(b)], (a, b)
    same = {"a": Task("a", repr, ((1, "x", 2.5),), pure=True),
            "b": Task("b", repr, ((1, "x", 2.5),), pure=True)}
    assert cse(same, ["a", "b"])["b"].func is _identity  # equal numbers, strings, tuples merge


def test_cse_compares_arrays_by_identity():
    arr = np.arange(3)
    graph = {"a": Task("a", np.add, (arr, 1), pure=True), "b": Task("b", np.add, (arr, 1), pure=True),
             "c": Task("c", np.add, (np.arange(3), 1), pure=True),
             "out": Task("out", pair, (Ref("a"), Pack_list(["b", "c"])))}
    out = cse(graph, ["out"])
    assert "b" not in out and "c" in out


def test_compute_runs_cse_when_asked():
    calls = []

    def f(x, y):
        calls.append(1)
        return x + y

    a = tg.delayed(1, name="a")
    # same pure function and inputs under two names: two keys, one computation
    first, second = tg.delayed(f, pure=True, name="p")(a, 1), tg.delayed(f, pure=True, name="q")(a, 1)
    assert first.key != second.key
    assert tg.compute(first + second, scheduler="sync", optimize_graph=["cse"]) == (4,)
    assert len(calls) == 1
    # impure calls always run, each of them
    u, v = tg.delayed(f)(a, 2), tg.delayed(f)(a, 2)
    assert tg.compute(u, v, scheduler="sync", optimize_graph=["cse"]) == (3, 3)
    assert len(calls) == 3
    assert tg.compute(first + second, scheduler="sync") == (4,)  # default: no passes
    assert len(calls) == 5


# ---------------------------------------------------------------- fold

def test_fold_computes_constant_subgraphs_once():
    calls = []

    @tg.delayed
    def expensive(n):
        calls.append(n)
        return np.arange(n, dtype=float)

    x = tg.placeholder("x")
    w = expensive(3) * 2
    step = tg.compile(x * w + expensive(3).sum(), scheduler="sync")
    assert len(calls) == 2
    for value in (1.0, 2.0, 3.0):
        np.testing.assert_array_equal(step(x=value), value * np.arange(3) * 2 + 3)
    assert len(calls) == 2  # never again
    assert all(type(t) is not Task or "expensive" not in repr(t) for t in step.graph.values())


def test_fold_without_placeholders_computes_requested_keys():
    a = tg.delayed(np.arange(4), name="a")
    b = (a * 2).sum()
    graph = fold_constants(dict(b.graph), [b.key])
    assert list(graph) == [b.key] and type(graph[b.key]) is Literal and graph[b.key].value == 12


def test_fold_keeps_varying_tasks():
    x = tg.placeholder("x")
    y = (x + 1) * tg.delayed(2, name="two")
    graph = fold_constants(dict(y.graph), [y.key])
    assert set(graph) == set(y.graph)


# ---------------------------------------------------------------- inline

def test_inline_moves_literals_and_getitem_into_readers():
    graph = {"a": Literal("a", 4), "p": Task("p", pair, (Ref("a"), 5)),
             "first": Task("first", operator.getitem, (Ref("p"), 0)),
             "second": Task("second", operator.getitem, (Ref("p"), 1)),
             "out": Task("out", addm, (Ref("first"), Ref("second")))}
    out = inline(graph, ["out"])
    assert set(out) == {"p", "out"}
    assert out["p"].args == (4, 5) and out["p"].dependencies == ()
    assert isinstance(out["out"].func, Fused) and out["out"].dependencies == ("p",)
    assert get(out, ["out"], "sync") == [9]


def test_inline_keeps_requested_keys_and_placeholders():
    x = tg.placeholder("x")
    first = tg.delayed(pair, nout=2)(x, 1)[0]
    graph = inline(dict(first.graph), [first.key, "x"])
    assert first.key in graph and "x" in graph


# ---------------------------------------------------------------- fuse

def test_fuse_turns_a_chain_into_one_task():
    x = tg.delayed(1, name="x")
    y = x
    for _ in range(10):
        y = tg.delayed(addm)(y, 1)
    graph = fuse(dict(y.graph), [y.key])
    assert list(graph) == ["x", y.key]
    assert len(graph[y.key].func.tasks) == 10
    assert get(graph, [y.key], "sync") == [11]


def test_fuse_keeps_branches_and_requested_keys():
    x = tg.delayed(1, name="x")
    a = tg.delayed(negm)(x)
    b = tg.delayed(addm)(a, 1)  # a is read twice: not fused into b
    c = tg.delayed(addm)(a, b)
    d = tg.delayed(negm)(c)
    graph = fuse(dict(d.graph), [d.key, b.key])
    assert a.key in graph and b.key in graph and c.key not in graph
    assert graph[d.key].func.tasks[0].key == c.key
    assert get(graph, [d.key, b.key], "sync") == [*tg.compute(d, b, optimize_graph=False)]


def test_fuse_absorbs_leaf_inputs_of_chain_links():
    x = tg.placeholder("x")
    h = x
    for i in range(4):
        h = tg.delayed(mulm)(h, tg.delayed(i + 2, name=f"w{i}"))
    graph = fuse(dict(h.graph), [h.key])
    fused = graph[h.key].func
    assert len(fused.tasks) == 4 and fused.inputs[0] == "x"


class Blob:
    """Counts live instances, to see when a fused chain lets go of its values."""

    live = 0

    def __init__(self, n):
        Blob.live += 1
        self.n = n

    def __del__(self):
        Blob.live -= 1


def grow(blob):
    seen.append(Blob.live)  # live now: the input only (earlier ones are gone)
    return Blob(blob.n + 1)


seen = []


def test_fused_task_drops_intermediates_early():
    y = tg.delayed(Blob)(0)
    for _ in range(6):
        y = tg.delayed(grow)(y)
    graph = fuse(dict(y.graph), [y.key])
    assert len(graph) == 1
    seen.clear()
    assert get(graph, [y.key], "sync")[0].n == 6
    assert seen == [1] * 6


# ---------------------------------------------------------------- pipeline

def test_select_passes():
    assert select_passes(True) == COMPUTE_PASSES
    assert select_passes(False) == () and select_passes(None) == ()
    assert select_passes({"fuse": True, "cse": False}) == ("fuse",)
    assert select_passes({"cull": True}) == ("cull",)
    assert select_passes({"fold": False}, default=PASSES) == ("cull", "cse", "inline", "fuse")
    assert select_passes(["fuse", "cse"]) == ("cse", "fuse")
    assert select_passes("fold") == ("fold",)
    with pytest.raises(ValueError, match="unknown optimization pass.*'fusion'"):
        select_passes(["fusion"])
    with pytest.raises(TypeError, match="optimize must be"):
        select_passes(3)


def test_compute_takes_a_pass_selection():
    x = tg.delayed(np.arange(3), name="x")
    y = ((x + 1) * 2)[1:].sum()
    for passes in (True, False, PASSES, {"fuse": True}, ["inline"]):
        assert y.compute(optimize_graph=passes) == 10
    with pytest.raises(ValueError, match="unknown optimization pass"):
        y.compute(optimize_graph=["nope"])


def test_long_chain_needs_no_recursion():
    graph = {"t0": Literal("t0", 0)}
    for i in range(1, 100_000):
        graph[f"t{i}"] = Task(f"t{i}", addm, (Ref(f"t{i - 1}"), 1), pure=(i % 2 == 0))
    graph["dup"] = Task("dup", addm, (Ref("t99998"), 1), pure=True)
    keys = ["t99999", "dup"]
    out = optimize(graph, keys, PASSES)
    assert get(out, keys, "sync") == [99999 % M, 99999 % M]


def delayeds_of(graph):
    """Delayed objects over a raw graph (dependencies first), as ``tg.load`` builds them."""
    from taskgrad.delayed import Delayed
    from taskgrad.graph import postorder

    out = {}
    for key in postorder(graph, list(graph)):
        task = graph[key]
        out[key] = Delayed(key, task, tuple(out[d] for d in task.dependencies))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs(), st.data())
def test_compiled_random_graphs_equal_dynamic(graph_keys, data):
    """Some literal leaves become placeholders fed with the same values: folding,
    inlining and fusion then work around varying parts."""
    from taskgrad.placeholder import Placeholder

    graph, keys = graph_keys
    expected = get(graph, keys, scheduler="sync")
    literals = sorted(k for k, t in graph.items() if type(t) is Literal)
    fed = data.draw(st.lists(st.sampled_from(literals), unique=True)) if literals else []
    feeds = {k: graph[k].value for k in fed}
    static = {k: (Placeholder(k) if k in feeds else t) for k, t in graph.items()}
    nodes = delayeds_of(static)
    passes = data.draw(st.sampled_from([True, False, ["fold"], ["fold", "inline", "fuse"]]))
    step = tg.compile([nodes[k] for k in keys], optimize=passes, scheduler="sync")
    needed = {k: v for k, v in feeds.items() if k in step.placeholders}
    assert same(step(needed), tuple(expected))
    check_graph(step.graph, keys)


@pytest.mark.parametrize("passes", [["fuse"], ["inline"]])
def test_an_error_inside_a_fused_task_names_the_task_that_failed(passes):
    def bad(v):
        raise ValueError("boom")

    failing = tg.delayed(bad)(5) if passes == ["fuse"] else tg.delayed([1, 2])[5]
    out = (failing + 1) * 2
    with pytest.raises((ValueError, IndexError)) as info:
        tg.compute(out, optimize_graph=passes, scheduler="sync")
    assert info.value.__notes__[0] == f"taskgrad: raised while running task {failing.key!r}"
