"""Save and load: round trips (also in a fresh process), pickling rules, bad files."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import namedtuple
from functools import partial
from pathlib import Path

import numpy as np
import pytest

import taskgrad as tg
from taskgrad.serialize import FORMAT_VERSION, HEADER

SRC = str(Path(tg.__file__).resolve().parents[1])

Point = namedtuple("Point", "x y")

MODULE = '''
import numpy as np
import taskgrad as tg


@tg.delayed
def layer(x, W, b):
    return np.tanh(x @ W + b)


def loss(h, scale=1.0):
    return float((h ** 2).sum()) * scale
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "tg_user_model.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import tg_user_model

    return tg_user_model


def build(mod):
    x = tg.placeholder("x", shape=(None, 3), dtype=np.float64)
    W = tg.delayed(np.linspace(-1, 1, 6).reshape(3, 2), name="W")
    h = mod.layer(x, W, tg.delayed(np.float32(0.25), name="b"))
    return tg.delayed(mod.loss)(h, scale=2.0), h


def run_in_subprocess(code, tmp_path):
    env_path = f"{SRC}:{tmp_path}"
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_compiled_round_trip_in_a_fresh_process(tmp_path, user_module):
    step = tg.compile(build(user_module), scheduler="sync")
    path = tmp_path / "model.tg"
    tg.save(step, path)
    x = np.arange(12.0).reshape(4, 3) / 10
    np.save(tmp_path / "x.npy", x)
    want_loss, want_h = step(x=x)
    run_in_subprocess(f"""
        import numpy as np, taskgrad as tg
        step = tg.load({str(path)!r})
        assert isinstance(step, tg.Compiled) and step.scheduler == "sync"
        loss, h = step(x=np.load({str(tmp_path / 'x.npy')!r}))
        np.save({str(tmp_path / 'h.npy')!r}, h)
        print(repr(loss))
        try:
            step(x=np.ones((2, 4)))
        except tg.PlaceholderError as exc:
            print("shape checked")
    """, tmp_path)
    out = (tmp_path / "h.npy")
    np.testing.assert_array_equal(np.load(out), want_h)
    assert tg.load(path)(x=x)[0] == want_loss


def test_subprocess_output(tmp_path, user_module):
    step = tg.compile(build(user_module)[0], optimize=False)
    tg.save(step, tmp_path / "m.tg")
    text = run_in_subprocess(f"""
        import numpy as np, taskgrad as tg
        step = tg.load({str(tmp_path / 'm.tg')!r})
        print(len(step.graph), step(x=np.ones((1, 3))))
    """, tmp_path)
    assert text.split() == [str(len(step.graph)), repr(step(x=np.ones((1, 3))))]


def test_delayed_outputs_round_trip_with_structure(tmp_path, user_module):
    loss, h = build(user_module)
    W = tg.delayed(np.eye(2), name="eye")
    h2 = h @ W
    path = tmp_path / "d.tg"
    tg.save({"loss": loss, "rest": [h2, (W,)]}, path)
    back = tg.load(path)
    assert set(back) == {"loss", "rest"} and isinstance(back["rest"][1], tuple)
    assert back["loss"].key == loss.key and back["rest"][1][0].key == "eye"
    feed = np.ones((2, 3))
    step_a = tg.compile([loss, h2], scheduler="sync")
    step_b = tg.compile([back["loss"], back["rest"][0]], scheduler="sync")
    np.testing.assert_array_equal(step_a(x=feed)[1], step_b(x=feed)[1])


def identity_kw(*args, **kwargs):
    return args, kwargs


VALUES = [
    None, True, 0, -7, 2**80, 1.5, float("nan"), float("inf"), -float("inf"), 1 + 2j,
    "text", b"\x00bytes", (1, (2, [3])), [1.0, "a"], {1, 2}, frozenset({"a"}),
    {"k": [1], (1, 2): {"nested": None}}, slice(1, None, 2), Ellipsis,
    np.float32(1.5), np.int8(-3), np.bool_(True), np.dtype("float32"),
    np.dtype([("a", "<i4"), ("b", "<f8", (2,))]), np.arange(6, dtype=np.uint16).reshape(2, 3),
    np.array(["ab", "c"]), np.zeros((0, 2)), Point(1, [2]), np.float64, np.tanh, len,
    partial(np.sum, axis=0),
]


def same(a, b):
    if isinstance(a, float) and np.isnan(a):
        return isinstance(b, float) and np.isnan(b)
    if isinstance(a, (np.ndarray, np.generic)):
        return type(a) is type(b) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, partial):
        return a.func is b.func and a.args == b.args and a.keywords == b.keywords
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return type(b) is dict and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_values_round_trip_exactly(tmp_path, value):
    task = tg.delayed(identity_kw)(value, [tg.delayed(1)], key=value)
    tg.save(task, tmp_path / "v.tg")
    (args, kwargs), = tg.compute(tg.load(tmp_path / "v.tg"), scheduler="sync")
    assert same(args[0], value) and same(kwargs["key"], value) and args[1] == [1]


def test_shared_array_is_stored_once(tmp_path):
    big = np.ones(1000)
    a, b = tg.delayed(big, name="a"), tg.delayed(np.add)(big, 1)
    tg.save([a, b], tmp_path / "s.tg")
    with np.load(tmp_path / "s.tg") as archive:
        assert sorted(archive.files) == sorted([HEADER, "a0"])


def test_lambdas_and_closures_need_allow_pickle_on_both_sides(tmp_path):
    offset = 3
    x = tg.placeholder("x")
    y = tg.delayed(lambda v: v + 1)(x)
    z = tg.delayed(lambda v: v * offset)(y)
    with pytest.raises(ValueError, match="has no import path.*allow_pickle=True"):
        tg.save(tg.compile(z), tmp_path / "l.tg")
    with pytest.raises(ValueError, match="value of type Thing.*allow_pickle=True"):
        tg.save(tg.delayed(identity_kw)(Thing()), tmp_path / "t.tg")
    tg.save(tg.compile(z), tmp_path / "l.tg", allow_pickle=True)
    with pytest.raises(tg.FileFormatError, match="allow_pickle=True"):
        tg.load(tmp_path / "l.tg")
    assert tg.load(tmp_path / "l.tg", allow_pickle=True)(x=1) == 6


class Thing:
    pass


def test_local_function_needs_pickle(tmp_path):
    def local(v):
        return v

    with pytest.raises(ValueError, match="has no import path"):
        tg.save(tg.delayed(local)(1), tmp_path / "f.tg")


def test_compile_options_survive(tmp_path):
    x = tg.placeholder("x")
    y = tg.delayed(np.negative)(tg.delayed(np.exp)(x))
    tg.save(tg.compile(y, optimize=False, scheduler="threads"), tmp_path / "o.tg")
    back = tg.load(tmp_path / "o.tg")
    assert len(back.graph) == 3 and back.scheduler == "threads"
    assert tg.load(tmp_path / "o.tg", scheduler="sync").scheduler == "sync"
    tg.save(tg.compile(y, optimize=["fuse"]), tmp_path / "f.tg")
    assert len(tg.load(tmp_path / "f.tg").graph) == 2


def test_save_rejects_other_objects(tmp_path):
    with pytest.raises(TypeError, match="compiled graph or Delayed"):
        tg.save(3, tmp_path / "x.tg")


# ---------------------------------------------------------------- bad files

@pytest.fixture
def good_file(tmp_path):
    x = tg.placeholder("x", shape=(2,))
    path = tmp_path / "good.tg"
    tg.save(tg.compile(tg.delayed(np.sum)(x * tg.delayed(np.arange(2.0)))), path)
    return path


def rewrite_header(path, change):
    with np.load(path) as archive:
        members = {name: archive[name] for name in archive.files}
    header = json.loads(members[HEADER].tobytes())
    change(header)
    members[HEADER] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **members)


def test_good_file_loads(good_file):
    assert tg.load(good_file)(x=np.ones(2)) == 1.0


def test_truncated_file(good_file):
    data = good_file.read_bytes()
    for size in (0, 10, len(data) // 2, len(data) - 5):
        good_file.write_bytes(data[:size])
        with pytest.raises(tg.FileFormatError, match="corrupted or truncated|not a taskgrad"):
            tg.load(good_file)


def test_corrupted_bytes(good_file):
    data = bytearray(good_file.read_bytes())
    start = data.index(b'"format"')  # inside the stored header member
    data[start + 2:start + 8] = b"XXXXXX"
    good_file.write_bytes(bytes(data))
    with pytest.raises(tg.FileFormatError, match="corrupted|not a taskgrad"):
        tg.load(good_file)


def test_not_a_taskgrad_file(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, a=np.ones(3))
    with pytest.raises(tg.FileFormatError, match="not a taskgrad graph file"):
        tg.load(path)
    path.write_text("hello")
    with pytest.raises(tg.FileFormatError, match="not a taskgrad graph file"):
        tg.load(path)
    with pytest.raises(FileNotFoundError):
        tg.load(tmp_path / "missing.tg")


def test_newer_version(good_file):
    rewrite_header(good_file, lambda h: h.update(version=FORMAT_VERSION + 1))
    with pytest.raises(tg.FileFormatError, match=f"version {FORMAT_VERSION + 1}, newer.*upgrade"):
        tg.load(good_file)


@pytest.mark.parametrize("change, message", [
    (lambda h: h.update(version="1"), "version '1'"),
    (lambda h: h.update(format="other"), "not a taskgrad graph file"),
    (lambda h: h.update(kind="weird"), "bad header"),
    (lambda h: h["tasks"][1]["value"].update({"$array": "a9"}), "missing array member 'a9'"),
    (lambda h: h["tasks"][2].update(func={"$import": "no_such_module_xyz:f"}),
     "cannot import 'no_such_module_xyz:f'"),
    (lambda h: h["tasks"][2].update(args=[{"$unknown": 1}]), "unknown value tag"),
    (lambda h: h["tasks"][2].update(args=[{"$namedtuple": [{"$import": "os:system"}, ["ls"]]}]),
     "'os:system'.* is not a namedtuple class"),
    (lambda h: h["tasks"][2].update(type="exotic"), "unknown task type"),
    (lambda h: h["tasks"].pop(0), "not in the graph"),
    (lambda h: h["tasks"][0].update(shape=[2, -1]), "corrupted entry"),
    (lambda h: h["tasks"][2].update(func={"$pickle": "p0"}), "allow_pickle=True"),
    (lambda h: h["tasks"][2].update(args=[{"$bytes": "not base64!"}]), "corrupted entry"),
    (lambda h: h.update(optimize=["no_such_pass"]), "corrupted.*no_such_pass"),
    (lambda h: h.update(scheduler="no_such_scheduler"), "corrupted.*no_such_scheduler"),
])
def test_damaged_headers(good_file, change, message):
    rewrite_header(good_file, change)
    with pytest.raises(tg.FileFormatError, match=message):
        tg.load(good_file)


def test_gradient_graphs_save_without_pickle_and_run_in_a_fresh_process(tmp_path, user_module):
    import taskgrad.numpy as tnp

    x = tg.placeholder("x", shape=(None, 3))
    W = tg.placeholder("W", shape=(3, 3))
    V = tg.placeholder("V", shape=(3, 3))
    h = user_module.layer(x, W, 0.1)  # traced plain-NumPy function
    h = tg.checkpoint(np.matmul)(h, V)  # recomputed block
    loss = tnp.sum(tnp.einsum("ij,jk->ik", tnp.tanh(h), V) ** 2)
    gW, gV = tg.grad(loss, [W, V])
    hvp = tg.grad(tnp.sum(tg.grad(tnp.sum(tnp.tanh(x @ V) ** 2), V)), V)  # second order
    step = tg.compile([loss, gW, gV, hvp], scheduler="sync")
    path = tmp_path / "train.tg"
    tg.save(step, path)  # no allow_pickle: rules and blocks are stored by name
    rng = np.random.default_rng(1)
    feeds = {"x": rng.normal(size=(4, 3)), "W": rng.normal(size=(3, 3)),
             "V": rng.normal(size=(3, 3))}
    np.savez(tmp_path / "feeds.npz", **feeds)
    run_in_subprocess(f"""
        import numpy as np, taskgrad as tg
        step = tg.load({str(path)!r})
        feeds = dict(np.load({str(tmp_path / 'feeds.npz')!r}))
        np.savez({str(tmp_path / 'out.npz')!r}, *step(**feeds))
    """, tmp_path)
    with np.load(tmp_path / "out.npz") as out:
        for i, want in enumerate(step(**feeds)):
            np.testing.assert_array_equal(out[f"arr_{i}"], want)


def _write(path, text):
    with open(path, "w") as f:
        return f.write(text)


def test_loading_a_compiled_graph_runs_none_of_its_tasks(tmp_path):
    """Folding at load would run the tasks no placeholder feeds: loading runs nothing."""
    calls = tmp_path / "calls.txt"
    x = tg.placeholder("x")
    note = tg.delayed(_write, pure=True)(str(calls), "ran")
    step = tg.compile([x + 1, note])
    assert calls.read_text() == "ran"  # compile folded it, as it should
    calls.unlink()
    path = tmp_path / "step.tg"
    tg.save(step, path)
    loaded = tg.load(path)
    assert not calls.exists()
    assert loaded(x=1)[0] == 2 and calls.read_text() == "ran"  # the call runs it


def test_array_subclasses_are_not_saved_as_plain_arrays(tmp_path):
    """A masked array saved as its data would load without its mask."""
    masked = np.ma.array([1.0, 2.0], mask=[False, True])
    y = tg.delayed(np.ma.sum)(tg.delayed(masked, name="m"))
    with pytest.raises(ValueError, match="MaskedArray.*allow_pickle=True"):
        tg.save(y, tmp_path / "m.tg")
    tg.save(y, tmp_path / "m.tg", allow_pickle=True)
    assert tg.load(tmp_path / "m.tg", allow_pickle=True).compute() == 1.0
