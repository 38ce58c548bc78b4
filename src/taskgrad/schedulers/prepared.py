"""Run one graph many times: plan it once, then feed fresh values to its leaves.

``tg.compile`` prepares its graph here.  Leaves to be fed are literal slots;
the :class:`~taskgrad.schedulers.plan.Plan` (order, fused units, reference
counts) is built once, so a run only copies the literal values, overrides the
fed ones and goes through the units: no graph walking per call.  On "sync",
the steps are written out as one Python function (``straight_line.py``); on
"threads", the first calls run the dynamic loop and measure each unit, and
later calls run a fixed schedule, one such function per worker
(``static_threads.py``).
"""

from __future__ import annotations

import threading

from ..graph import Literal, execute
from . import executor_for, resolve
from .distributed import run_distributed
from .local import active, add_task_note, run_parallel
from .plan import Plan
from .static_threads import StaticThreads
from .straight_line import MAX_STEPS, straight_line
from .threads import ThreadExecutor

__all__ = ["PreparedRun"]

MEASURED_RUNS = 2  # runs of a compiled graph on "threads" that measure before it is planned


class PreparedRun:
    """``graph`` planned for ``keys`` on one scheduler; call it with ``{slot_key: value}``."""

    def __init__(self, graph, keys, scheduler=None, num_workers=None):
        self.kind = resolve(scheduler, num_workers)
        self.scheduler = scheduler
        self.num_workers = num_workers
        self.graph = graph
        self.keys = list(keys)
        if self.kind == "client":  # the cluster plans the graph itself
            return
        self.plan = plan = Plan(graph, self.keys)
        # the inputs whose last reader is each unit
        refcount = dict(plan.refcount)
        release = []
        for inputs in plan.unit_inputs:
            done = []
            for key in inputs:
                refcount[key] -= 1
                if not refcount[key]:
                    done.append(key)
            release.append(tuple(done))
        # the same as one flat list: each task, then the keys that die after it
        # (inside a unit, the predecessor; after its last task, the unit's inputs)
        steps = []
        for unit, dead in zip(plan.units, release):
            for i, task in enumerate(unit):
                after = (unit[i - 1].key,) if i else ()
                steps.append((task, after + dead if i == len(unit) - 1 else after))
        self.steps = steps
        # what a call without callbacks runs: on "sync", the plan written out (or the loop,
        # for a graph too large to write out); on "threads", the measuring calls, then the
        # fixed schedule; None: the shared loop (``run_parallel``)
        self._run_fast = None
        if self.kind == "sync":
            self._run_fast = self._run_loop
            if len(steps) <= MAX_STEPS:
                self._run_fast = straight_line(plan.values, steps, self.keys)
        elif self.kind == "threads" and len(steps) <= MAX_STEPS:
            self._run_fast = self._measure_and_plan
            self._costs, self._measured = None, 0
            self._planning = threading.Lock()

    def __call__(self, values, callbacks=None):
        """Run with ``values`` for some literal slots; return the values of ``keys``."""
        if self.kind == "client":
            graph = dict(self.graph)
            graph.update((k, Literal(k, v)) for k, v in values.items())
            return run_distributed(graph, self.keys, self.scheduler)
        callbacks = active(callbacks)
        if self._run_fast is not None and not callbacks:
            return self._run_fast(values)
        if callbacks and isinstance(self._run_fast, StaticThreads):  # the fixed schedule
            return self._run_fast(values, callbacks, self.graph)
        # with callbacks, "sync" is the shared loop with one worker: the calling thread
        kind, workers = ("threads", 1) if self.kind == "sync" else (self.kind, self.num_workers)
        return run_parallel(self.graph, self.keys, executor_for(kind, workers),
                            callbacks, plan=self.plan, values=values)

    def _measure_and_plan(self, values):
        """The first runs, on the dynamic loop, measure each unit; once ``MEASURED_RUNS`` have
        succeeded, later runs follow a schedule fixed from each unit's least cost among them
        (``static_threads``): a unit's first run may pay one-time costs (imports, caches)
        and any run a one-off pause, which would misplace it."""
        executor = ThreadExecutor(self.num_workers, costs=[0.0] * len(self.plan.units))
        out = run_parallel(self.graph, self.keys, executor, (), plan=self.plan, values=values)
        with self._planning:  # (several threads may call at once)
            if isinstance(self._run_fast, StaticThreads):  # planned meanwhile
                return out
            costs = executor.costs if self._costs is None else list(map(min, self._costs,
                                                                        executor.costs))
            self._costs, self._measured = costs, self._measured + 1
            if self._measured >= MEASURED_RUNS:
                self._run_fast = StaticThreads(self.plan, self.keys, costs,
                                               executor.num_workers)
                self._costs = None
        return out

    def _run_loop(self, values):
        """The in-thread loop without callbacks, for graphs too large to write out."""
        results = dict(self.plan.values)
        results.update(values)
        task = None
        try:
            for task, dead in self.steps:
                results[task.key] = execute(task, results)
                for key in dead:
                    del results[key]
        except BaseException as exc:
            raise add_task_note(exc, task.key)
        return [results[k] for k in self.keys]
