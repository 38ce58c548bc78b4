"""ProgressBar and Profiler on every local scheduler; users' own callbacks."""

import io
import time

import matplotlib
import numpy as np
import pytest

import taskgrad as tg
from taskgrad.diagnostics import ROLE_COLORS
from taskgrad.delayed import collect_graph
from taskgrad.graph import Literal, Task
from tasks import inc

matplotlib.use("Agg")

SCHEDULERS = ["sync", "threads", "processes"]


@tg.delayed
def nap(x):
    time.sleep(0.002)
    return x


@tg.delayed
def total(xs):
    return sum(xs)


@tg.delayed
def boom(x):
    raise RuntimeError("boom")


def workload(n=12):
    """A diamond-rich graph with a literal leaf, chains and a fan-in."""
    leaf = tg.delayed(5, name="leaf")
    return total([inc(nap(inc(leaf) + i)) for i in range(n)])


def runnable_keys(d):
    return {k for k, t in d.graph.items() if type(t) is not Literal}


# ---------------------------------------------------------------- progress bar

@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_progress_bar_counts_every_task(scheduler):
    d = workload()
    out = io.StringIO()
    with tg.ProgressBar(out=out, desc="work"):
        assert d.compute(scheduler=scheduler) == sum(5 + 1 + i + 1 for i in range(12))
    n = len(runnable_keys(d))
    text = out.getvalue()
    assert "work: 100%" in text
    assert f"{n}/{n}" in text
    assert f"{n + 1}/{n}" not in text


def test_progress_bar_via_compute_callbacks_and_twice():
    out = io.StringIO()
    bar = tg.ProgressBar(out=out, desc="run")
    d = workload(3)
    tg.compute(d, callbacks=[bar], scheduler="threads")
    tg.compute(d, callbacks=[bar], scheduler="sync")
    assert out.getvalue().count("run: 100%") == 2


def test_progress_bar_shows_a_failure_and_closes():
    out = io.StringIO()
    bar = tg.ProgressBar(out=out)
    with pytest.raises(RuntimeError, match="boom"), bar:
        total([inc(1), boom(2)]).compute(scheduler="sync")
    assert "failed" in out.getvalue()
    assert bar._bars == []  # closed and forgotten


def test_progress_bar_minimum_hides_quick_runs():
    out = io.StringIO()
    with tg.ProgressBar(out=out, minimum=60):
        workload(3).compute(scheduler="sync")
    assert out.getvalue() == ""


def test_progress_bar_defaults_to_stderr(capsys):
    with tg.ProgressBar():
        workload(2).compute(scheduler="sync")
    assert "100%" in capsys.readouterr().err


# ---------------------------------------------------------------- profiler

@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_profiler_records_every_task_once(scheduler):
    d = workload()
    with tg.Profiler() as prof:
        d.compute(scheduler=scheduler)
    keys = [r.key for r in prof.results]
    assert sorted(keys) == sorted(runnable_keys(d))  # every task once, leaves never
    for r in prof.results:
        assert r.start <= r.end
        assert r.role == "forward"
        assert r.name in {"inc", "nap", "add", "total"}
    if scheduler == "sync":
        assert {r.worker for r in prof.results} == {0}
    naps = [r for r in prof.results if r.name == "nap"]
    assert all(r.end - r.start >= 0.0015 for r in naps)


def test_profiler_accumulates_until_entered_again():
    prof = tg.Profiler()
    d = workload(2)
    with prof:
        d.compute(scheduler="sync")
        d.compute(scheduler="threads")
    assert len(prof.results) == 2 * len(runnable_keys(d))
    with prof:
        d.compute(scheduler="sync")
    assert len(prof.results) == len(runnable_keys(d))
    prof.clear()
    assert prof.results == []


def test_profiler_timings_and_summary():
    d = workload(4)
    with tg.Profiler() as prof:
        d.compute(scheduler="sync")
    timings = prof.timings()
    assert set(timings) == runnable_keys(d)
    summary = prof.summary()
    assert {name: count for (name, _), (count, _) in summary.items()} == {
        "nap": 4, "inc": 8, "add": 4, "total": 1}
    totals = [seconds for _, seconds in summary.values()]
    assert totals == sorted(totals, reverse=True)  # slowest first
    assert summary[("nap", "forward")][1] >= 4 * 0.002


def test_profiler_keeps_records_of_a_failed_run():
    with pytest.raises(RuntimeError), tg.Profiler() as prof:
        total([inc(1), boom(2)]).compute(scheduler="sync")
    assert [r.name for r in prof.results] == ["inc"]


def backward_graph():
    """Forward tasks plus tasks marked as built by grad (as grad marks them)."""
    fwd = workload(3)
    task = Task("grad-total-1", lambda v: -sum(v), (fwd.task.args[0],), None,
                fwd.task.dependencies, role="backward")
    return tg.Delayed(task.key, task, fwd.dependencies)


def test_gantt_chart_colours_forward_and_backward_apart(tmp_path):
    with tg.Profiler() as prof:
        tg.compute(workload(3), backward_graph(), scheduler="threads")
    assert {r.role for r in prof.results} == {"forward", "backward"}
    ax = prof.plot(filename=tmp_path / "gantt.png")
    faces = {tuple(round(c, 3) for c in coll.get_facecolor()[0]) for coll in ax.collections}
    expected = {tuple(round(c, 3) for c in matplotlib.colors.to_rgba(ROLE_COLORS[r]))
                for r in ("forward", "backward")}
    assert faces == expected
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["backward", "forward"]
    assert (tmp_path / "gantt.png").read_bytes()[:4] == b"\x89PNG"
    assert len(ax.get_yticks()) == len({r.worker for r in prof.results})


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_profiler_tells_forward_from_backward_of_a_real_gradient(scheduler):
    import taskgrad.numpy as tnp

    x = tg.delayed(np.linspace(0.0, 1.0, 5), name="x")
    y = tnp.sum(tnp.sin(x) * x)
    dx = tg.grad(y, x)
    with tg.Profiler() as prof:
        tg.compute(y, dx, scheduler=scheduler)
    ran = [r.key for r in prof.results]
    assert sorted(ran) == sorted(k for k, t in collect_graph([y, dx]).items()
                                 if type(t) is not Literal)
    forward = set(y.graph)  # the backward pass reuses these and adds its own
    for r in prof.results:
        assert r.role == ("forward" if r.key in forward else "backward")
    assert {r.role for r in prof.results if r.key == dx.key} == {"backward"}


def test_empty_profiler_cannot_plot():
    with pytest.raises(ValueError, match="no records"):
        tg.Profiler().plot()


# ---------------------------------------------------------------- users' callbacks

@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_user_callbacks_see_start_pretask_posttask_finish(scheduler):
    events = []
    cb = tg.Callback(start=lambda g: events.append(("start", len(g))),
                     pretask=lambda k: events.append(("pre", k)),
                     posttask=lambda info: events.append(("post", info.key)),
                     finish=lambda g, errored: events.append(("finish", errored)))
    d = workload(3)
    with cb:
        d.compute(scheduler=scheduler)
    assert events[0] == ("start", len(d.graph)) and events[-1] == ("finish", False)
    pre = [k for e, k in events if e == "pre"]
    post = [k for e, k in events if e == "post"]
    # every task that runs is announced and reported (sync also reports leaves)
    assert runnable_keys(d) <= set(pre) <= set(post) <= set(d.graph)
    for key in pre:
        assert events.index(("pre", key)) < events.index(("post", key))
