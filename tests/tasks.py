"""Small delayed functions shared by the core tests (importable by worker processes)."""

import taskgrad as tg


@tg.delayed
def inc(x):
    return x + 1


@tg.delayed
def add(x, y):
    return x + y


@tg.delayed
def fail(x):
    raise ZeroDivisionError(f"cannot use {x}")


class RangeError(Exception):
    """An exception whose ``__init__`` takes other arguments than its message."""

    def __init__(self, low, high):
        super().__init__(f"{low}-{high}")
        self.low, self.high = low, high


@tg.delayed
def fail_with_range(x):
    raise RangeError(x, x + 1)


@tg.delayed
def slow(x, seconds=0.3):
    import time

    time.sleep(seconds)
    return x


@tg.delayed
def compute_inside(x, scheduler):
    """A task that computes a graph of its own."""
    return (tg.delayed(x) + 1).compute(scheduler=scheduler, num_workers=1)


@tg.delayed(nout=2)
def pair(x):
    return x, x + 1


@tg.delayed
def die(x, after=0.1):
    """A worker process that exits abruptly (as a crash would)."""
    import os
    import time

    time.sleep(after)
    os._exit(3)
