"""Schedulers: same results everywhere, shared work once, release, errors, no hangs."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc

import numpy as np
import pytest

import taskgrad as tg
from tasks import RangeError, add, fail, fail_with_range, inc

SCHEDULERS = ["sync", "threads", "processes"]


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_compute_many_objects_in_containers(scheduler):
    a = inc(1)
    b = add(a, 10)
    out = tg.compute(a, [b, {"x": a, "y": 7}], "plain", scheduler=scheduler)
    assert out == (2, [12, {"x": 2, "y": 7}], "plain")


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_num_workers(scheduler):
    total = add(inc(1), inc(2))
    assert total.compute(scheduler=scheduler, num_workers=1) == 5
    assert total.compute(scheduler=scheduler, num_workers=3) == 5


def test_default_scheduler_is_threads():
    seen = []

    @tg.delayed
    def where():
        seen.append(threading.current_thread().name)
        time.sleep(0.02)  # long enough for the second worker to take some
        return 1

    tg.compute(*[where() for _ in range(8)])
    assert any(name.startswith("taskgrad-worker") for name in seen)


def test_bad_scheduler_and_num_workers_are_clear_errors():
    with pytest.raises(ValueError, match="unknown scheduler 'gpu'"):
        inc(1).compute(scheduler="gpu")
    with pytest.raises(ValueError, match="num_workers must be a positive int"):
        inc(1).compute(scheduler="threads", num_workers=0)


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_shared_nodes_run_once(scheduler):
    calls = []
    lock = threading.Lock()

    @tg.delayed
    def count(x):
        with lock:
            calls.append(x)
        return x

    shared = count(1)
    outs = [add(shared, i) for i in range(20)]
    assert tg.compute(*outs, shared, scheduler=scheduler) == (*range(1, 21), 1)
    assert calls == [1]


def test_shared_nodes_run_once_in_processes(tmp_path):
    marker = tmp_path / "calls"

    @tg.delayed
    def touch(x):
        with open(marker, "a") as f:
            f.write("x")
        return x

    shared = touch(5)
    assert tg.compute(*[add(shared, i) for i in range(10)], scheduler="processes") == tuple(
        range(5, 15))
    assert marker.read_text() == "x"


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_persist_holds_values(scheduler):
    a = add(inc(1), 1)
    (p,) = tg.persist(a, scheduler=scheduler)
    assert p.key == a.key
    assert p.dependencies == ()
    assert len(p.graph) == 1
    assert p.compute() == 3
    assert inc(p).compute(scheduler=scheduler) == 4
    assert a.persist(scheduler=scheduler).compute() == 3
    both = tg.persist([a, inc(a)], scheduler=scheduler)
    assert [d.compute() for d in both[0]] == [3, 4]


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_exception_keeps_type_and_names_the_task(scheduler):
    bad = fail(inc(1))
    with pytest.raises(ZeroDivisionError, match="cannot use 2") as info:
        add(bad, 1).compute(scheduler=scheduler)
    assert any(bad.key in note for note in info.value.__notes__)


def test_sync_exception_shows_the_real_traceback():
    with pytest.raises(ZeroDivisionError) as info:
        fail(1).compute(scheduler="sync")
    names = [entry.name for entry in info.traceback]
    assert "fail" in names


def test_processes_exception_carries_remote_traceback():
    with pytest.raises(ZeroDivisionError) as info:
        fail(1).compute(scheduler="processes")
    assert "in fail" in str(info.value.__cause__)


def test_processes_keep_the_type_of_exceptions_with_their_own_init():
    """An exception class whose __init__ takes other arguments cannot be unpickled the usual
    way; it still arrives as itself, with its attributes and the task's note."""
    with pytest.raises(RangeError) as info:
        fail_with_range(1).compute(scheduler="processes")
    assert (str(info.value), info.value.low, info.value.high) == ("1-2", 1, 2)
    assert any("fail_with_range" in note for note in info.value.__notes__)


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_failure_among_many_tasks_stops_the_run(scheduler):
    slow = [tg.delayed(time.sleep)(0.01) for _ in range(20)]
    with pytest.raises(ZeroDivisionError):
        tg.compute(*slow, fail(1), scheduler=scheduler)
    # the scheduler is usable again right after
    assert add(inc(1), 1).compute(scheduler=scheduler) == 3


def test_lambdas_and_closures_run_in_processes():
    offset = 100
    f = tg.delayed(lambda x: x + offset)
    assert f(inc(1)).compute(scheduler="processes") == 102


def test_unpicklable_task_is_named():
    lock = threading.Lock()
    task = tg.delayed(lambda x, l: x, name="holds_lock")(1, lock)
    with pytest.raises(TypeError, match="task 'holds_lock-.*' cannot be sent to a worker"):
        task.compute(scheduler="processes")


def test_unpicklable_result_is_named():
    make_lock = tg.delayed(threading.Lock, name="make_lock")()
    with pytest.raises(TypeError, match="result of task 'make_lock-.*' cannot be sent back"):
        make_lock.compute(scheduler="processes")


@pytest.mark.parametrize("how", ["os._exit(3)", "os.kill(os.getpid(), signal.SIGSEGV)"])
def test_dying_worker_is_a_clear_error_not_a_hang(how):
    @tg.delayed
    def die(x):
        import os  # noqa: F401
        import signal  # noqa: F401
        exec(how)

    with pytest.raises(tg.WorkerDiedError, match="worker process died") as info:
        die(1).compute(scheduler="processes")
    assert "die-" in str(info.value)
    assert inc(1).compute(scheduler="processes") == 2  # a fresh pool


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_memory_stays_at_graph_width(scheduler):
    """A chain of 50 tasks each making a new 8 MB array keeps < 5 arrays alive at once."""
    size = 1_000_000  # 8 MB of float64

    @tg.delayed
    def step(x):
        return x + 1.0

    x = tg.delayed(np.zeros(size))
    for _ in range(50):
        x = step(x)
    tracemalloc.start()
    try:
        result = x.compute(scheduler=scheduler)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result[0] == 50.0
    assert peak < 5 * 8 * size, f"peak {peak / 8e6:.1f} arrays"


def test_memory_is_released_across_branches_on_threads():
    """Independent chains: each intermediate is freed once its consumer has run."""
    size = 500_000

    @tg.delayed
    def step(x):
        return x + 1.0

    outs = []
    for i in range(4):
        x = tg.delayed(np.zeros(size), name=f"start{i}")
        for _ in range(20):
            x = step(x)
        outs.append(tg.delayed(np.sum)(x))
    tracemalloc.start()
    try:
        totals = tg.compute(*outs, scheduler="threads", num_workers=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert totals == (20.0 * size,) * 4
    assert peak < 10 * 8 * size


def test_callbacks_see_every_task_on_every_scheduler():
    for scheduler in SCHEDULERS:
        events = []
        cb = tg.Callback(start=lambda g: events.append(("start", len(g))),
                         pretask=lambda k: events.append(("pre", k)),
                         posttask=lambda info: events.append(("post", info.key)),
                         finish=lambda g, errored: events.append(("finish", errored)))
        total = add(inc(1), inc(2))
        with cb:
            assert total.compute(scheduler=scheduler) == 5
        keys = set(total.graph)
        assert events[0] == ("start", 3)
        assert events[-1] == ("finish", False)
        assert {k for e, k in events if e == "post"} == keys
        assert len([e for e in events if e[0] == "post"]) == 3
        assert total.compute(scheduler=scheduler, callbacks=[cb]) == 5


def test_callback_finish_reports_errors():
    finished = []
    with tg.Callback(finish=lambda g, errored: finished.append(errored)):
        with pytest.raises(ZeroDivisionError):
            fail(1).compute(scheduler="threads")
    assert finished == [True]


CTRL_C_SCRIPT = textwrap.dedent("""
    import os, sys, time
    import taskgrad as tg

    def nap(i):
        time.sleep(60)
        return i

    if __name__ == "__main__":
        tasks = [tg.delayed(nap)(i) for i in range(4)]
        print("ready", flush=True)
        try:
            tg.compute(*tasks, scheduler=sys.argv[1])
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(7)
""")


def _children(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_ctrl_c_cancels_and_leaves_no_orphans(tmp_path, scheduler):
    script = tmp_path / "sleepy.py"
    script.write_text(CTRL_C_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), scheduler], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.time() + 30
    if scheduler == "processes":  # wait until the workers exist
        while len(_children(proc.pid)) < 2 and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
    else:
        time.sleep(0.5)
    kids = _children(proc.pid)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert "interrupted" in out
    assert proc.returncode == 7
    time.sleep(0.2)
    for kid in kids:
        assert not os.path.exists(f"/proc/{kid}") or open(f"/proc/{kid}/stat").read().split()[2] == "Z"


CTRL_C_WAITING_SCRIPT = textwrap.dedent("""
    import sys, threading, time
    import taskgrad as tg

    started = threading.Event()

    def nap():
        print("nap on", threading.current_thread().name, flush=True)
        started.set()
        time.sleep(60)

    if __name__ == "__main__":
        first = tg.delayed(started.wait)(10)  # the calling thread waits here for a helper
        try:
            tg.compute(first, tg.delayed(nap)(), scheduler="threads", num_workers=2)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(7)
""")


def test_ctrl_c_cancels_while_the_calling_thread_waits_for_a_helper(tmp_path):
    script = tmp_path / "waiting.py"
    script.write_text(CTRL_C_WAITING_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("nap on taskgrad-worker")
    time.sleep(0.3)  # the calling thread has run the other task and waits
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert "interrupted" in out
    assert proc.returncode == 7


def test_callbacks_report_the_same_tasks_on_every_scheduler():
    """Leaves only hold values: no scheduler reports them as tasks that ran."""
    leaf = tg.delayed(10, name="ten")
    total = add(inc(leaf), leaf)
    reported = {}
    for scheduler in SCHEDULERS:
        seen = []
        total.compute(scheduler=scheduler, callbacks=[tg.Callback(
            posttask=lambda info: seen.append(info.key))])
        reported[scheduler] = sorted(seen)
    assert reported["sync"] == reported["threads"] == reported["processes"]
    assert "ten" not in reported["sync"] and len(reported["sync"]) == 2


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_tasks_may_compute_graphs_themselves(scheduler):
    """A task that calls compute (threads inside) neither deadlocks nor starves the run."""
    @tg.delayed
    def nested(i):
        parts = [inc(j) for j in range(5)]
        return sum(tg.compute(*parts, scheduler="threads")) + i

    assert tg.compute(*[nested(i) for i in range(6)], scheduler=scheduler) == tuple(
        range(15, 21))


def _rendezvous_branches(name):
    """Two branches of non-fused units (each value is read twice) whose first tasks wait
    for each other, so each branch starts on a worker of its own; the tasks record their
    thread."""
    here, there = threading.Event(), threading.Event()
    threads = {}

    @tg.delayed
    def meet(arrived, other):
        arrived.set()
        return other.wait(timeout=10)

    @tg.delayed
    def step(branch, x, y):
        threads.setdefault(branch, set()).add(threading.current_thread().name)
        return x and y

    ends = []
    for branch, (arrived, other) in enumerate([(here, there), (there, here)]):
        prev = cur = meet(arrived, other)
        for _ in range(5):
            prev, cur = cur, step(f"{name}{branch}", cur, prev)
        ends.append(cur)
    return add(*ends), threads


def test_independent_branches_run_on_two_workers_one_each():
    """Each worker goes on with what it made ready: the branches meet only at the join."""
    total, threads = _rendezvous_branches("b")
    assert total.compute(scheduler="threads", num_workers=2) == 2  # both met in time
    assert [len(names) for names in threads.values()] == [1, 1]
    assert threads["b0"] != threads["b1"]


def test_a_helper_with_nothing_ready_serves_another_run():
    """A helper leaves a run as soon as nothing there is ready for it, so a graph that a
    task computes while its own run is still going gets the helper too."""
    total, threads = _rendezvous_branches("n")

    @tg.delayed
    def outer():
        time.sleep(0.05)  # the helper has run ``quick`` and has nothing left in this run
        return total.compute(scheduler="threads", num_workers=2)

    quick = tg.delayed(lambda: 0)()
    assert tg.compute(outer(), quick, scheduler="threads", num_workers=2) == (2, 0)
    assert threads["n0"] != threads["n1"]
