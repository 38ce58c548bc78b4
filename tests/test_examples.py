"""Every example runs as a script, prints its key line and writes its files."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_example(name, tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_sum_of_squares(tmp_path):
    out = run_example("sum_of_squares.py", tmp_path, "--out", str(tmp_path / "o"))
    assert "sum of squares of 1..10 = 385" in out
    svg = (tmp_path / "o" / "sumlist.svg").read_text()
    assert svg.count(">square</text>") == 10 and ">sum_list</text>" in svg


def test_sum_of_squares_writes_to_the_current_directory_by_default(tmp_path):
    out = run_example("sum_of_squares.py", tmp_path, "-n", "3")
    assert "sum of squares of 1..3 = 14" in out
    assert (tmp_path / "sumlist.svg").exists()


def test_computation_graph(tmp_path):
    out = run_example("computation_graph.py", tmp_path, "--out", str(tmp_path))
    expected = {"x": (1.0, -3.0), "y": (3.0, -3.0), "z": (-3.0, 4.0), "q": (4.0, -3.0),
                "f": (-12.0, 1.0)}
    for name, (value, grad) in expected.items():
        line = re.search(rf"^{name}\b.*value = *(\S+) +df/d{name} = *(\S+)$", out, re.M)
        assert line, out
        assert (float(line.group(1)), float(line.group(2))) == (value, grad)
    forward = (tmp_path / "forward.svg").read_text()
    backward = (tmp_path / "backward.svg").read_text()
    assert ">add</text>" in forward and ">mul</text>" in forward
    assert "backward task" not in forward and "backward task" in backward
    assert backward.count("<g id=\"node") > forward.count("<g id=\"node")


def test_composite_function(tmp_path):
    out = run_example("composite_function.py", tmp_path)
    error = float(re.search(r"max \|autodiff - analytic\| = (\S+)", out).group(1))
    assert error <= 1e-12
    assert len(re.findall(r"^ *-?\d\.\d\d ", out, re.M)) == 9


def test_train_mlp(tmp_path):
    out = run_example("train_mlp.py", tmp_path, "--out", str(tmp_path))
    epochs = re.findall(r"^epoch +(\d+)/12 +loss (\S+)", out, re.M)
    assert [int(e) for e, _ in epochs] == list(range(1, 13))
    losses = [float(v) for _, v in epochs]
    assert losses[-1] < losses[0] / 5
    accuracy = float(re.search(r"^test accuracy: (\S+)%", out, re.M).group(1))
    assert accuracy >= 95.0
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    step = (tmp_path / "mlp_step.svg").read_text()
    assert ">dot</text>" in step and ">maximum</text>" in step and ">cross_entropy</text>" in step
