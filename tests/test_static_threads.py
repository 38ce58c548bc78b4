"""Compiled graphs on "threads": the first call measures, later calls run fixed per-worker
programs.  Same values as "sync", failures and Ctrl-C stop the run, values die early, and a
run never waits for a busy thread."""

from __future__ import annotations

import gc
import os
import threading
import time
import weakref

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import taskgrad as tg
import taskgrad.numpy as tnp
from taskgrad.schedulers.partition import partition
from taskgrad.schedulers.plan import Plan
from taskgrad.schedulers.static_threads import StaticThreads


def static_of(step):
    """The per-worker programs a compiled step runs once planned (None before)."""
    run = step._run._run_fast
    return run if isinstance(run, StaticThreads) else None


def planned(outputs, **kw):
    """A compiled step on 2 threads (its schedule is fixed after its first two calls)."""
    return tg.compile(outputs, scheduler="threads", num_workers=2, **kw)


def split(outputs):
    """A compiled step on 2 threads whose schedule is fixed at once, as if every unit took a
    millisecond: independent branches then run on both threads, whatever they really cost
    (measured, this test's tiny tasks would all stay on the calling thread)."""
    step = planned(outputs)
    run = step._run
    run._run_fast = StaticThreads(run.plan, run.keys, [1e-3] * len(run.plan.units), 2)
    return step


# ---------------------------------------------------------------- partition

def chains_plan(n_chains, length):
    """``n_chains`` independent chains of ``length`` tasks whose ends are summed."""
    ends = []
    for c in range(n_chains):
        x = tg.delayed(float(c), name=f"leaf{c}")
        for _ in range(length):
            x = tnp.sin(x) + 1.0
        ends.append(x)
    total = sum(ends[1:], ends[0])
    return Plan(dict(total.graph), [total.key])


def check_valid(plan, owner, order):
    """Every unit is run once, and within its worker after every input it reads there;
    across workers, after its inputs started (so waiting never goes in a circle)."""
    assert sorted(u for units in order for u in units) == list(range(len(plan.units)))
    position = {u: i for units in order for i, u in enumerate(units)}
    producer = {unit[-1].key: u for u, unit in enumerate(plan.units)}
    for u in range(len(plan.units)):
        for key in plan.unit_inputs[u]:
            p = producer.get(key)
            if p is not None and owner[p] == owner[u]:
                assert position[p] < position[u]


def test_independent_chains_go_one_to_each_worker():
    plan = chains_plan(2, 20)
    owner, order = partition(plan, 2, [1.0] * len(plan.units))
    check_valid(plan, owner, order)
    producer = {unit[-1].key: u for u, unit in enumerate(plan.units)}
    crossing = sum(1 for u in range(len(plan.units)) for k in plan.unit_inputs[u]
                   if k in producer and owner[producer[k]] != owner[u])
    assert crossing == 1  # only one chain's end, on its way to the sum
    assert abs(len(order[0]) - len(order[1])) <= 2


def test_a_single_chain_stays_on_one_worker():
    x = tg.delayed(1.0, name="x")
    for _ in range(30):
        x = tnp.exp(x * 0.5)
    plan = Plan(dict(x.graph), [x.key])
    owner, order = partition(plan, 2, [1.0] * len(plan.units))
    assert len(set(owner)) == 1


def test_costs_balance_independent_units():
    """One unit costs as much as all the others: it runs alone on a worker."""
    parts = [tnp.sqrt(tg.delayed(float(i), name=f"v{i}")) for i in range(9)]
    plan = Plan({k: t for p in parts for k, t in p.graph.items()}, [p.key for p in parts])
    cost = [1.0] * len(plan.units)
    cost[0] = 8.0
    owner, order = partition(plan, 2, cost)
    assert order[owner[0]] == [0]


def test_small_graphs_stay_on_the_calling_thread():
    """Units far cheaper than handing a value to another thread are not worth moving."""
    plan = chains_plan(2, 20)
    owner, order = partition(plan, 2, [1e-6] * len(plan.units))
    assert set(owner) == {0}


@pytest.mark.parametrize("cost, workers_used", [(1e-6, 1), (1e-3, 2)])
def test_a_unit_moves_to_another_thread_only_when_it_ends_sooner_there(cost, workers_used):
    x = tg.delayed(1.0, name="x")
    head = tnp.exp(x)
    branches = [tnp.sin(head * i) for i in range(2)]
    plan = Plan({k: t for b in branches for k, t in b.graph.items()}, [b.key for b in branches])
    owner, order = partition(plan, 2, [cost] * len(plan.units))
    check_valid(plan, owner, order)
    assert len(set(owner)) == workers_used


def test_partition_is_deterministic():
    plan = chains_plan(3, 10)
    cost = [((u * 7919) % 13) / 13 + 0.1 for u in range(len(plan.units))]
    assert partition(plan, 2, cost) == partition(plan, 2, cost)
    owner, order = partition(plan, 3, cost)
    check_valid(plan, owner, order)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_partitions_of_random_graphs_are_valid_and_compute_the_same(data):
    n = data.draw(st.integers(1, 40))
    workers = data.draw(st.integers(1, 4))
    leaf = tg.delayed(np.arange(3.0), name="leaf")
    nodes = [leaf]
    for i in range(n):
        picks = data.draw(st.lists(st.integers(0, len(nodes) - 1), min_size=1, max_size=3))
        nodes.append(tnp.sum(tnp.stack([nodes[j] for j in picks]), axis=0) * 0.5 + i)
    outputs = data.draw(st.lists(st.integers(1, n), min_size=1, max_size=4, unique=True))
    outputs = [nodes[i] for i in outputs]
    expected = tg.compute(*outputs, scheduler="sync")
    step = tg.compile(list(outputs), scheduler="threads", num_workers=workers)
    costs = data.draw(st.lists(st.floats(0, 1), min_size=len(step._run.plan.units),
                               max_size=len(step._run.plan.units)))
    step._run._run_fast = StaticThreads(step._run.plan, step._run.keys, costs, workers)
    check_valid(step._run.plan, static_of(step).owner, static_of(step).order)
    for _ in range(2):
        for got, want in zip(step(), expected):
            np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- running

def data_parallel_step(shards=2):
    """A small MLP's loss over ``shards`` slices of a batch and its summed gradients."""
    x = tg.placeholder("x")
    W = tg.placeholder("W")
    b = tg.placeholder("b")
    losses = []
    for i in range(shards):
        xs = x[i * 8:(i + 1) * 8]
        h = tnp.tanh(xs @ W + b)
        losses.append(tnp.mean(h ** 2))
    grads = [tg.grad(loss, [W, b]) for loss in losses]
    total = sum(losses[1:], losses[0])
    return [total, *(sum(g[1:], g[0]) for g in zip(*grads))]


FEEDS = {"x": np.random.default_rng(0).normal(size=(16, 5)),
         "W": np.random.default_rng(1).normal(size=(5, 4)), "b": np.zeros(4)}


def test_calls_after_the_first_run_the_fixed_schedule_with_the_same_bits():
    outputs = data_parallel_step()
    want = tg.compile(outputs, scheduler="sync")(FEEDS)
    step = planned(outputs)
    for call in range(4):
        assert (static_of(step) is not None) == (call >= 2)
        got = step(FEEDS)
        for g, w in zip(got, want):
            assert np.array_equal(g, w)  # bit for bit


def test_data_parallel_shards_stay_on_their_own_worker():
    step = split(data_parallel_step())
    static, plan = static_of(step), step._run.plan
    # each shard's forward pass (from its matmul to its mean) runs on one worker, each shard
    # on its own, and so does the gradient of its weights (reached through the matmul's
    # shape, which it reads), its heaviest backward task
    outputs = set(step._run.keys)
    workers = []
    for start in [u for u, unit in enumerate(plan.units) if unit[0].key.startswith("matmul")]:
        shard, stack = {start}, [start]
        while stack:
            for c in plan.unit_consumers[stack.pop()]:
                key = plan.units[c][-1].key
                if c not in shard and key not in outputs and not key.startswith(
                        ("seed", "vjp-mean", "vjp-pow", "vjp-tanh", "vjp-add")):
                    shard.add(c)
                    stack.append(c)
        assert any(plan.units[u][0].key.startswith("vjp-matmul") for u in shard)
        assert len({static.owner[u] for u in shard}) == 1
        workers.append(static.owner[start])
    assert sorted(workers) == [0, 1]
    assert static.latch_count <= 6  # what crosses: the shards' results on their way to sums


def failing_on_helpers(switch, exc):
    """A task that returns its input, or raises ``exc`` on a helper thread while
    ``switch["on"]``."""
    @tg.delayed
    def maybe_fail(x):
        if switch["on"] and threading.current_thread() is not threading.main_thread():
            raise exc
        return x
    return maybe_fail


def test_a_failing_task_on_a_helper_is_raised_with_its_key():
    boom = {"on": False}
    maybe_fail = failing_on_helpers(boom, KeyError("bad key"))
    a = tg.placeholder("a")
    branches = [maybe_fail(tnp.exp(a + i)) for i in range(2)]
    step = split(branches)
    assert len(step(a=1.0)) == 2
    assert len(step(a=1.0)) == 2
    boom["on"] = True
    with pytest.raises(KeyError, match="bad key") as info:
        step(a=1.0)
    assert any("maybe_fail" in note for note in info.value.__notes__)
    boom["on"] = False
    np.testing.assert_allclose(step(a=0.0), [1.0, np.e])  # the next call runs as usual


def two_chains(task, length, offset=0):
    """Two independent chains ``task(x, i)`` from the placeholder ``a``: chain ``c`` counts
    ``i`` from ``c * offset``."""
    a = tg.placeholder("a")
    chains = []
    for c in range(2):
        x = a
        for i in range(c * offset, c * offset + length):
            x = task(x, i)
        chains.append(x)
    return chains


def test_no_task_starts_after_a_failure():
    started = []
    failing = {"on": False}

    @tg.delayed
    def work(x, i):
        started.append(i)
        if failing["on"] and i == 3:
            raise ValueError("fail")
        time.sleep(0.001)
        return x + i

    step = split(two_chains(work, 100, offset=100))
    step(a=0)
    step(a=0)
    started.clear()
    failing["on"] = True
    with pytest.raises(ValueError):
        step(a=0)
    # the failing chain stopped at 3; the other chain stops at its next task
    assert len(started) < 60


def test_a_failure_wakes_a_caller_waiting_for_a_value_from_the_helper():
    failing = {"on": False}

    @tg.delayed
    def late(x):
        if failing["on"] and threading.current_thread() is not threading.main_thread():
            time.sleep(0.1)  # the calling thread is done with its branch and waits for this
            raise RuntimeError("helper failed")
        return x

    a = tg.placeholder("a")
    step = split(tnp.exp(a) + late(tnp.sin(a)))
    step(a=0.5)
    step(a=0.5)
    failing["on"] = True
    with pytest.raises(RuntimeError, match="helper failed") as info:
        step(a=0.5)
    assert any("late" in note for note in info.value.__notes__)


def test_ctrl_c_in_the_calling_thread_stops_the_helpers():
    count = []
    interrupt = {"on": False}

    @tg.delayed
    def tick(x, i):
        count.append(i)
        if interrupt["on"] and threading.current_thread() is threading.main_thread() and i == 5:
            raise KeyboardInterrupt
        time.sleep(0.002)
        return x + 1

    step = split(two_chains(tick, 40))
    assert step(a=0) == (40, 40)
    assert step(a=0) == (40, 40)
    interrupt["on"] = True
    count.clear()
    with pytest.raises(KeyboardInterrupt):
        step(a=0)
    time.sleep(0.05)
    assert len(count) < 30
    interrupt["on"] = False
    assert step(a=1) == (41, 41)


class Blob:
    """A value that can be watched with a weak reference."""

    def __init__(self, n):
        self.n = n


def test_values_die_after_their_last_reader_even_across_workers():
    refs = {}

    @tg.delayed
    def make(x, tag):
        blob = Blob(x)
        refs[tag] = weakref.ref(blob)
        return blob

    @tg.delayed
    def both(one, two):
        return one.n + two.n

    @tg.delayed
    def alive_after(x, y, tags):
        gc.collect()
        return x, [tag for tag in tags if refs[tag]() is not None]

    a = tg.placeholder("a")
    blobs = [make(tnp.exp(a + i), f"b{i}") for i in range(2)]  # two branches: one blob crosses
    # (a second input keeps alive_after out of both's fused chain, whose inputs live to its end)
    step = split(alive_after(both(*blobs), tnp.sin(a), ["b0", "b1"]))
    for _ in range(3):
        value, alive = step(a=0.0)
        assert value == pytest.approx(1 + np.e)
        assert alive == []
    assert static_of(step).latch_count >= 1


def test_a_task_running_a_compiled_graph_does_not_wait_on_its_own_thread():
    inner_a = tg.placeholder("a")
    inner = split([tnp.exp(inner_a), tnp.sin(inner_a)])

    @tg.delayed
    def nested(x):
        e, s = inner(a=x)
        return float(e + s)

    a = tg.placeholder("a")
    outer = split([nested(a + 1.0), nested(a + 2.0)])
    for _ in range(4):
        got = outer(a=0.0)
    np.testing.assert_allclose(got, [np.exp(1) + np.sin(1), np.exp(2) + np.sin(2)])


def test_two_threads_call_one_step_at_once():
    step = split(data_parallel_step())
    want = step(FEEDS)
    results, errors = [], []

    def call():
        try:
            for _ in range(20):
                results.append(step(FEEDS))
        except BaseException as exc:  # noqa: BLE001 - checked below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got in results:
        for g, w in zip(got, want):
            assert np.array_equal(g, w)


def test_helper_threads_are_reused_across_calls():
    step = split(data_parallel_step())
    step(FEEDS)
    step(FEEDS)
    before = threading.active_count()
    for _ in range(30):
        step(FEEDS)
    assert threading.active_count() == before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_runs_a_planned_step():
    step = split(data_parallel_step())
    want = step(FEEDS)
    step(FEEDS)
    pid = os.fork()
    if pid == 0:  # the child: its helper threads are gone; new ones start
        ok = all(np.array_equal(g, w) for g, w in zip(step(FEEDS), want))
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_callbacks_watch_every_task_of_the_fixed_schedule():
    step = split(data_parallel_step())
    want = step(FEEDS)
    with tg.Profiler() as prof:
        got = step(FEEDS)
    for g, w in zip(got, want):
        assert np.array_equal(g, w)
    static, plan = static_of(step), step._run.plan
    assert len(prof.results) == sum(map(len, plan.units))
    worker_of = {task.key: static.owner[u] for u, unit in enumerate(plan.units) for task in unit}
    assert {r.worker for r in prof.results} == {0, 1}
    assert all(r.worker == worker_of[r.key] and r.start <= r.end for r in prof.results)
    assert step(FEEDS) is not None  # and without callbacks again


def test_a_callback_raising_fails_the_run_and_finishes_the_others():
    finished = []

    class Broken(tg.Callback):
        def posttask(self, info):
            if info.worker == 1:
                raise RuntimeError("bug in my callback")

        def finish(self, graph, errored):
            finished.append(errored)

    step = split(data_parallel_step())
    with pytest.raises(RuntimeError, match="bug in my callback"):
        step(FEEDS, callbacks=[Broken()])
    assert finished == [True]
    assert step(FEEDS) is not None


def test_a_graph_too_large_to_write_out_runs_on_the_dynamic_scheduler():
    """Over ``MAX_STEPS`` tasks a compiled graph keeps the shared loop: still in parallel."""
    import taskgrad.schedulers.prepared as prepared

    threads = set()

    @tg.delayed
    def where(x):
        threads.add(threading.current_thread().name)
        time.sleep(0.05)  # each branch waits: two threads overlap
        return x

    a = tg.placeholder("a")
    branches = []
    for b in range(2):
        x = where(a + b)
        for _ in range(30):
            x = x + 1
        branches.append(x)
    old = prepared.MAX_STEPS
    prepared.MAX_STEPS = 20
    try:
        step = planned(branches)
    finally:
        prepared.MAX_STEPS = old
    for _ in range(3):
        assert step(a=0) == (30, 31)
    assert step._run._run_fast is None
    assert len(threads) == 2


def test_the_first_failure_is_raised_even_when_the_calling_thread_fails_later():
    on = {"on": False}

    @tg.delayed
    def main_fails_late(x):
        if on["on"] and threading.current_thread() is threading.main_thread():
            time.sleep(0.2)
            raise TypeError("second")
        return x

    helper_fails_first = failing_on_helpers(on, ValueError("first"))
    a = tg.placeholder("a")
    step = split([main_fails_late(tnp.exp(a)), helper_fails_first(tnp.sin(a))])
    step(a=1.0)
    on["on"] = True
    with pytest.raises(ValueError, match="first"):
        step(a=1.0)


def test_no_hook_is_called_after_finish_when_a_run_fails():
    events = []
    on = {"v": False}

    @tg.delayed
    def slow(x):
        if on["v"]:
            time.sleep(0.2)
        return x

    @tg.delayed
    def bad(x):
        if on["v"]:
            time.sleep(0.02)
            raise ValueError("fails")
        return x

    cb = tg.Callback(posttask=lambda info: events.append("posttask"),
                     finish=lambda graph, errored: events.append("finish"))
    a = tg.placeholder("a")
    step = split([bad(tnp.sin(a)), slow(tnp.cos(a))])
    step(a=0.0)
    on["v"] = True
    with pytest.raises(ValueError):
        step(a=0.0, callbacks=[cb])
    time.sleep(0.4)  # the other thread's task ends meanwhile
    assert events[-1] == "finish"


def test_what_a_hook_raises_names_no_task():
    def broken(key):
        raise RuntimeError("bug in my callback")

    a = tg.placeholder("a")
    step = split([tnp.sin(a), tnp.cos(a)])
    with pytest.raises(RuntimeError, match="bug in my callback") as info:
        step(a=0.0, callbacks=[tg.Callback(pretask=broken)])
    assert not getattr(info.value, "__notes__", None)


def test_idle_helper_threads_are_bounded_after_many_runs_at_once():
    from taskgrad.schedulers.static_threads import MAX_IDLE

    step = split(data_parallel_step())
    barrier = threading.Barrier(24)

    def call():
        barrier.wait()
        for _ in range(5):
            step(FEEDS)

    callers = [threading.Thread(target=call) for _ in range(24)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    time.sleep(0.2)  # the helpers beyond the bound end
    helpers = [t for t in threading.enumerate() if t.name == "taskgrad-program"]
    assert len(helpers) <= MAX_IDLE


def test_short_units_ready_from_the_start_stay_on_the_calling_thread():
    """Many short independent units: mostly Python holding the GIL, not worth a thread."""
    parts = [tnp.sqrt(tg.delayed(float(i), name=f"v{i}")) for i in range(50)]
    plan = Plan({k: t for p in parts for k, t in p.graph.items()}, [p.key for p in parts])
    owner, order = partition(plan, 2, [1e-4] * len(plan.units))
    assert set(owner) == {0}
    owner, order = partition(plan, 2, [1e-3] * len(plan.units))
    assert set(owner) == {0, 1}


def test_tasks_that_wait_for_io_are_spread_over_the_threads():
    """A unit's cost is its wall time: one that waits (a file, a socket) holds its thread."""
    @tg.delayed
    def fetch(i):
        time.sleep(0.02)  # waiting, not computing
        return i

    s = tg.placeholder("s")
    step = planned(tg.delayed(sum)([fetch(s + i) for i in range(6)]))
    for _ in range(3):
        assert step(s=0) == 15
    assert all(static_of(step).order)  # both threads fetch
