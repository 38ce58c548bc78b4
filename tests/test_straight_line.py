"""Compiled graphs on "sync" run as generated straight-line code: same values, same errors."""

from __future__ import annotations

import gc
import linecache
import traceback

import numpy as np
import pytest

import taskgrad as tg
import taskgrad.numpy as tnp
import taskgrad.schedulers.prepared as prepared
from taskgrad.schedulers.straight_line import straight_line


@tg.delayed
def weighted(parts, *, weights):
    return sum(w * p for w, p in zip(weights, parts))


@tg.delayed
def scale(x, factor=1.0):
    return x * factor


def graph_of_every_kind():
    """Top-level Refs, constants, keywords, Delayeds nested in a list, an output read twice."""
    x = tg.placeholder("x")
    a = tnp.exp(x)
    b = scale(a, factor=3.0)
    c = weighted([a, b, x], weights=(1.0, 2.0, 0.5))
    return x, [c, b, c * c, b]


def test_same_results_as_the_loop(monkeypatch):
    x, outputs = graph_of_every_kind()
    fast = tg.compile(outputs, scheduler="sync")
    assert fast._run._run_fast.__name__ == "run"
    monkeypatch.setattr(prepared, "MAX_STEPS", 0)
    looped = tg.compile(outputs, scheduler="sync")
    assert looped._run._run_fast == looped._run._run_loop
    for value in (np.arange(3.0), np.float64(-1.5), np.ones((2, 2))):
        got_fast, got_loop = fast(x=value), looped(x=value)
        for f, lp in zip(got_fast, got_loop):
            np.testing.assert_array_equal(f, lp)
        a = np.exp(value)
        c = a + 2 * 3 * a + 0.5 * value
        np.testing.assert_allclose(got_fast[0], c)
        np.testing.assert_allclose(got_fast[2], c * c)
        np.testing.assert_allclose(got_fast[3], 3 * a)


def test_feeds_replace_literals_and_constants_stay():
    x = tg.placeholder("x")
    k = tg.delayed(np.array([1.0, 2.0]), name="k")
    step = tg.compile(x * k + 1, scheduler="sync")
    np.testing.assert_array_equal(step(x=2.0), [3.0, 5.0])
    np.testing.assert_array_equal(step(x=np.array([0.0, 1.0])), [1.0, 3.0])


def test_a_failing_task_is_named_and_its_line_shown():
    x = tg.placeholder("x")
    y = tg.delayed(np.linalg.inv, name="inverse")(tnp.exp(x))
    step = tg.compile(tnp.sum(y), scheduler="sync")
    with pytest.raises(np.linalg.LinAlgError) as info:
        step(x=np.zeros((2, 3)))
    assert any("inverse-" in note for note in info.value.__notes__)
    text = "".join(traceback.format_exception(info.value))
    assert "taskgrad straight-line plan" in text and "= F1(" in text


def test_values_die_after_their_last_reader():
    """The generated code deletes each value after its last use, as the loop does."""
    x = tg.placeholder("x")
    h = x
    for _ in range(20):
        h = tnp.tanh(h)
    step = tg.compile(h, scheduler="sync")
    lines = linecache.getlines(step._run._run_fast.__code__.co_filename)
    deleted = [name.strip() for line in lines if line.strip().startswith("del ")
               for name in line.strip()[4:].split(",")]
    assert sorted(deleted) == sorted(f"v{i}" for i in range(20))  # all but the output
    want = np.ones(3)
    for _ in range(20):
        want = np.tanh(want)
    np.testing.assert_array_equal(step(x=np.ones(3)), want)


def test_source_lines_are_released_with_the_function():
    run = straight_line({"a": 1}, [], ["a"])
    filename = run.__code__.co_filename
    assert linecache.getlines(filename)
    assert run({}) == [1] and run({"a": 2}) == [2]
    del run
    gc.collect()
    assert filename not in linecache.cache
