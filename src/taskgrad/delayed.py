"""``Delayed``: a lazy value, and the ``delayed`` decorator that makes them.

Calling a delayed function records a :class:`~taskgrad.graph.Task` and returns a
``Delayed`` pointing at it; nothing runs until ``compute``.  Building a node is
meant to be cheap (a few microseconds): keys come from a counter, and only
``pure=True`` pays for hashing the arguments.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
import operator
import os
import sys
import types

import numpy as np

from .graph import Literal, Pack, Ref, Task, hoist_early, is_early, postorder

__all__ = ["Delayed", "delayed", "DelayedFunction", "collect_graph", "collect_in_order",
           "unpack_delayed"]

_CONTAINERS = (list, tuple, dict, set, frozenset)


# ---------------------------------------------------------------- keys

def _new_prefix():
    return os.urandom(4).hex()


_prefix = _new_prefix()
_counter = itertools.count()


def _reset_after_fork():
    global _prefix
    _prefix = _new_prefix()


os.register_at_fork(after_in_child=_reset_after_fork)


def new_token():
    """A process-unique token; cheap (no hashing), unlike ``tokenize``."""
    return f"{_prefix}{next(_counter):x}"


def tokenize(*args, **kwargs):
    """Deterministic token of the arguments (dask's tokenize, which knows NumPy)."""
    from dask.base import tokenize as dask_tokenize

    return dask_tokenize(*args, **kwargs)


def funcname(func):
    """A short readable name for a callable, used as the prefix of its keys."""
    while isinstance(func, functools.partial):
        func = func.func
    if isinstance(func, DelayedFunction):
        return func.__name__
    name = getattr(func, "__name__", None)
    if name is None:
        name = type(func).__name__
    if name == "<lambda>":
        return "lambda"
    return name


# ---------------------------------------------------------------- templates

# one-pass iterators and dict views: read into a list (a file, also an iterator, is not)
_READ_AS_LIST = frozenset([
    types.GeneratorType, map, filter, zip, enumerate, reversed, type(iter([])), type(iter(())),
    type(iter(range(0))), type({}.keys()), type({}.values()), type({}.items()),
    type(iter({}.keys())), type(iter({}.values())), type(iter({}.items())),
])


def _to_template(value, deps):
    """Turn an argument into a template: Delayeds become Refs (recorded in ``deps``).

    A generator, ``map``, ``zip`` and other one-pass iterators (and dict views) are read
    into a list: they could not be sent to a worker process or read twice, and the
    Delayeds they hold must be found.
    """
    cls = type(value)
    if cls in _ATOMS:  # (numbers and arrays: most arguments, and keywords such as axis=1)
        return value
    if cls in _READ_AS_LIST:
        value = list(value)
    if isinstance(value, Delayed):
        key = value._key
        known = deps.get(key)
        if known is not None and known is not value:
            _check_same(key, known._task, value._task)
        deps[key] = value
        return Ref(key)
    cls = type(value)
    if cls in _CONTAINERS or (isinstance(value, tuple) and hasattr(value, "_fields")):
        if cls is dict:
            items = tuple((k, _to_template(v, deps)) for k, v in value.items())
            if any(type(v) in (Ref, Pack) for _, v in items):
                return Pack(dict, items)
            return value
        items = tuple(_to_template(v, deps) for v in value)
        if any(type(v) in (Ref, Pack) for v in items):
            return Pack(cls, items)
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = tuple(f.name for f in dataclasses.fields(value) if f.init)
        items = tuple(_to_template(getattr(value, name), deps) for name in names)
        if any(type(v) in (Ref, Pack) for v in items):
            return Pack(DataclassOf(cls, names), items)
    return value


class DataclassOf:
    """Rebuilds a dataclass instance from its fields' values (the kind of a Pack).

    Like dask, taskgrad looks inside dataclass arguments for Delayeds; the
    instance a task receives is a new one, made from the computed field values.
    """

    def __init__(self, cls, names):
        self.cls = cls
        self.names = names
        self.__name__ = cls.__name__

    def __call__(self, *values):
        return self.cls(**dict(zip(self.names, values)))

    def __reduce__(self):
        return (DataclassOf, (self.cls, self.names))


def unpack_delayed(obj):
    """Return (template, {key: Delayed}) for any object possibly holding Delayeds."""
    deps = {}
    return _to_template(obj, deps), deps


def collect_graph(delayeds):
    """The graph (key -> task) that the given Delayed objects need, culled.

    Walks ``_dependencies`` with an explicit stack.  Equal keys mean equal
    values (pure calls, a persisted value and its computation), except for two
    leaves given the same ``name`` for different values: that is an error.
    """
    graph = {}
    stack = list(delayeds)
    while stack:
        d = stack.pop()
        key = d._key
        known = graph.get(key)
        if known is None:
            graph[key] = d._task
            stack.extend(d._dependencies)
        elif known is not d._task:
            _check_same(key, known, d._task)
    return graph


def collect_in_order(delayeds):
    """``(graph, order)``: what ``collect_graph`` gives, and its keys in the order
    ``graph.postorder`` gives them, found in one walk.

    A compute needs both; walking the Delayeds once (an explicit stack of
    iterators) costs less than collecting, then ordering the dict.  Delayeds are
    immutable, so there is no cycle nor missing key to look for.
    """
    graph = {}
    order = []
    early = []
    for root in delayeds:
        key = root._key
        known = graph.get(key)
        if known is not None:
            if known is not root._task:
                _check_same(key, known, root._task)
            continue
        graph[key] = root._task
        stack = [(root, iter(root._dependencies))]
        while stack:
            node, deps = stack[-1]
            for d in deps:
                key = d._key
                known = graph.get(key)
                if known is None:
                    graph[key] = d._task
                    stack.append((d, iter(d._dependencies)))
                    break
                if known is not d._task:
                    _check_same(key, known, d._task)
            else:
                stack.pop()
                key = node._key
                order.append(key)
                if is_early(node._task):
                    early.append(key)
    return graph, hoist_early(order, graph, early) if early else order


def _check_same(key, a, b):
    """Raise if two leaves given the same name hold different values, or if a placeholder's
    name is given to another task (which would be run instead of being fed)."""
    if type(a) is Literal and type(b) is Literal and a.args[0] is not b.args[0]:
        raise ValueError(f"two different values share the key {key!r}; "
                         "give leaves distinct names")
    from .placeholder import Placeholder, PlaceholderError, check_same_declaration

    if type(a) is Placeholder and type(b) is Placeholder:
        check_same_declaration(a, b)
    elif type(a) is Placeholder or type(b) is Placeholder:
        raise PlaceholderError(f"the name {key!r} is given to a placeholder and to another "
                               "task; give them distinct names")


# ---------------------------------------------------------------- Delayed

_ATOMS = frozenset([int, float, complex, str, bytes, bool, type(None), np.ndarray])


def _make_delayed(func, args, kwargs, *, key=None, prefix=None, pure=False, nout=None):
    deps = {}
    # the common arguments (Delayeds, numbers, arrays) inline: this runs once per node
    targs = []
    refs = []  # the task's fill plan, while dependencies are top-level arguments only
    for a in args:
        cls = type(a)
        if cls in _ATOMS:
            targs.append(a)
        elif cls is Delayed:
            key_a = a._key
            known = deps.get(key_a)
            if known is not None and known is not a:
                _check_same(key_a, known._task, a._task)
            deps[key_a] = a
            if refs is not None:
                refs.append((len(targs), key_a))
            targs.append(Ref(key_a))
        else:
            targs.append(_to_template(a, deps))
            if type(targs[-1]) is not cls:  # a container that holds Delayeds
                refs = None
    targs = tuple(targs)
    tkwargs = None
    if kwargs:
        before = len(deps)
        tkwargs = {k: _to_template(v, deps) for k, v in kwargs.items()}
        if len(deps) != before or any(type(v) in (Ref, Pack) for v in tkwargs.values()):
            refs = None
    if key is None:
        if prefix is None:
            prefix = funcname(func)
        token = tokenize(func, args, kwargs) if pure else new_token()
        key = f"{prefix}-{token}"
    if refs is not None:
        refs = tuple(refs) if deps else ()
    # positional: this runs once per node, and keywords cost here
    task = Task(key, func, targs, tkwargs, tuple(deps), pure, "forward",
                False if refs is None else refs)
    return Delayed(key, task, tuple(deps.values()), nout)


class Delayed:
    """A lazy value: the result of a task that has not run yet."""

    # ``_origin``: set on the gradients ``grad`` makes from a recipe (see
    # ``autodiff/recipe_runs.py``), unset on any other Delayed
    __slots__ = ("_key", "_task", "_dependencies", "_length", "_origin", "__weakref__")
    # NumPy defers to our reflected operators (``array + d`` is ``d.__radd__``, so the value's
    # own operators apply when it runs); a ufunc call on a Delayed (``np.exp(d)``) is refused:
    # taskgrad.numpy has the lazy ones
    __array_ufunc__ = None

    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            f"Delayed object {self._key!r} has no value yet, so NumPy cannot make an array of "
            "it: call .compute() first, or use taskgrad.numpy (tnp) to build lazy arrays")

    def __init__(self, key, task, dependencies=(), length=None):
        # through the slots' own setters (defined below the class): __setattr__ refuses, to
        # keep a Delayed immutable, and object.__setattr__ by name costs more (one per node)
        _set_key(self, key)
        _set_task(self, task)
        _set_dependencies(self, dependencies)
        _set_length(self, length)

    # -- identity
    @property
    def key(self):
        return self._key

    @property
    def dependencies(self):
        """The Delayed objects this one directly depends on."""
        return self._dependencies

    @property
    def task(self):
        return self._task

    @property
    def graph(self):
        """Read-only mapping from key to task: the culled graph this value needs."""
        return types.MappingProxyType(collect_graph([self]))

    def __hash__(self):
        return hash(self._key)

    def __repr__(self):
        return f"Delayed({self._key!r})"

    def __reduce__(self):
        # the graph as a flat dict: nested Delayeds would pickle one level per task, and a
        # long chain would exceed the recursion limit
        return (delayed_of, (collect_graph([self]), self._key, self._length))

    # -- running
    def compute(self, **kwargs):
        from .base import compute

        return compute(self, **kwargs)[0]

    def persist(self, **kwargs):
        from .base import persist

        return persist(self, **kwargs)[0]

    def visualize(self, filename=None, format=None, **kwargs):
        from .visualize import visualize

        return visualize(self, filename=filename, format=format, **kwargs)

    def _repr_mimebundle_(self, include=None, exclude=None):
        from .visualize import repr_mimebundle

        return repr_mimebundle(self, include=include, exclude=exclude)

    def _repr_svg_(self):
        """The graph as SVG (None when too large to show inline), for SVG-only frontends."""
        return self._repr_mimebundle_(include=["image/svg+xml"]).get("image/svg+xml")

    # -- things a lazy value cannot answer
    def __bool__(self):
        raise TypeError(
            f"truth of a Delayed object ({self._key!r}) is not known until it is computed; "
            "call .compute() first, or use tg.delayed logic inside a task"
        )

    def _no_value(self, what):
        raise TypeError(f"{what} of Delayed object {self._key!r}: it has no value until it is "
                        "computed; call .compute() first, or do this inside a @tg.delayed "
                        "function")

    def __float__(self):
        self._no_value("float()")

    def __int__(self):
        self._no_value("int()")

    def __complex__(self):
        self._no_value("complex()")

    def __index__(self):
        self._no_value("use as an index")

    def __iter__(self):
        if self._length is None:
            raise TypeError(
                f"Delayed object {self._key!r} of unspecified length is not iterable; "
                "pass nout=... to tg.delayed to make it unpackable"
            )
        return (self[i] for i in range(self._length))

    def __len__(self):
        if self._length is None:
            raise TypeError(
                f"Delayed object {self._key!r} has no known length; pass nout=... to tg.delayed"
            )
        return self._length

    def __setattr__(self, name, value):
        raise TypeError("Delayed objects are immutable")

    def __setitem__(self, index, value):
        raise TypeError("Delayed objects are immutable")

    def __delattr__(self, name):
        raise TypeError("Delayed objects are immutable")

    # -- attribute access and calls become tasks
    def __getattr__(self, attr):
        if attr.startswith("_"):
            raise AttributeError(f"Delayed has no attribute {attr!r}")
        return DelayedAttr(self, attr)

    def __dir__(self):
        return sorted(set(object.__dir__(self)))

    def __call__(self, *args, **kwargs):
        return _make_delayed(apply, (self, *args), kwargs, prefix="call")

    def __getitem__(self, index):
        return _make_delayed(operator.getitem, (self, index), None, pure=False)

    # -- dask collection protocol: dask.compute(d) and dask.distributed work
    @property
    def dask(self):
        """The graph in dask's format (what ``dask.delayed`` objects expose as ``.dask``)."""
        return self.__dask_graph__()

    def __dask_graph__(self):
        from .schedulers.dask_graph import to_dask_graph

        return to_dask_graph(collect_graph([self]))

    def __dask_keys__(self):
        return [self._key]

    def __dask_layers__(self):
        return (self._key,)

    def __dask_tokenize__(self):
        return self._key

    def __dask_postcompute__(self):
        return _first, ()

    def __dask_postpersist__(self):
        return _rebuild_persisted, (self._key, self._length)

    @staticmethod
    def __dask_optimize__(dsk, keys, **kwargs):
        return dsk

    @property
    def __dask_scheduler__(self):
        """dask's threaded scheduler itself (dask imported on first use): ``dask.compute``
        runs collections together only if they name the same default scheduler."""
        from dask.threaded import get

        return get


_set_key = Delayed._key.__set__
_set_task = Delayed._task.__set__
_set_dependencies = Delayed._dependencies.__set__
_set_length = Delayed._length.__set__
set_origin = Delayed._origin.__set__


def apply(func, *args, **kwargs):
    """Call ``func`` (the value of a Delayed) with the given arguments."""
    return func(*args, **kwargs)


def call_method(obj, name, *args, **kwargs):
    """``obj.name(*args, **kwargs)`` as one task."""
    return getattr(obj, name)(*args, **kwargs)


def _first(results):
    return results[0]


def _rebuild_persisted(dsk, key, length, rename=None):
    from .schedulers.dask_graph import run_task

    key = (rename or {}).get(key, key)
    value = dsk[key]
    if type(value) is tuple and value and value[0] is run_task:
        return _rebuild_uncomputed(dsk, key, length, run_task)
    if type(value).__name__ == "Future" and hasattr(value, "result"):
        # dask.persist on a distributed cluster hands back a Future; our leaves
        # hold values, so fetch it (the local schedulers cannot resolve futures)
        value = value.result()
    return Delayed(key, Literal(key, value), (), length)


def _rebuild_uncomputed(dsk, key, length, run_task):
    """``key`` of a graph that dask rebuilt without computing it (``dask.optimize``): our
    tasks still to run, and the values of what was computed."""
    graph = {k: v[1] if type(v) is tuple and v and v[0] is run_task else Literal(k, v)
             for k, v in dsk.items()}
    return delayed_of(graph, key, length)


def delayeds_in(graph, order):
    """key -> Delayed for the keys of ``graph`` (key -> task) in ``order``, which lists
    each after its dependencies."""
    delayeds = {}
    for k in order:
        task = graph[k]
        delayeds[k] = Delayed(k, task, tuple(delayeds[d] for d in task.dependencies))
    return delayeds


def delayed_of(graph, key, length=None):
    """The Delayed of ``key`` in ``graph`` (key -> task)."""
    d = delayeds_in(graph, postorder(graph, [key]))[key]
    return Delayed(key, d._task, d._dependencies, length)


class DelayedAttr(Delayed):
    """``d.attr``: a Delayed attribute that, when called, becomes one method-call task."""

    __slots__ = ("_obj", "_attr")

    def __init__(self, obj, attr):
        key = f"{attr}-{new_token()}"
        task = Task(key, getattr, (Ref(obj._key), attr), None, dependencies=(obj._key,), pure=True)
        super().__init__(key, task, (obj,))
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_attr", attr)

    def __call__(self, *args, **kwargs):
        return _make_delayed(call_method, (self._obj, self._attr, *args), kwargs, prefix=self._attr)

    def __reduce__(self):
        return (DelayedAttr, (self._obj, self._attr))


# the operators' key prefixes (what ``funcname`` gives: ``add``, ``and_``) are read once
# here, not at every call
def _binary(op, reflected=False):
    name = op.__name__
    if reflected:
        def method(self, other):
            return _make_delayed(op, (other, self), None, prefix=name)
    else:
        def method(self, other):
            return _make_delayed(op, (self, other), None, prefix=name)
    return method


def _unary(op):
    name = op.__name__

    def method(self):
        return _make_delayed(op, (self,), None, prefix=name)
    return method


for _name, _op in [
    ("add", operator.add), ("sub", operator.sub), ("mul", operator.mul),
    ("truediv", operator.truediv), ("floordiv", operator.floordiv), ("mod", operator.mod),
    ("pow", operator.pow), ("matmul", operator.matmul), ("and", operator.and_),
    ("or", operator.or_), ("xor", operator.xor), ("lshift", operator.lshift),
    ("rshift", operator.rshift),
]:
    setattr(Delayed, f"__{_name}__", _binary(_op))
    setattr(Delayed, f"__r{_name}__", _binary(_op, reflected=True))
for _name, _op in [
    ("lt", operator.lt), ("le", operator.le), ("eq", operator.eq),
    ("ne", operator.ne), ("gt", operator.gt), ("ge", operator.ge),
]:
    setattr(Delayed, f"__{_name}__", _binary(_op))
for _name, _op in [("neg", operator.neg), ("pos", operator.pos), ("abs", operator.abs),
                   ("invert", operator.invert)]:
    setattr(Delayed, f"__{_name}__", _unary(_op))


# ---------------------------------------------------------------- the decorator

class DelayedFunction:
    """A function whose calls build tasks instead of running."""

    def __init__(self, func, *, pure=False, name=None, nout=None):
        self.__wrapped__ = func
        self.pure = pure
        self.nout = nout
        self.prefix = name or funcname(func)
        functools.update_wrapper(self, func, updated=())
        if name is not None:
            self.__name__ = name

    def __call__(self, *args, **kwargs):
        return _make_delayed(self.__wrapped__, args, kwargs, prefix=self.prefix,
                             pure=self.pure, nout=self.nout)

    def __get__(self, obj, objtype=None):
        """``@tg.delayed`` on a method: ``obj.method(...)`` builds a task of the function with
        ``obj`` as its first argument, so its rules (one per argument, ``self`` first) apply
        and Delayeds in ``obj``'s fields are found, as for any argument."""
        if obj is None or isinstance(self.__wrapped__, staticmethod):
            return self
        return functools.partial(self, obj)

    def __repr__(self):
        return f"<delayed {self.prefix}>"

    def __reduce__(self):
        module = sys.modules.get(self.__module__)
        if self.__module__ != "__main__" and getattr(module, self.__qualname__, None) is self:
            return self.__qualname__  # found by name, like a plain function
        return (DelayedFunction, (self.__wrapped__,),
                {"pure": self.pure, "nout": self.nout, "prefix": self.prefix})

    def __setstate__(self, state):
        self.__dict__.update(state)
        functools.update_wrapper(self, self.__wrapped__, updated=())


def _check_nout(nout):
    if nout is not None and (not isinstance(nout, int) or isinstance(nout, bool) or nout < 0):
        raise TypeError(f"nout must be a non-negative int or None, got {nout!r}")


_NOTHING = object()  # ``tg.delayed(pure=True)`` (a decorator) apart from ``tg.delayed(None)``


def delayed(obj=_NOTHING, *, pure=False, name=None, nout=None, vjp=None):
    """Make a function lazy (``@tg.delayed``) or wrap a value as a leaf node.

    ``tg.delayed(fn)`` / ``@tg.delayed(pure=True, name=..., nout=..., vjp=...)``
    returns a function whose calls build tasks.  ``tg.delayed(value, name=...)``
    returns a new leaf holding ``value`` (a container holding Delayeds becomes
    a task that builds the container).
    """
    _check_nout(nout)
    if type(obj) in _ATOMS and vjp is None:  # an array or a number: a leaf (the common case)
        key = name if name is not None else f"{type(obj).__name__}-{new_token()}"
        return Delayed(key, Literal(key, obj), (), nout)
    if obj is _NOTHING:
        return functools.partial(delayed, pure=pure, name=name, nout=nout, vjp=vjp)
    if isinstance(obj, Delayed):
        return obj
    if callable(obj):
        func = obj.__wrapped__ if isinstance(obj, DelayedFunction) else obj
        if inspect.iscoroutinefunction(func):
            raise TypeError(f"tg.delayed({funcname(func)}): an async function's call returns "
                            "a coroutine, which no scheduler awaits; make it a plain function")
        if vjp is not None:
            from .autodiff.rules import defvjp

            defvjp(func, *(tuple(vjp) if isinstance(vjp, (tuple, list)) else (vjp,)))
        return DelayedFunction(func, pure=pure, name=name, nout=nout)
    if vjp is not None:
        raise TypeError("vjp= applies to functions, not to wrapped values")
    template, deps = unpack_delayed(obj)
    if deps:
        key = name or f"{type(obj).__name__}-{new_token()}"
        task = Task(key, _identity, (template,), None, dependencies=tuple(deps), pure=True)
        return Delayed(key, task, tuple(deps.values()), nout)
    key = name if name is not None else f"{type(obj).__name__}-{new_token()}"
    return Delayed(key, Literal(key, obj), (), nout)


def _identity(x):
    return x
