"""The task graph: tasks, references between them, and an iterative order.

A graph is a plain ``dict`` from key to :class:`Task`.  A task holds a function,
its argument template (literal values with :class:`Ref` placeholders where a
dependency's value goes, possibly inside lists, tuples, dicts and sets) and the
keys it depends on.  Nothing here recurses on the depth of the graph: a chain
of a million tasks is ordered with an explicit stack.
"""

from __future__ import annotations

import sys
from collections import Counter
from itertools import chain
from operator import attrgetter

__all__ = [
    "Ref",
    "Task",
    "CycleError",
    "MissingDependencyError",
    "postorder",
    "run_early",
    "count_readers",
    "execute",
]


class Ref:
    """Placeholder for the value of the task ``key`` inside an argument template."""

    __slots__ = ("key",)

    def __init__(self, key):
        self.key = key

    def __repr__(self):
        return f"Ref({self.key!r})"

    def __reduce__(self):
        return (Ref, (self.key,))

    def __eq__(self, other):
        return type(other) is Ref and other.key == self.key

    def __hash__(self):
        return hash((Ref, self.key))


class Pack:
    """A container (list, tuple, dict, set, namedtuple) whose items hold Refs.

    ``items`` is a tuple of templates (for a dict: of ``(key, value)`` pairs);
    ``kind`` is the container's type, rebuilt when the task runs.
    """

    __slots__ = ("kind", "items")

    def __init__(self, kind, items):
        self.kind = kind
        self.items = items

    def __repr__(self):
        return f"Pack({self.kind.__name__}, {self.items!r})"

    def __reduce__(self):
        return (Pack, (self.kind, self.items))

    def __eq__(self, other):
        return type(other) is Pack and other.kind is self.kind and other.items == self.items

    def __hash__(self):
        return hash((Pack, self.kind, self.items))


def materialize(template, results):
    """Replace every Ref in ``template`` by its value from ``results``.

    Recurses on the nesting of user containers only, never on graph depth.
    """
    cls = type(template)
    if cls is Ref:
        return results[template.key]
    if cls is Pack:
        kind = template.kind
        if kind is dict:
            return {k: materialize(v, results) for k, v in template.items}
        values = [materialize(v, results) for v in template.items]
        if kind is list:
            return values
        if kind is tuple or kind is set or kind is frozenset:
            return kind(values)
        return kind(*values)  # namedtuple
    return template


class Task:
    """One node of a graph: ``func(*args, **kwargs)`` once its dependencies are known.

    ``role`` is ``"forward"`` for user tasks and ``"backward"`` for the tasks
    ``grad`` builds (drawn apart by ``visualize``); ``pure`` says equal inputs
    give equal outputs (so the task may be shared or cached).
    ``_refs`` caches how to fill the template fast: ``()`` when no argument is
    a dependency, a tuple of ``(position, key)`` when dependencies appear only
    as top-level positional arguments, ``None`` for the general (nested) case.
    """

    __slots__ = ("key", "func", "args", "kwargs", "dependencies", "_refs", "pure", "role")

    def __init__(self, key, func, args=(), kwargs=None, dependencies=None, pure=False,
                 role="forward", fill_plan=False):
        self.key = key
        self.func = func
        self.args = args if type(args) is tuple else tuple(args)
        self.kwargs = kwargs or None
        self.pure = pure
        self.role = role
        if dependencies is None:
            dependencies = tuple(dict.fromkeys(_template_keys((self.args, self.kwargs))))
        self.dependencies = dependencies if type(dependencies) is tuple else tuple(dependencies)
        # builders that already know the plan pass it (one walk of the arguments less)
        self._refs = self._fill_plan() if fill_plan is False else fill_plan

    def _fill_plan(self):
        if not self.dependencies:
            return ()
        if self.kwargs:
            for v in self.kwargs.values():
                if type(v) in (Ref, Pack):
                    return None
        refs = []
        for i, a in enumerate(self.args):
            cls = type(a)
            if cls is Ref:
                refs.append((i, a.key))
            elif cls is Pack:
                return None
        return tuple(refs)

    def __getstate__(self):
        return (self.key, _picklable(self.func), self.args, self.kwargs, self.dependencies, self._refs,
                self.pure, self.role)

    def __setstate__(self, state):
        (self.key, self.func, self.args, self.kwargs, self.dependencies, self._refs,
         self.pure, self.role) = state

    def __repr__(self):
        name = getattr(self.func, "__name__", repr(self.func))
        parts = [repr(a) for a in self.args]
        if self.kwargs:
            parts += [f"{k}={v!r}" for k, v in self.kwargs.items()]
        text = f"{name}({', '.join(parts)})"
        if len(text) > 200:
            text = text[:197] + "..."
        return f"<Task {self.key!r}: {text}>"


class _ViaWrapper:
    """Pickles a decorated function as ``getattr(<module attribute>, "__wrapped__")``."""

    __slots__ = ("holder",)

    def __init__(self, holder):
        self.holder = holder

    def __reduce__(self):
        return (getattr, (self.holder, "__wrapped__"))


def _picklable(func):
    """Make a function hidden behind its decorator (``@tg.delayed def f``) picklable.

    Pickle finds module functions by name, and under that name the module holds
    the decorator object, not ``func``; the decorator is found by name instead.
    """
    module = getattr(func, "__module__", None)
    if module is None or module == "__main__":
        return func
    holder = getattr(sys.modules.get(module), getattr(func, "__qualname__", ""), None)
    if holder is not None and holder is not func and getattr(holder, "__wrapped__", None) is func:
        return _ViaWrapper(holder)
    return func


class Literal(Task):
    """A leaf task that simply holds a value (a wrapped or persisted object)."""

    __slots__ = ()

    def __init__(self, key, value):
        self.key = key
        self.func = None
        self.args = (value,)
        self.kwargs = None
        self.dependencies = ()
        self._refs = ()
        self.pure = True
        self.role = "forward"

    @property
    def value(self):
        return self.args[0]

    def __repr__(self):
        text = repr(self.args[0])
        if len(text) > 80:
            text = text[:77] + "..."
        return f"<Literal {self.key!r}: {text}>"


def _template_keys(template):
    """Yield the keys of all Refs in a template (containers walked with a stack)."""
    stack = [template]
    while stack:
        item = stack.pop()
        cls = type(item)
        if cls is Ref:
            yield item.key
        elif cls is Pack:
            stack.extend(reversed(item.items))
        elif cls is tuple or cls is list:
            stack.extend(reversed(item))
        elif cls is dict:
            stack.extend(reversed(item.values()))


def execute(task, results):
    """Run one task, reading its dependencies' values from ``results``."""
    refs = task._refs
    func = task.func
    if func is None:
        return task.args[0]
    if refs is None:
        args = [materialize(a, results) for a in task.args]
        kwargs = task.kwargs
        if kwargs:
            kwargs = {k: materialize(v, results) for k, v in kwargs.items()}
            return func(*args, **kwargs)
        return func(*args)
    if refs:
        args = list(task.args)
        for i, key in refs:
            args[i] = results[key]
    else:
        args = task.args
    if task.kwargs:
        return func(*args, **task.kwargs)
    return func(*args)


class CycleError(ValueError):
    """The graph has a cycle, so no task in it can ever run."""


class MissingDependencyError(KeyError):
    """A task depends on a key that is not in the graph."""

    def __str__(self):
        return str(self.args[0])


_EARLY = set()


def run_early(func):
    """Mark ``func`` as cheap, with a small result: its tasks run right after their inputs.

    ``grad`` reads the shape and dtype of forward values it needs no more of
    through such tasks, so that the values themselves can be freed as soon as
    the forward pass is done with them, instead of when the backward pass
    reaches them.  Returns ``func`` (usable as a decorator).
    """
    _EARLY.add(func)
    return func


def is_early(task):
    """Whether ``task`` runs a ``run_early`` function."""
    try:
        return task.func in _EARLY
    except TypeError:  # an unhashable callable is never marked
        return False


def hoist_early(order, graph, early):
    """``order`` with each of the ``early`` keys just after its last dependency.

    A key at index ``i`` gets the rank ``i * step``; an early key the rank of
    its last dependency's slot plus ``n`` (``n`` counting up, below ``step``),
    so it sorts right after that dependency and after any early key it reads.
    The ranks are ints and the sort runs at C speed.
    """
    step = len(early) + 1
    rank = dict(zip(order, range(0, len(order) * step, step)))
    early.sort(key=rank.__getitem__)  # inputs first
    for n, key in enumerate(early, 1):
        deps = graph[key].dependencies
        last = rank[deps[0]] if len(deps) == 1 else max(map(rank.__getitem__, deps),
                                                         default=-step)
        rank[key] = last - last % step + n
    order.sort(key=rank.__getitem__)
    return order


def postorder(graph, roots):
    """Return the keys ``roots`` need, each after its dependencies (depth first).

    The depth-first post-order finishes one branch before starting the next,
    so intermediate results die young and memory stays near the graph's width.
    Uses an explicit stack; raises CycleError or MissingDependencyError.
    A key is *entered* (``state[key] = False``) when its dependencies are
    pushed and *done* (``True``) once they all are; meeting an entered,
    unfinished key again means a cycle.  One dict holds both facts, so a key
    costs one lookup per visit.  Tasks of ``run_early`` functions are then
    moved to just after their inputs.
    """
    state = {}
    order = []
    early = []
    for root in roots:
        if root in state:
            continue
        if root not in graph:
            raise MissingDependencyError(f"requested key {root!r} is not in the graph")
        stack = [root]
        while stack:
            key = stack[-1]
            known = state.get(key)
            if known is None:
                state[key] = False
                task = graph[key]
                if is_early(task):
                    early.append(key)
                pushed = False
                for dep in reversed(task.dependencies):
                    seen = state.get(dep)
                    if seen is None:
                        if dep not in graph:
                            raise MissingDependencyError(
                                f"task {key!r} depends on {dep!r}, which is not in the graph")
                        stack.append(dep)
                        pushed = True
                    elif not seen:
                        raise CycleError(_cycle_message(stack, state, dep))
                if pushed:
                    continue
            stack.pop()
            if not known:
                state[key] = True
                order.append(key)
    return hoist_early(order, graph, early) if early else order


def count_readers(tasks):
    """How many of ``tasks`` read each key (a Counter; C-speed counting)."""
    return Counter(chain.from_iterable(map(attrgetter("dependencies"), tasks)))


def _cycle_message(stack, state, dep):
    """Describe the cycle: the entered, unfinished keys on the stack are the current path."""
    path = list(dict.fromkeys(k for k in stack if state.get(k) is False))
    cycle = path[path.index(dep):] + [dep]
    return "the graph has a cycle: " + " -> ".join(map(repr, cycle))
