"""Computing the gradients of a recipe again: its graphs' run written out once, as code.

Why: a training loop that rebuilds its graph every step computes
``tg.compute(loss, *tg.grad(loss, params))`` on graphs of one structure, step after
step.  ``grad`` made those gradients from a recipe (``recipe.py``), in which every
node has a position, so the run is the same each time: the order of the tasks,
which argument of each reads which earlier value, and when each value dies.  The
second time a recipe's gradients are computed (on ``"sync"``, without callbacks,
with the default optimization), that run is written out as one Python function, as
``tg.compile`` does (``schedulers/straight_line.py``), except that each task's
function, constant arguments and keywords are read from the graph at hand; later
graphs of the recipe run it, without collecting, ordering or looping over their
tasks.  Measured on the MLP of ``benchmarks/mlp_step.py`` (float32), rebuilt every
step, right after a step's NumPy work: ``compute`` 5.09 -> 4.71 ms with ``tnp`` ops,
4.76 -> 4.59 ms with traced plain-NumPy layers (medians), about what a compiled step
takes.

What a graph of the recipe may change between steps is what the recipe takes from
the graph at hand (``recipe.py``); the rest, which positions read which, is its
signature.  A request that names anything else than the recipe's ``y`` and
gradients, or whose graph reaches a node outside the recipe's pool, is computed as
usual.
"""

from __future__ import annotations

from ..callbacks import running_tasks
from ..graph import Literal
from ..schedulers.local import last_reads
from ..schedulers.straight_line import MAX_STEPS, Source
from . import rules
from .backward_tasks import tape_value

__all__ = ["request_of"]

_SEEN = object()  # a request computed once the usual way: written out the next time
_NEVER = object()  # a request whose run cannot be written out
MAX_RUNS = 8  # requests remembered per recipe


def request_of(found):
    """A :class:`Request` when ``found`` (key -> Delayed) names only the ``y`` and the
    gradients of one ``grad`` call made from a recipe, else None.  The last one must be a
    gradient (as in ``compute(loss, *grads)``): other computes pay one look."""
    try:
        recipe, pool, _ = next(reversed(found.values()))._origin
    except AttributeError:
        return None
    y_position = recipe.n_forward - 1
    positions = []
    for d in found.values():
        if d._task is pool[y_position]:
            positions.append(y_position)
            continue
        try:
            theirs = d._origin
        except AttributeError:
            return None
        if theirs[0] is not recipe or theirs[1] is not pool:
            return None
        positions.append(theirs[2])
    return Request(recipe, pool, tuple(positions))


class Request:
    """Some of a recipe's outputs, asked of one of its graphs (``pool``: its tasks)."""

    __slots__ = ("recipe", "pool", "positions")

    def __init__(self, recipe, pool, positions):
        self.recipe = recipe
        self.pool = pool
        self.positions = positions

    def run(self):
        """The values, by the written-out run; None where there is none (yet)."""
        known = self.recipe.runs.get(self.positions)
        if type(known) is not tuple:
            return None
        program, order, registrations = known
        if registrations != rules.registrations():  # (a rule may change what fuses)
            self.recipe.runs.pop(self.positions, None)  # (another thread may have, too)
            return None
        pool = self.pool
        with running_tasks():
            return program([pool[i] for i in order])

    def learn(self, graph, order, keys):
        """After a compute of this request the usual way (``graph`` optimized, in ``order``):
        remember it, and write the run out the second time."""
        runs = self.recipe.runs
        known = runs.get(self.positions)
        if known is None:
            if len(runs) >= MAX_RUNS:
                runs.clear()
            runs[self.positions] = _SEEN
        elif known is _SEEN:
            runs[self.positions] = _written(graph, order, keys, self.pool) or _NEVER


def _written(graph, order, keys, pool):
    """``(program, pool positions of its tasks, registrations)``, or None where the graph's
    tasks are not all the pool's (or too many to write out)."""
    if order is None or len(order) > MAX_STEPS:
        return None
    at = {}
    for i, task in enumerate(pool):
        at.setdefault(task.key, i)  # (a wrt may share a key with a node of the graph)
    tasks = [graph[k] for k in order]
    positions = []
    for task in tasks:
        i = at.get(task.key)
        if i is None or (pool[i] is not task and task.func is not tape_value):
            return None
        positions.append(i)
    src = Source(TAPE_VALUE=tape_value)
    calls = [(_call(n, task, src.var), task.key, dead)
             for n, (task, dead) in enumerate(zip(tasks, last_reads(tasks, keys)))]
    return (src.define(["def run(T):", *src.steps(calls, keys, "T[t].key")], "run",
                       "recipe run"), positions, rules.registrations())


def _call(n, task, var):
    """The source computing ``task`` from ``T[n]`` (bound to ``x``), the pool's task at its
    position: its function, constants and keywords, with references to earlier values."""
    if type(task) is Literal:
        return f"T[{n}].args[0]"
    if task.func is tape_value:  # (fused with its tape: the pool's task is the unfused one)
        return f"TAPE_VALUE({var(task.dependencies[0])})"
    if task._refs is None:  # dependencies nested in containers: fill the template
        deps = ", ".join(map(var, task.dependencies))
        return f"execute((x := T[{n}]), dict(zip(x.dependencies, ({deps},))))"
    where = dict(task._refs)
    args = [var(where[j]) if j in where else f"x.args[{j}]" for j in range(len(task.args))]
    if task.kwargs:
        args.append("**x.kwargs")
    return f"(x := T[{n}]).func({', '.join(args)})"
