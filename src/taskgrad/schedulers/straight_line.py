"""A prepared plan written out as one Python function: every call in order, no loop.

``tg.compile`` on ``"sync"`` runs the same tasks in the same order many times.
Like the ``forward`` that ``torch.fx`` generates from its graphs, the plan then
becomes straight-line code: each value lives in a local variable, each task is
one call with its arguments in place, and each value is deleted right after its
last reader (as the loop would).  Compared with the loop, which looks every
argument up in a dict (``graph.execute``), this took 10-15% off a small compiled
training step (``benchmarks/static_vs_dynamic.py``), where calls are short and
the loop's own work was a large part of the step.

Graphs of more than ``MAX_STEPS`` tasks keep the loop: compiling the source
costs time and memory in proportion to the graph.
"""

from __future__ import annotations

import itertools
import linecache
import weakref

from ..graph import execute
from .local import add_task_note

__all__ = ["MAX_STEPS", "straight_line"]

MAX_STEPS = 10_000

_serial = itertools.count()


def straight_line(literals, steps, keys):
    """``run(values) -> [value of each of keys]`` for a planned graph.

    ``literals`` maps leaf keys to their values (``values`` may replace them);
    ``steps`` lists ``(task, keys whose last reader it is)`` in execution order.
    Keys and constants are bound by name in the function's globals, never
    written into the source, so any key (or value) works.
    """
    names = {}

    def var(key):
        name = names.get(key)
        if name is None:
            name = names[key] = f"v{len(names)}"
        return name

    scope = {"execute": execute, "add_task_note": add_task_note,
             "KEYS": [task.key for task, _ in steps]}
    lines = ["def run(values):", "    get = values.get"]
    for key, value in literals.items():
        v = var(key)
        scope[f"K_{v}"], scope[f"C_{v}"] = key, value
        lines.append(f"    {v} = get(K_{v}, C_{v})")
    lines += ["    t = 0", "    try:"]
    for i, (task, dead) in enumerate(steps):
        lines.append(f"        t = {i}")
        lines.append(f"        {var(task.key)} = {_call(i, task, var, scope)}")
        if dead:
            lines.append(f"        del {', '.join(map(var, dead))}")
    lines.append(f"        return [{', '.join(map(var, keys))}]")
    lines += ["    except BaseException as exc:", "        raise add_task_note(exc, KEYS[t])"]

    source = "\n".join(lines) + "\n"
    filename = f"<taskgrad straight-line plan {next(_serial)}>"
    exec(compile(source, filename, "exec"), scope)
    run = scope["run"]
    # tracebacks through the generated code show its lines, as long as it lives
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    weakref.finalize(run, linecache.cache.pop, filename, None)
    return run


def _call(i, task, var, scope):
    """The source of the call of step ``i``; its constants go into ``scope``."""
    if task._refs is None:  # dependencies nested in containers: fill the template
        scope[f"T{i}"] = task
        deps = []
        for j, dep in enumerate(task.dependencies):
            scope[f"D{i}_{j}"] = dep
            deps.append(f"D{i}_{j}: {var(dep)}")
        return f"execute(T{i}, {{{', '.join(deps)}}})"
    scope[f"F{i}"] = task.func
    where = dict(task._refs)
    args = []
    for j, arg in enumerate(task.args):
        if j in where:
            args.append(var(where[j]))
        else:
            scope[f"A{i}_{j}"] = arg
            args.append(f"A{i}_{j}")
    if task.kwargs:
        scope[f"W{i}"] = task.kwargs
        args.append(f"**W{i}")
    return f"F{i}({', '.join(args)})"
