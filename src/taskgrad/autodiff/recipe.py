"""A backward graph written down once per forward structure, then made again per graph.

Why: a training loop that rebuilds its graph every step, as PyTorch users write
them, gives ``grad`` the same structure each time with new nodes.  Working out
its backward tasks (which nodes are active, which rules apply, which values
each task reads) costs most of ``grad``; a :class:`Recipe` keeps the outcome
with every node named by its position, so that the next graph of that
structure only has its tasks made.  Measured on the MLP of
``benchmarks/mlp_step.py`` (float32), right after a step's NumPy work as in a
training loop: ``grad`` took 400-420 us analysing, 163-168 us from a recipe
(medians), in a step of about 4.5 ms; with plain-NumPy layers, traced, 300 and
125-135 us.

Positions index a *pool*: the forward nodes in ``grad``'s post-order, then the
seed cotangent, then the ``wrt`` nodes, then each backward task as it is made.
A structure (:func:`signature`) is what the analysis reads of the forward
graph: each node's function (for a plain function, traced, only that it has no
rules), task type, argument count, keyword presence and edges by position, with
the ``wrt`` positions.  Backward tasks take the forward tasks' constant
arguments, keywords and plain functions from the graph at hand.  Graphs whose
analysis would read more (Delayeds nested in containers, ufunc keywords or
lists, a gradient's tape walk differentiated again) have no signature; their
recipe is made and used once.  Registering a rule clears the cache, which holds
at most ``MAX_RECIPES``.
"""

from __future__ import annotations

from operator import attrgetter, itemgetter

import numpy as np

from ..delayed import Delayed, funcname, set_origin
from ..graph import Pack, Ref, Task
from .backward_tasks import TapeSpec
from .rules import _CACHES, has_rules, is_composite, is_nondifferentiable, remember

__all__ = ["Recipe", "signature", "cached", "kwargs_template", "MAX_RECIPES", "REF", "CONST",
           "ARG", "KWARGS", "FUNC", "TAPE"]

MAX_RECIPES = 64

# what a backward task's argument is: the value of its ``a``-th dependency; the constant
# ``a``; of the forward task at pool position ``a``: its argument ``b``, its keywords (as
# ``kwargs_template`` gives them), its function, or the ``TapeSpec`` of tracing it, ``b``
# being the places of the differentiated dependencies
REF, CONST, ARG, KWARGS, FUNC, TAPE = range(6)

_key_of = attrgetter("_key")
_HOLDS_REFS = frozenset([Ref, Pack])  # (a template's references: top level, or in a Pack)

_RECIPES = {}
_CACHES.append(_RECIPES)


class Recipe:
    """The backward tasks of one forward structure, added in the order they are made.

    A task's key is ``f"{prefix}-{key of pool[key_from]}{suffix}"`` (then ``-{token}``
    when ``tokened``); its arguments are given as ``(kind, a, b)`` triples (see
    ``REF``...) and its dependencies as pool positions.
    """

    __slots__ = ("n_forward", "n_wrt", "entries", "outputs", "runs")

    def __init__(self, n_forward, n_wrt):
        self.n_forward = n_forward
        self.n_wrt = n_wrt
        self.entries = []
        self.outputs = ()  # the pool position of each wrt's gradient
        self.runs = {}  # what ``recipe_runs`` knows of computing its graphs

    @property
    def seed(self):
        return self.n_forward

    def wrt(self, i):
        return self.n_forward + 1 + i

    def add(self, prefix, key_from, suffix, func, args, deps, tokened=True):
        """Add a task; return its pool position.

        It is stored ready to make: its constant arguments in place, and the places to
        fill with a reference or with something of a forward task.
        """
        template = [a if kind == CONST else None for kind, a, _ in args]
        refs = [(pos, a) for pos, (kind, a, _) in enumerate(args) if kind == REF]
        filled = [(pos, kind, a, b) for pos, (kind, a, b) in enumerate(args) if kind > CONST]
        # the task finds its own fill plan where a constant may hold references
        own_plan = any(type(a) in _HOLDS_REFS for a in template)
        self.entries.append((prefix, key_from, suffix, tokened, func, template, _picker(deps),
                             refs, filled, own_plan))
        return self.n_forward + 1 + self.n_wrt + len(self.entries) - 1

    def make(self, forward, seed, wrts, token, again=False):
        """The gradients of ``wrts`` as Delayeds, with this graph's nodes in the pool.

        With ``again``, each gradient carries its origin ``(recipe, the pool's tasks,
        position)``, so that ``compute`` may run it as the graphs of this recipe were run
        before."""
        pool = [*forward, seed, *wrts]
        for (prefix, key_from, suffix, tokened, func, template, pick, refs, filled,
             own_plan) in self.entries:
            deps = pick(pool)
            dep_keys = tuple(map(_key_of, deps))
            args = template.copy()
            fill = []
            for pos, j in refs:
                key = dep_keys[j]
                args[pos] = Ref(key)
                fill.append((pos, key))
            for pos, kind, a, b in filled:
                source = pool[a]._task
                if kind == ARG:
                    args[pos] = source.args[b]
                elif kind == KWARGS:
                    args[pos] = kwargs_template(source.kwargs) if source.kwargs else {}
                elif kind == FUNC:
                    args[pos] = source.func
                else:
                    args[pos] = TapeSpec(source.key, funcname(source.func), b)
            key = (f"{prefix}-{pool[key_from]._key}{suffix}-{token}" if tokened else
                   f"{prefix}-{pool[key_from]._key}{suffix}")
            task = Task(key, func, tuple(args), None, dep_keys, True, "backward",
                        False if own_plan else tuple(fill))
            pool.append(Delayed(key, task, deps))
        if again:  # (the pool's tasks, not its Delayeds: a gradient in its own origin
            # would be a reference cycle, which only the cyclic collector frees)
            tasks = [d._task for d in pool]
            for i in self.outputs:
                set_origin(pool[i], (self, tasks, i))
        return [pool[i] for i in self.outputs]


def _picker(positions):
    """``pool -> tuple of pool[i] for i in positions``, in C where it can be (measured:
    0.4 -> 0.1 us for three)."""
    if len(positions) > 1:
        return itemgetter(*positions)
    return lambda pool: tuple([pool[i] for i in positions])


def kwargs_template(kwargs):
    """A forward call's keywords as one argument a backward task can read."""
    if not kwargs:
        return {}
    if any(type(v) in _HOLDS_REFS for v in kwargs.values()):
        return Pack(dict, tuple(kwargs.items()))
    return dict(kwargs)


def signature(forward, wrts, tape_func):
    """The structure of the forward nodes (a list, dependencies first) and ``wrts``, or None
    where the analysis reads more than the structure (see the module's docstring).
    ``tape_func`` is the function of tasks that walk a tape (differentiated as what they
    compute, which takes their arguments)."""
    at = {}
    parts = []
    for i, d in enumerate(forward):
        task = d._task
        at[d._key] = i
        func = task.func
        deps = task.dependencies
        if func is None:
            parts.append(type(task))
            continue
        refs = task._refs
        if refs is None or func is tape_func:
            return None
        if not (has_rules(func) or is_nondifferentiable(func)):
            # a plain function: traced, or without inputs, no backward task at all; its
            # tasks take it from the graph, so that the cache does not hold a function
            # made anew for each graph (nor what it holds).  A NumPy function traced
            # through its composition keeps its name: its forward task is not fused with
            # its tape (``fuse_tape.py``), which ``recipe_runs`` relies on
            if not is_composite(func):
                func = "plain"
        elif type(func) is np.ufunc and (task.kwargs or list in map(type, task.args)):
            return None
        parts.append((func, type(task), len(task.args), task.kwargs is not None,
                      tuple([at[k] for k in deps]), tuple([(p, at[k]) for p, k in refs])))
    wrt_parts = []
    for w in wrts:
        i = at.get(w._key)
        if i is None:  # outside the graph, read by its zeros task
            if w._task.dependencies:  # (computed from nodes the structure does not show)
                return None
            wrt_parts.append((type(w._task), w._task.func is None))
        elif forward[i]._task is not w._task:  # a task of its own under a key of the graph
            return None
        else:
            wrt_parts.append(i)
    parts.append(tuple(wrt_parts))
    return tuple(parts)


def cached(key, build):
    """The recipe under ``key`` (a signature), made by ``build()`` the first time."""
    recipe = _RECIPES.get(key)
    if recipe is None:
        if len(_RECIPES) >= MAX_RECIPES:
            _RECIPES.clear()
        recipe = remember(_RECIPES, key, build)
    return recipe
