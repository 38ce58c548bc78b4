"""The task graph: tasks, references between them, and an iterative order.

A graph is a plain ``dict`` from key to :class:`Task`.  A task holds a function,
its argument template (literal values with :class:`Ref` placeholders where a
dependency's value goes, possibly inside lists, tuples, dicts and sets) and the
keys it depends on.  Nothing here recurses on the depth of the graph: a chain
of a million tasks is ordered with an explicit stack.
"""

from __future__ import annotations

__all__ = [
    "Ref",
    "Task",
    "CycleError",
    "MissingDependencyError",
    "postorder",
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

    ``_refs`` caches how to fill the template fast: ``()`` when no argument is
    a dependency, a tuple of ``(position, key)`` when dependencies appear only
    as top-level positional arguments, ``None`` for the general (nested) case.
    """

    __slots__ = ("key", "func", "args", "kwargs", "dependencies", "_refs", "pure")

    def __init__(self, key, func, args=(), kwargs=None, dependencies=None, pure=False):
        self.key = key
        self.func = func
        self.args = tuple(args)
        self.kwargs = kwargs or None
        self.pure = pure
        if dependencies is None:
            dependencies = tuple(dict.fromkeys(_template_keys((self.args, self.kwargs))))
        self.dependencies = tuple(dependencies)
        self._refs = self._fill_plan()

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
        return (self.key, self.func, self.args, self.kwargs, self.dependencies, self._refs, self.pure)

    def __setstate__(self, state):
        (self.key, self.func, self.args, self.kwargs, self.dependencies, self._refs, self.pure) = state

    def __repr__(self):
        name = getattr(self.func, "__name__", repr(self.func))
        parts = [repr(a) for a in self.args]
        if self.kwargs:
            parts += [f"{k}={v!r}" for k, v in self.kwargs.items()]
        text = f"{name}({', '.join(parts)})"
        if len(text) > 200:
            text = text[:197] + "..."
        return f"<Task {self.key!r}: {text}>"


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


_IN_PROGRESS = object()
_DONE = object()


def postorder(graph, roots):
    """Return the keys ``roots`` need, each after its dependencies (depth first).

    The depth-first post-order finishes one branch before starting the next,
    so intermediate results die young and memory stays near the graph's width.
    Uses an explicit stack; raises CycleError or MissingDependencyError.
    """
    state = {}
    order = []
    append = order.append
    for root in roots:
        if root in state:
            continue
        if root not in graph:
            raise MissingDependencyError(f"requested key {root!r} is not in the graph")
        state[root] = _IN_PROGRESS
        stack = [(root, iter(graph[root].dependencies))]
        while stack:
            key, deps = stack[-1]
            for dep in deps:
                seen = state.get(dep)
                if seen is None:
                    task = graph.get(dep)
                    if task is None:
                        raise MissingDependencyError(
                            f"task {key!r} depends on {dep!r}, which is not in the graph"
                        )
                    state[dep] = _IN_PROGRESS
                    stack.append((dep, iter(task.dependencies)))
                    break
                if seen is _IN_PROGRESS:
                    path = [k for k, _ in stack]
                    cycle = path[path.index(dep):] + [dep]
                    raise CycleError("the graph has a cycle: " + " -> ".join(map(repr, cycle)))
            else:
                stack.pop()
                state[key] = _DONE
                append(key)
    return order
