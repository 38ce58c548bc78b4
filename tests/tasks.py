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
