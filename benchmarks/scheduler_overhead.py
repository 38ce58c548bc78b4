"""Scheduler overhead: taskgrad against dask.delayed on the same graphs, in one process.

Prints build time per node, run overhead per task (run time minus a plain Python
loop calling the same functions in topological order), and parallel speed-ups
beside a probe of how much of the second core was free during this run.

    python benchmarks/scheduler_overhead.py            # full sizes (a few minutes)
    python benchmarks/scheduler_overhead.py --quick    # tiny sizes, a smoke run
"""

from __future__ import annotations

import _common  # noqa: F401  (pins BLAS to one thread before NumPy loads)

import argparse
import time

import dask
import numpy as np

import taskgrad as tg
from _common import median_time, print_probe, print_table, spin


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def tree_sum(items, add_fn):
    """Pairwise reduction of a list, level by level (no recursion)."""
    while len(items) > 1:
        paired = [add_fn(items[i], items[i + 1]) for i in range(0, len(items) - 1, 2)]
        if len(items) % 2:
            paired.append(items[-1])
        items = paired
    return items[0]


def build_wide(delayed, n):
    d_inc, d_add = delayed(inc), delayed(add)
    return tree_sum([d_inc(i) for i in range(n)], d_add)


def build_chain(delayed, n):
    d_inc = delayed(inc)
    x = d_inc(0)
    for _ in range(n - 1):
        x = d_inc(x)
    return x


def floor_wide(n):
    return tree_sum([inc(i) for i in range(n)], add)


def floor_chain(n):
    x = inc(0)
    for _ in range(n - 1):
        x = inc(x)
    return x


LIBS = {
    "taskgrad": (tg.delayed, lambda obj, s: tg.compute(obj, scheduler=s)[0]),
    "dask": (dask.delayed, lambda obj, s: dask.compute(obj, scheduler=s)[0]),
}
SHAPES = {"wide": (build_wide, floor_wide, lambda n: 2 * n - 1),
          "chain": (build_chain, floor_chain, lambda n: n)}


def overhead_rows(shape, n, schedulers, repeat):
    build, floor, count = SHAPES[shape]
    tasks = count(n)
    expected = floor(n)
    floor_time = median_time(lambda: floor(n), repeat=repeat)
    rows = []
    per = {}
    for lib, (delayed, compute) in LIBS.items():
        obj = build(delayed, n)
        per[lib, "build"] = median_time(lambda: build(delayed, n), repeat=repeat, warmup=0) / tasks
        for s in schedulers:
            got = compute(obj, s)
            assert got == expected, (lib, s, got, expected)
            run = median_time(lambda: compute(obj, s), repeat=repeat, warmup=0)
            per[lib, s] = (run - floor_time) / tasks
    rows.append([f"{shape} n={tasks}", "build / node",
                 f"{per['taskgrad', 'build'] * 1e6:.2f}", f"{per['dask', 'build'] * 1e6:.1f}",
                 f"{per['dask', 'build'] / per['taskgrad', 'build']:.0f}x", "-"])
    for s in schedulers:
        rows.append([f"{shape} n={tasks}", f"run overhead / task, {s}",
                     f"{per['taskgrad', s] * 1e6:.2f}", f"{per['dask', s] * 1e6:.1f}",
                     f"{per['dask', s] / per['taskgrad', s]:.0f}x",
                     f"{floor_time / tasks * 1e6:.2f}"])
    return rows


def chain_build_scaling(sizes):
    rows = []
    for n in sizes:
        start = time.perf_counter()
        x = build_chain(tg.delayed, n)
        built = time.perf_counter() - start
        start = time.perf_counter()
        value = x.compute(scheduler="sync")
        ran = time.perf_counter() - start
        assert value == n
        del x
        rows.append([f"{n:,}", f"{built:.2f} s", f"{built / n * 1e6:.2f} us",
                     f"{ran:.2f} s"])
    return rows


def matmul_chains(delayed, chains=8, length=4, size=1000):
    rng = np.random.default_rng(0)
    mm = delayed(np.matmul)
    b = rng.standard_normal((size, size)) / np.sqrt(size)
    outs = []
    for i in range(chains):
        x = delayed(rng.standard_normal((size, size)))
        for _ in range(length):
            x = mm(x, b)
        outs.append(x)
    return outs


def speedup_rows(quick):
    size, spin_n = (200, 20_000) if quick else (1000, 2_000_000)
    rows = []
    for lib, (delayed, _) in LIBS.items():
        outs = matmul_chains(delayed, size=size)
        run = tg.compute if lib == "taskgrad" else dask.compute
        sync = median_time(lambda: run(*outs, scheduler="sync"), repeat=3)
        threads = median_time(lambda: run(*outs, scheduler="threads"), repeat=3)
        rows.append([lib, f"8 chains x 4 matmuls {size}x{size}", "threads vs sync",
                     f"{sync * 1e3:.0f} ms", f"{threads * 1e3:.0f} ms", f"{sync / threads:.2f}x"])
    for lib, (delayed, _) in LIBS.items():
        d_spin = delayed(spin)
        run = tg.compute if lib == "taskgrad" else dask.compute
        outs = [d_spin(spin_n + i) for i in range(8)]
        sync = median_time(lambda: run(*outs, scheduler="sync"), repeat=3)
        procs = median_time(lambda: run(*outs, scheduler="processes"), repeat=3)
        rows.append([lib, "8 pure-Python CPU-bound tasks", "processes vs sync",
                     f"{sync * 1e3:.0f} ms", f"{procs * 1e3:.0f} ms", f"{sync / procs:.2f}x"])
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    args = parser.parse_args()
    wide, wide_proc, chain = (2_000, 500, 500) if args.quick else (100_000, 10_000, 10_000)
    repeat = 1 if args.quick else 3

    print(f"taskgrad {tg.__version__}, dask {dask.__version__}")
    print(_common.MALLOC)
    available = print_probe()
    rows = []
    rows += overhead_rows("wide", wide, ["sync", "threads"], repeat)
    rows += overhead_rows("wide", wide_proc, ["processes"], repeat)
    rows += overhead_rows("chain", chain, ["sync", "threads", "processes"], repeat)
    print_table("Per-node build time and per-task run overhead (microseconds, medians)",
                ["graph", "measure", "taskgrad us", "dask us", "dask/taskgrad", "plain loop us"],
                rows)

    sizes = [1_000, 10_000] if args.quick else [10_000, 100_000, 1_000_000]
    print_table("taskgrad: building and running a chain (linear in its length)",
                ["chain length", "build", "build / node", "run (sync)"],
                chain_build_scaling(sizes))

    print()
    before = print_probe()
    rows = speedup_rows(args.quick)
    after = print_probe()
    print_table("Parallel speed-ups (medians)",
                ["library", "workload", "comparison", "sync", "parallel", "speed-up"], rows)
    print(f"\n(core probes: {available:.2f}x at the start, {before:.2f}x just before and "
          f"{after:.2f}x just after the parallel runs; 2.00x = a whole second core free)")


if __name__ == "__main__":
    main()
