"""Checkpointing: peak memory and time of forward+backward through a deep tanh MLP.

A 64-layer tanh MLP, width 512, batch 512 (float32), loss = sum of squares of
the output, on ``"sync"``.  Compared:

- no checkpointing, each layer a ``tnp`` expression (``tnp.tanh(h @ W)``);
- no checkpointing, each layer a plain-NumPy ``@tg.delayed`` function;
- ``tg.checkpoint`` blocks of 8 layers (the same plain-NumPy code).

Memory is tracemalloc's peak during ``tg.compute`` (NumPy reports its buffers
to tracemalloc), measured twice: with the gradients of all 64 weight matrices
(a training step: its peak includes those 64 weight-sized results, which
every variant must return, so checkpointing can save at most the rest), and
with the weights as constants and the gradient of the input only, which
needs the same activations but returns one array: that peak is the
activation memory.  Time is the median
wall time of the weight-gradient run without tracemalloc.  Gradients are
checked identical first.  Targets: checkpointed activation peak at most 1/3
of the unchecked one, time at most 1.5x.

Run: ``PYTHONPATH=src python benchmarks/checkpoint_memory.py [--rounds N] [--layers N]``
"""

from __future__ import annotations

import _common  # noqa: F401  (pins BLAS to one thread before NumPy loads)

import argparse  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402

import taskgrad as tg  # noqa: E402
import taskgrad.numpy as tnp  # noqa: E402

WIDTH = 512
BATCH = 512
EVERY = 8
DTYPE = np.float32


def layers(h, *Ws):
    for W in Ws:
        h = np.tanh(h @ W)
    return h


def build(variant, x, Ws, wrt="weights"):
    h = x = tg.delayed(x, name="x")
    if wrt == "weights":
        leaves = [tg.delayed(W, name=f"W{i}") for i, W in enumerate(Ws)]
    else:  # weights as constants: nothing but the activations to differentiate
        leaves = Ws
    if variant == "tnp":
        for W in leaves:
            h = tnp.tanh(h @ W)
    elif variant == "layers":
        layer = tg.delayed(layers)
        for W in leaves:
            h = layer(h, W)
    else:
        block = tg.checkpoint(layers)
        for i in range(0, len(leaves), EVERY):
            h = block(h, *leaves[i:i + EVERY])
    loss = tnp.sum(h * h)
    return [loss, *tg.grad(loss, leaves if wrt == "weights" else [x])]


def run(variant, x, Ws, wrt="weights"):
    return tg.compute(*build(variant, x, Ws, wrt), scheduler="sync")


def peak_bytes(variant, x, Ws, wrt):
    outs = build(variant, x, Ws, wrt)
    tracemalloc.start()
    try:
        tg.compute(*outs, scheduler="sync")
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--layers", type=int, default=64)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, WIDTH)).astype(DTYPE)
    Ws = [(rng.normal(size=(WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(DTYPE)
          for _ in range(args.layers)]
    variants = {"no checkpointing, tnp ops": "tnp",
                "no checkpointing, NumPy layer tasks": "layers",
                f"tg.checkpoint every {EVERY} layers": "checkpoint"}
    for wrt in ("weights", "input"):
        reference = run("layers", x, Ws, wrt)
        for variant in variants.values():
            for a, b in zip(run(variant, x, Ws, wrt), reference):
                assert np.array_equal(a, b) or variant == "tnp" and np.allclose(
                    a, b, rtol=1e-4, atol=1e-6 * np.abs(b).max()), variant
    activation = BATCH * WIDTH * np.dtype(DTYPE).itemsize
    peaks = {name: [peak_bytes(v, x, Ws, wrt) for wrt in ("weights", "input")]
             for name, v in variants.items()}
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, v in variants.items():
            start = time.perf_counter()
            run(v, x, Ws)
            times[name].append(time.perf_counter() - start)
    base = "no checkpointing, NumPy layer tasks"
    rows = []
    for name in variants:
        (full, acts), t = peaks[name], float(np.median(times[name]))
        rows.append([name, f"{full / 2**20:8.1f}", f"{full / peaks[base][0]:6.2f}",
                     f"{acts / 2**20:8.1f}", f"{acts / activation:6.1f}",
                     f"{acts / peaks[base][1]:6.2f}", f"{t * 1e3:8.0f}",
                     f"{t / np.median(times[base]):6.2f}"])
    _common.print_table(
        f"{args.layers}-layer tanh MLP, width {WIDTH}, batch {BATCH}, {np.dtype(DTYPE).name}, "
        f"sync; one activation = {activation / 2**20:.1f} MiB; time = median of {args.rounds}",
        ["variant", "peak MiB (weight grads)", "x unchecked", "activation peak MiB",
         "in activations", "x unchecked", "time ms", "x unchecked"], rows)
    _common.print_probe()  # the times are one thread's, but the machine is shared


if __name__ == "__main__":
    main()
