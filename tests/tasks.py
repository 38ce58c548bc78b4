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
