"""Facts about a graph that every run needs, computed once before the run.

The parallel loop does not schedule single tasks: it schedules *units*, linear
chains of tasks fused together (a task whose only consumer has no other
input).  A unit makes one round trip to a worker however long the chain, and
its intermediate values never leave the worker.  Units are numbered in the
depth-first post-order of the graph, so the unit number is also its priority:
running low numbers first finishes one branch before starting the next.
"""

from __future__ import annotations

from ..graph import Literal, count_readers, postorder


class Plan:
    """Units, their inputs and consumers, and reference counts for release.

    - ``values``: the literal leaves' values, known before anything runs;
    - ``units[u]``: the tasks of unit ``u`` in execution order;
    - ``unit_inputs[u]``: keys from outside the unit that it reads;
    - ``waiting[u]``: how many of those are not yet computed;
    - ``ready``: the units waiting for nothing, in order (a heap);
    - ``unit_consumers[u]``: the units that read the value unit ``u`` exports (its last
      task's);
    - ``refcount[key]``: consumers, plus one if ``key`` is a requested output.
    """

    __slots__ = ("order", "values", "units", "unit_inputs", "waiting", "ready",
                 "unit_consumers", "refcount", "outputs")

    def __init__(self, graph, outputs, order=None):
        self.outputs = outputs = list(dict.fromkeys(outputs))
        self.order = order = postorder(graph, outputs) if order is None else order
        wanted = set(outputs)
        tasks = list(map(graph.__getitem__, order))
        readers = count_readers(tasks)

        self.values = values = {}
        self.units = units = []
        self.unit_inputs = unit_inputs = []
        self.waiting = waiting = []
        consumers = {}  # key -> the units that read it
        unit_of = {}
        for task in tasks:
            key = task.key
            if type(task) is Literal:
                values[key] = task.args[0]
                continue
            deps = task.dependencies
            # extend the producer's unit when this task is its only reader,
            # this is its only input, and the producer is not itself wanted
            if len(deps) == 1:
                dep = deps[0]
                if readers[dep] == 1 and dep not in wanted:
                    u = unit_of.get(dep)
                    if u is not None:
                        units[u].append(task)
                        unit_of[key] = u
                        continue
            u = len(units)
            unit_of[key] = u
            units.append([task])
            unit_inputs.append(deps)  # later tasks of a unit read only their predecessor
            missing = 0
            for dep in deps:
                if dep not in values:
                    missing += 1
                readers_of_dep = consumers.get(dep)
                if readers_of_dep is None:
                    consumers[dep] = [u]
                else:
                    readers_of_dep.append(u)
            waiting.append(missing)
        self.unit_consumers = [consumers.get(unit[-1].key, ()) for unit in units]
        self.ready = [u for u, w in enumerate(waiting) if w == 0]
        refcount = {k: len(c) for k, c in consumers.items()}
        for k in wanted:
            refcount[k] = refcount.get(k, 0) + 1
        self.refcount = refcount
