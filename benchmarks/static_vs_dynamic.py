"""Static against dynamic graphs: one SGD step of an MLP 784-256-256-10 at batch 16.

The model, data and hand-written NumPy step are those of ``mlp_step.py`` (the
autodiff benchmark), with the batch cut from 256 to 16.

At this batch size the arithmetic is small and per-step overhead dominates.
Compared, in one process with BLAS threads = 1:

- hand-written NumPy forward + backward + update (the baseline);
- taskgrad dynamic: the graph (forward, ``tg.grad``, update) rebuilt and
  computed every step, as in PyTorch-style code;
- taskgrad compiled: ``tg.compile`` once with placeholders for the batch and
  the parameters, then ``step(x=..., onehot=..., W1=..., ...)`` each step,
  with the default passes, with none, with all five, on ``"sync"`` and on ``"threads"``;
- the compiled step's generated straight-line function called directly on a
  dict of feeds, without the feed checks: what is left is the tasks' own work
  (the generic VJP rules do more arithmetic than the hand-derived backward pass).

All variants are first checked to give the same loss and parameters.  Times
are medians over interleaved rounds.  Targets: compiled at most 1.5x NumPy and
at least 2x faster than rebuilding.

Run: ``PYTHONPATH=src python benchmarks/static_vs_dynamic.py [--rounds N]``
"""

from __future__ import annotations

import _common  # noqa: F401  (pins BLAS to one thread before NumPy loads)

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import mlp_step  # noqa: E402
from mlp_step import LR, SIZES, numpy_step, tnp_loss  # noqa: E402

import taskgrad as tg  # noqa: E402
from taskgrad.optimize import PASSES  # noqa: E402

BATCH = 16
NAMES = ("W1", "b1", "W2", "b2", "W3", "b3")


def make_problem(dtype):
    """The autodiff benchmark's problem, cut to a batch of 16."""
    x, onehot, params = mlp_step.make_problem(dtype)
    return x[:BATCH], onehot[:BATCH], params


def step_graph(x, onehot, params):
    """The loss and the updated parameters, as lazy values."""
    loss = tnp_loss(x, onehot, *params)
    return [loss, *(p - LR * g for p, g in zip(params, tg.grad(loss, params)))]


def dynamic_step(params, x, onehot, scheduler="sync"):
    loss, *new = tg.compute(*step_graph(tg.delayed(x), tg.delayed(onehot),
                                        [tg.delayed(p) for p in params]), scheduler=scheduler)
    return loss, new


def compiled(dtype, **options):
    x = tg.placeholder("x", shape=(None, SIZES[0]), dtype=dtype)
    onehot = tg.placeholder("onehot", shape=(None, SIZES[-1]), dtype=dtype)
    params = [tg.placeholder(name) for name in NAMES]
    run = tg.compile(step_graph(x, onehot, params), **options)

    def step(params, xv, ov):
        loss, *new = run(x=xv, onehot=ov, **dict(zip(NAMES, params)))
        return loss, new

    return step, run


def straight_line(run):
    """The compiled step's generated function called directly: the tasks' own work."""
    code = run._run._run_fast

    def step(params, xv, ov):
        loss, *new = code({"x": xv, "onehot": ov, **dict(zip(NAMES, params))})
        return loss, new

    return step


def check_same(steps, params, x, onehot, dtype):
    ref_loss, ref = numpy_step(params, x, onehot)
    dyn_loss, dyn = dynamic_step(params, x, onehot)
    rtol = 1e-9 if dtype == np.float64 else 2e-4
    for name, step in steps.items():
        loss, new = step(params, x, onehot)
        assert np.allclose(loss, ref_loss, rtol=rtol), (name, loss, ref_loss)
        for a, b, d in zip(new, ref, dyn):
            assert a.dtype == b.dtype and np.allclose(a, b, rtol=rtol, atol=rtol), name
            if "taskgrad" in name or "straight-line" in name:
                assert np.array_equal(a, d), (name, "differs from the dynamic graph")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    print(_common.MALLOC)
    _common.print_probe()
    for dtype in (np.float64, np.float32):
        x, onehot, params = make_problem(dtype)
        start = time.perf_counter()
        fast, run = compiled(dtype, scheduler="sync")
        compile_ms = (time.perf_counter() - start) * 1e3
        steps = {
            "hand-written NumPy": numpy_step,
            "taskgrad dynamic, rebuilt each step (sync)": dynamic_step,
            "taskgrad dynamic, rebuilt each step (threads)":
                lambda p, x, o: dynamic_step(p, x, o, "threads"),
            "taskgrad compiled (sync)": fast,
            "taskgrad compiled, no passes (sync)": compiled(dtype, optimize=False,
                                                            scheduler="sync")[0],
            "taskgrad compiled, all 5 passes (sync)": compiled(dtype, optimize=list(PASSES),
                                                               scheduler="sync")[0],
            "taskgrad compiled (threads)": compiled(dtype, scheduler="threads")[0],
            "compiled, its straight-line code called directly": straight_line(run),
        }
        check_same(steps, params, x, onehot, dtype)
        medians = _common.interleaved_medians(steps, (params, x, onehot), args.rounds, 10)[0]
        base = medians["hand-written NumPy"]
        rebuilt = medians["taskgrad dynamic, rebuilt each step (sync)"]
        rows = [[name, f"{t * 1e6:9.1f}", f"{t / base:6.2f}", f"{rebuilt / t:6.2f}"]
                for name, t in medians.items()]
        _common.print_table(
            f"{np.dtype(dtype).name}, batch {BATCH}: median of {args.rounds} shuffled rounds x 10 steps; "
            f"graph {len(run.source_graph)} tasks -> {len(run.graph)} after passes, "
            f"compile {compile_ms:.0f} ms",
            ["implementation", "us/step", "x NumPy", "speed-up vs rebuilt (sync)"], rows)


if __name__ == "__main__":
    main()
