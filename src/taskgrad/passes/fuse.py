"""Fusion of linear chains: a run of tasks each feeding only the next becomes one task.

A task joins the chain of its producer when the producer is read by nothing
else and is not requested, and every other input of the task is a leaf (a
literal or a placeholder, whose value is already there).  Fusing then never
delays work that could have run in parallel, and the scheduler pays its
per-task overhead once per chain.  The fused task is an ordinary
:class:`~taskgrad.graph.Task` whose function is a :class:`Fused`; it keeps the
key of the chain's last task.
"""

from __future__ import annotations

from ..delayed import funcname
from ..graph import Ref, Task, execute, postorder
from ..schedulers.local import add_task_note
from .common import is_leaf, readers


class Fused:
    """Run a few tasks in order inside one task and return the last one's value.

    ``tasks`` are in dependency order; ``inputs`` are the keys they read from
    outside, passed as positional arguments.  Each inner value is dropped after
    its last inner use, so a long chain holds one intermediate at a time.
    """

    __slots__ = ("tasks", "inputs", "release", "__name__")

    def __init__(self, tasks):
        tasks = tuple(t for task in tasks
                      for t in (task.func.tasks if isinstance(task.func, Fused) else (task,)))
        produced = {t.key for t in tasks}
        self.tasks = tasks
        self.inputs = tuple(dict.fromkeys(d for t in tasks for d in t.dependencies
                                          if d not in produced))
        last_use = {}
        for i, task in enumerate(tasks):
            for dep in task.dependencies:
                if dep in produced:
                    last_use[dep] = i
        release = [[] for _ in tasks]
        for key, i in last_use.items():
            release[i].append(key)
        self.release = tuple(map(tuple, release))
        names = [funcname(t.func) for t in tasks]
        if len(names) > 3:
            names = [names[0], f"...{len(names) - 2}...", names[-1]]
        self.__name__ = "fused:" + "+".join(names)

    def __call__(self, *values):
        results = dict(zip(self.inputs, values))
        for task, drop in zip(self.tasks, self.release):
            try:
                results[task.key] = execute(task, results)
            except Exception as exc:  # name the inner task that failed, not just the fused one
                raise add_task_note(exc, task.key)
            for key in drop:
                del results[key]
        return results[self.tasks[-1].key]

    def __reduce__(self):
        return (Fused, (self.tasks,))

    def __repr__(self):
        return f"<{self.__name__} ({len(self.tasks)} tasks)>"


def fused_task(tasks):
    """One Task doing the work of ``tasks`` (in dependency order), under the last key."""
    func = Fused(tasks)
    last = func.tasks[-1]
    return Task(last.key, func, tuple(Ref(k) for k in func.inputs),
                dependencies=func.inputs, pure=all(t.pure for t in func.tasks), role=last.role)


def fuse(graph, keys):
    """Fuse linear chains (see the module docstring); keys in ``keys`` end chains."""
    order = postorder(graph, keys)
    count = readers(graph, order)
    wanted = set(keys)
    chain_of = {}  # key -> the chain (list of tasks) it ends or belongs to
    chains = []
    for key in order:
        task = graph[key]
        if is_leaf(task):
            continue
        inner = [d for d in task.dependencies if not is_leaf(graph[d])]
        if len(inner) == 1:
            dep = inner[0]
            chain = chain_of.get(dep)
            if chain is not None and count[dep] == 1 and dep not in wanted:
                chain.append(task)
                chain_of[key] = chain
                continue
        chain = [task]
        chain_of[key] = chain
        chains.append(chain)
    fused = {chain[-1].key: (fused_task(chain) if len(chain) > 1 else chain[0])
             for chain in chains}
    return {key: fused.get(key, graph[key]) for key in order
            if key in fused or is_leaf(graph[key])}
