"""A partitioned plan written out as one straight-line function per worker thread.

``partition.py`` decides which worker runs each unit and in what order; here
each worker's share becomes generated code, as ``straight_line.py`` does for
one thread: values in local variables, one call per task, each value deleted
after its last reader on that worker.  What crosses between workers goes
through the run's shared dicts, guarded by *latches*: a lock per (value,
reading worker), created locked, that the producing worker releases once the
value is published and the reader acquires before it reads the value.  Only
values that cross pay for this; in a data-parallel step, only the shards'
gradients on their way to their sum.

A program takes ``(lits, pub, latches, countdowns, out, fail, wait)``:
``lits`` the leaves' values, ``pub`` the values crossing between workers,
``out`` the requested outputs; ``fail`` is a list that holds the run's first
exception once one is raised anywhere: a program checks it before every task
and returns when it is set (no task starts after a failure).  ``wait(latch,
fail)`` blocks until the latch opens, or returns False once the run has
failed.  A value read by several other workers is dropped from ``pub`` by the
last of them to read it (``countdowns``: one list per such value, one item per
reader, each reader pops one).  A *watched* program (for callbacks: a profiler,
a progress bar) also calls ``pre(key)`` before each task and ``post(key, start,
worker)`` after it.
"""

from __future__ import annotations

import time

from .straight_line import Source

__all__ = ["worker_programs"]


def worker_programs(plan, keys, owner, order, watched=False):
    """``(programs, latch_count, countdown_sizes)`` for ``plan`` partitioned as ``owner``
    (unit -> worker) and ``order`` (worker -> its units in the order it runs them).
    ``keys`` are the outputs: each program writes those it computes into ``out``."""
    units = plan.units
    # the workers other than its own that read each unit's exported value (its last task's)
    remote = {}
    for u, unit in enumerate(units):
        readers = {owner[c] for c in plan.unit_consumers[u]}
        readers.discard(owner[u])
        if readers:
            remote[unit[-1].key] = sorted(readers)
    latches = {}  # (key, reading worker) -> latch number
    countdowns = {}  # key read by several other workers -> countdown number
    for key, readers in remote.items():
        for w in readers:
            latches[key, w] = len(latches)
        if len(readers) > 1:
            countdowns[key] = len(countdowns)
    wanted = set(keys)
    programs = [_program(w, [units[u] for u in units_of_w], plan, wanted, remote, latches,
                         countdowns, watched)
                for w, units_of_w in enumerate(order)]
    # (countdowns are numbered in the dict's order)
    return programs, len(latches), [len(remote[key]) for key in countdowns]


def _program(worker, units, plan, wanted, remote, latches, countdowns, watched):
    """The function that runs ``units`` (lists of tasks, in order) on ``worker``."""
    steps = [task for unit in units for task in unit]
    src = Source(KEYS=[task.key for task in steps], clock=time.time)
    last_read = {}
    for i, task in enumerate(steps):
        for dep in task.dependencies:
            last_read[dep] = i
    literals = plan.values
    lines = ["def run(lits, pub, L, C, out, fail, wait, pre=None, post=None):", "    t = -1",
             "    try:"]
    here = set()  # keys whose values this program holds in locals
    for i, task in enumerate(steps):
        for dep in task.dependencies:
            if dep in here:
                continue
            here.add(dep)
            v, k = src.var(dep), src.bind(dep)
            if dep in literals:
                lines.append(f"        {v} = lits[{k}]")
                continue
            latch = latches[dep, worker]
            lines += ["        t = -1",
                      f"        if not wait(L[{latch}], fail): return"]
            if dep in countdowns:
                c = countdowns[dep]
                lines += [f"        {v} = pub[{k}]",
                          f"        C[{c}].pop()",
                          f"        if not C[{c}]: pub.pop({k}, None)"]
            else:
                lines.append(f"        {v} = pub.pop({k})")
        key = task.key
        v = src.var(key)
        here.add(key)
        lines.append("        if fail: return")
        if watched:  # (t = -1 around the hooks: what they raise names no task)
            lines += [f"        pre(KEYS[{i}])", "        s = clock()"]
        lines += [f"        t = {i}", f"        {v} = {src.call(i, task)}"]
        if watched:
            lines += ["        t = -1", f"        post(KEYS[{i}], s, {worker})"]
        if key in remote:
            lines.append(f"        pub[{src.bind(key)}] = {v}")
            lines += [f"        L[{latches[key, w]}].release()" for w in remote[key]]
        if key in wanted:
            lines.append(f"        out[{src.bind(key)}] = {v}")
        dead = [d for d in task.dependencies if last_read[d] == i]
        if key not in last_read:
            dead.append(key)
        if dead:
            lines.append(f"        del {', '.join(map(src.var, dead))}")
    lines += ["        pass",  # (a worker with no units)
              "    except BaseException as exc:",
              "        if t >= 0:",
              "            add_task_note(exc, KEYS[t])",
              "        raise"]
    return src.define(lines, "run", f"worker {worker} program")
