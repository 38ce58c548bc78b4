"""Shared helpers for the benchmark scripts: BLAS and allocator pinning, timing, the
core probe, tables.

Import this module first in a benchmark: it pins BLAS to one thread before NumPy
is imported, so that "threads" speed-ups come from taskgrad, not from BLAS, and
it pins glibc's malloc thresholds (see :func:`pin_malloc`).
"""

from __future__ import annotations

import ctypes
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import multiprocessing  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402


def pin_malloc():
    """Keep freed memory in the process instead of handing it back to the kernel.

    By default glibc's thresholds move with the sizes freed, and a training step
    that frees and reallocates a few MB may give them back to the kernel and
    take them again every step: here that cost hundreds of page faults per step
    (6.5 instead of 4.2 ms for hand-written NumPy on two half batches) in some
    orders of frees and none in others, which made ratios depend on the order of
    ``free`` calls more than on the work.  Fixed thresholds (the
    ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_MMAP_THRESHOLD_`` tunables) give every
    implementation the same allocator.  Returns a line saying what was set.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return "allocator: not glibc, left as it is"
    m_trim_threshold, m_mmap_threshold = -1, -3
    if mallopt(m_mmap_threshold, 32 << 20) and mallopt(m_trim_threshold, 1 << 30):
        return ("allocator: glibc malloc with fixed thresholds (blocks up to 32 MiB from the "
                "heap, freed memory kept up to 1 GiB), the same for every implementation")
    return "allocator: glibc rejected mallopt, left as it is"


MALLOC = pin_malloc()


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


def interleaved_times(steps, args, rounds, block):
    """Wall and CPU time (this process) per call of each of ``steps``, one time a round.

    A round runs every step ``block`` times back to back (after one untimed
    call), as a training loop does: single calls interleaved with other work
    would time cold caches and the second core's wake-up instead (threads lost
    up to 30% that way here).  The order of the steps is shuffled every round
    (seeded), so that no implementation always follows the same one.  Returns
    two dicts of lists in round order, so that the times of two steps in the
    same round, under the same load, can be paired.
    """
    wall = {name: [] for name in steps}
    cpu = {name: [] for name in steps}
    order = list(steps)
    shuffle = random.Random(0).shuffle
    for _ in range(rounds):
        shuffle(order)
        for name in order:
            step = steps[name]
            step(*args)
            c, t = time.process_time(), time.perf_counter()
            for _ in range(block):
                step(*args)
            wall[name].append((time.perf_counter() - t) / block)
            cpu[name].append((time.process_time() - c) / block)
    return wall, cpu


def medians(times):
    """``{name: median}`` of ``{name: list of times}``."""
    return {name: statistics.median(ts) for name, ts in times.items()}


def interleaved_medians(steps, args, rounds, block):
    """Median wall and CPU time per call of each of ``steps``: see :func:`interleaved_times`."""
    wall, cpu = interleaved_times(steps, args, rounds, block)
    return medians(wall), medians(cpu)


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
