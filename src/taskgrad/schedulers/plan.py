"""Facts about a graph that every run needs, computed once before the run.

The parallel loop does not schedule single tasks: it schedules *units*, linear
chains of tasks fused together (a task whose only consumer has no other
input).  A unit makes one round trip to a worker however long the chain, and
its intermediate values never leave the worker.  Units are numbered in the
depth-first post-order of the graph, so the unit number is also its priority:
running low numbers first finishes one branch before starting the next.
"""

from __future__ import annotations

from ..graph import Literal, postorder


class Plan:
    """Units, their inputs and consumers, and reference counts for release.

    - ``values``: the literal leaves' values, known before anything runs;
    - ``units[u]``: the tasks of unit ``u`` in execution order;
    - ``unit_key[u]``: the key whose value unit ``u`` exports (its last task);
    - ``unit_inputs[u]``: keys from outside the unit that it reads;
    - ``waiting[u]``: how many of those are not yet computed;
    - ``consumers[key]``: the units that read ``key``;
    - ``refcount[key]``: consumers, plus one if ``key`` is a requested output.
    """

    __slots__ = ("order", "values", "units", "unit_key", "unit_inputs", "waiting",
                 "consumers", "refcount", "outputs")

    def __init__(self, graph, outputs):
        self.outputs = outputs = list(dict.fromkeys(outputs))
        self.order = order = postorder(graph, outputs)
        wanted = set(outputs)

        # how many tasks read each key (each reader counted once)
        readers = dict.fromkeys(order, 0)
        for key in order:
            for dep in graph[key].dependencies:
                readers[dep] += 1

        values = {}
        units = []
        unit_of = {}
        for key in order:
            task = graph[key]
            if type(task) is Literal:
                values[key] = task.args[0]
                continue
            deps = task.dependencies
            # extend the producer's unit when this task is its only reader,
            # this is its only input, and the producer is not itself wanted
            if len(deps) == 1:
                dep = deps[0]
                u = unit_of.get(dep)
                if u is not None and readers[dep] == 1 and dep not in wanted:
                    units[u].append(task)
                    unit_of[key] = u
                    continue
            unit_of[key] = len(units)
            units.append([task])
        self.values = values
        self.units = units
        self.unit_key = [unit[-1].key for unit in units]

        consumers = {}
        unit_inputs = []
        waiting = []
        for u, unit in enumerate(units):
            inputs = unit[0].dependencies  # later tasks read only their predecessor
            unit_inputs.append(inputs)
            waiting.append(sum(1 for k in inputs if k not in values))
            for k in inputs:
                consumers.setdefault(k, []).append(u)
        self.unit_inputs = unit_inputs
        self.waiting = waiting
        self.consumers = consumers
        refcount = {k: len(c) for k, c in consumers.items()}
        for k in wanted:
            refcount[k] = refcount.get(k, 0) + 1
        self.refcount = refcount
