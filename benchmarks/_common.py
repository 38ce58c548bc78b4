"""Shared helpers for the benchmark scripts: BLAS pinning, timing, the core probe, tables.

Import this module first in a benchmark: it pins BLAS to one thread before NumPy
is imported, so that "threads" speed-ups come from taskgrad, not from BLAS.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import multiprocessing  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402


def median_time(fn, repeat=5, warmup=1):
    """Median wall time of ``fn()`` over ``repeat`` runs, after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def spin(n):
    """Pure-Python CPU-bound work (holds the GIL)."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def _spin_timed(n, queue):
    start = time.perf_counter()
    spin(n)
    queue.put(time.perf_counter() - start)


def second_core_probe(n=3_000_000):
    """How much of a second core is free now: one CPU-bound process against two at once.

    Returns (time alone, wall time of two at once, available speed-up = 2*alone/both);
    2.0 means a whole second core was free, 1.0 means none was.
    """
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()

    def run(count):
        procs = [ctx.Process(target=_spin_timed, args=(n, queue)) for _ in range(count)]
        start = time.perf_counter()
        for p in procs:
            p.start()
        times = [queue.get() for _ in procs]
        for p in procs:
            p.join()
        return max(times), time.perf_counter() - start

    run(1)  # warm up the interpreter start
    alone = statistics.median(run(1)[0] for _ in range(3))
    both = statistics.median(run(2)[0] for _ in range(3))
    return alone, both, 2 * alone / both


def print_probe():
    alone, both, available = second_core_probe()
    print(f"core probe: one CPU-bound process {alone * 1e3:.0f} ms, two at once "
          f"{both * 1e3:.0f} ms each -> parallel speed-up available now: {available:.2f}x "
          f"(2.00 = second core free)")
    return available


def print_table(title, header, rows):
    """Print a fixed-width table: ``rows`` are lists of already-formatted strings."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
