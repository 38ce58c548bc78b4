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

__all__ = ["MAX_STEPS", "Source", "straight_line"]

MAX_STEPS = 10_000

_serial = itertools.count()


def straight_line(literals, steps, keys):
    """``run(values) -> [value of each of keys]`` for a planned graph.

    ``literals`` maps leaf keys to their values (``values`` may replace them);
    ``steps`` lists ``(task, keys whose last reader it is)`` in execution order.
    Keys and constants are bound by name in the function's globals, never
    written into the source, so any key (or value) works.
    """
    src = Source(KEYS=[task.key for task, _ in steps])
    lines = ["def run(values):", "    get = values.get"]
    for key, value in literals.items():
        v, k = src.var(key), src.bind(key)
        src.scope[f"C_{v}"] = value
        lines.append(f"    {v} = get({k}, C_{v})")
    calls = [(src.call(i, task), task.key, dead) for i, (task, dead) in enumerate(steps)]
    lines += src.steps(calls, keys, "KEYS[t]")
    return src.define(lines, "run", "straight-line plan")


class Source:
    """Generated code in the making: a local variable per key, and the globals (``scope``)
    that hold everything the source names (keys, functions, constants)."""

    def __init__(self, **scope):
        self.names = {}
        self.scope = {"execute": execute, "add_task_note": add_task_note, **scope}

    def var(self, key):
        """The local variable that holds the value of ``key``."""
        name = self.names.get(key)
        if name is None:
            name = self.names[key] = f"v{len(self.names)}"
        return name

    def bind(self, key):
        """A global naming ``key`` itself (to look it up in a dict of values)."""
        name = f"K_{self.var(key)}"
        self.scope[name] = key
        return name

    def call(self, i, task):
        """The source of the call of step ``i``; its constants go into ``scope``."""
        scope, var = self.scope, self.var
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

    def steps(self, calls, keys, failing_key):
        """The body of a generated run: each ``(call source, key, keys it is the last reader
        of)`` in ``calls`` assigned to the key's variable, then the values of ``keys``
        returned; a failure gets a note naming the key that ``failing_key`` (source, of
        the step number ``t``) gives."""
        lines = ["    t = 0", "    try:"]
        for i, (call, key, dead) in enumerate(calls):
            lines.append(f"        t = {i}")
            lines.append(f"        {self.var(key)} = {call}")
            if dead:
                lines.append(f"        del {', '.join(map(self.var, dead))}")
        lines.append(f"        return [{', '.join(map(self.var, keys))}]")
        lines += ["    except BaseException as exc:",
                  f"        raise add_task_note(exc, {failing_key})"]
        return lines

    def define(self, lines, name, what):
        """Compile ``lines`` and return the function ``name`` they define; tracebacks through
        it show its generated lines, as long as it lives."""
        source = "\n".join(lines) + "\n"
        filename = f"<taskgrad {what} {next(_serial)}>"
        exec(compile(source, filename, "exec"), self.scope)
        func = self.scope[name]
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        weakref.finalize(func, linecache.cache.pop, filename, None)
        return func
