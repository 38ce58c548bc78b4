"""Property: random DAGs give identical results on every scheduler."""

import operator

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import taskgrad as tg

def mod_mul(x, y):
    return (x * y) % 10007


FUNCS = [
    (operator.add, 2),
    (mod_mul, 2),
    (lambda x: -x, 1),
    (lambda x, y, z: x - y + 2 * z, 3),
    (lambda *xs: sum(xs) % 1009, 4),
]


@st.composite
def random_dag(draw):
    """A DAG of 1-300 nodes: each node applies a function to earlier nodes or constants."""
    n = draw(st.integers(1, 300))
    leaves = draw(st.lists(st.integers(-5, 5), min_size=1, max_size=5))
    specs = []
    for i in range(n):
        f = draw(st.integers(0, len(FUNCS) - 1))
        arity = FUNCS[f][1]
        args = [draw(st.integers(0, len(leaves) + i - 1)) for _ in range(arity)]
        specs.append((f, args))
    outputs = draw(st.lists(st.integers(0, len(leaves) + n - 1), min_size=1, max_size=5))
    return leaves, specs, outputs


def build(leaves, specs, outputs):
    nodes = [tg.delayed(v) for v in leaves]
    for f, args in specs:
        func, _ = FUNCS[f]
        nodes.append(tg.delayed(func)(*[nodes[a] for a in args]))
    return [nodes[o] for o in outputs]


def evaluate(leaves, specs, outputs):
    values = list(leaves)
    for f, args in specs:
        values.append(FUNCS[f][0](*[values[a] for a in args]))
    return tuple(values[o] for o in outputs)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_dag())
def test_random_dags_same_on_every_local_scheduler(dag):
    expected = evaluate(*dag)
    outs = build(*dag)
    assert tg.compute(*outs, scheduler="sync") == expected
    assert tg.compute(*outs, scheduler="threads") == expected
    assert tg.compute(*outs, scheduler="threads", num_workers=1) == expected


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_dag())
def test_random_dags_same_on_processes(dag):
    assert tg.compute(*build(*dag), scheduler="processes") == evaluate(*dag)


@settings(max_examples=5, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(dag=random_dag())
def test_random_dags_same_on_distributed(dask_client, dag):
    assert tg.compute(*build(*dag), scheduler=dask_client) == evaluate(*dag)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_dag())
def test_one_walk_collects_the_graph_and_its_postorder(dag):
    """compute collects a graph and orders it in one walk of the Delayeds: the same graph
    as collect_graph, in the same order as graph.postorder."""
    from taskgrad.delayed import collect_graph, collect_in_order
    from taskgrad.graph import postorder

    outs = build(*dag)
    graph, order = collect_in_order(outs)
    assert graph == collect_graph(outs)
    assert order == postorder(graph, list(dict.fromkeys(d.key for d in outs)))
