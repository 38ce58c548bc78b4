"""Op-level tracing of plain NumPy code, so ``@tg.delayed`` bodies are differentiable.

Why: a function written with ``import numpy as np`` has no VJP rule of its
own.  Running it on :class:`Box` values records every NumPy call it makes (the
Box answers NumPy's ``__array_ufunc__`` / ``__array_function__`` protocols) on
a tape; walking the tape backwards with the registered rules gives its VJP.

Boxes nest: a Box of an inner trace may hold a Box of an outer one.  An
operation unwraps only the innermost level and calls NumPy again, which hands
the outer Boxes to their own trace.  The reverse pass of an inner trace is
itself NumPy code, recorded by the outer trace: that is what makes gradients
of gradients work.  A tape is a flat list of nodes pointing at their parents
by index (no linked structure), so it pickles and walks without recursion.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import operator
import types

import numpy as np

from .primitive_pickle import (new_token, reduce_primitive, restore_primitive,
                               sent_by_cloudpickle_as_functions)
from .rules import (_CACHES, _COMPOSITES, _RULES, _SHAPE_ONLY, NO_SHAPES, MissingRuleError,
                    is_nondifferentiable, remember, shapes_for, ufunc_call_for_rules)
from .shape_dtype import shape_dtype

__all__ = ["Box", "primitive", "trace_call", "backprop", "Tape", "add_cotangents",
           "zeros_like_value"]

_levels = itertools.count(1)
_SEQUENCES = (tuple, list)
_SEQUENCE_TYPES = frozenset(_SEQUENCES)  # (to test many values' types at once, in C)
_PY_NUMBERS = frozenset([int, float, bool])
_ndarray = np.ndarray
_new = object.__new__


class Trace:
    """One tracing run: its nesting level and the nodes it recorded, in order.

    A node is ``(func, args, kwargs, ans, parents)`` with ``parents`` a tuple of
    ``(argument position, index inside a sequence argument or None, node index)``;
    an input node has ``func`` None.
    """

    __slots__ = ("level", "nodes")

    def __init__(self):
        self.level = next(_levels)
        self.nodes = []

    def new_input(self, value):
        self.nodes.append((None, None, None, value, ()))
        return Box(value, self, len(self.nodes) - 1)


def _is_float(value):
    try:
        return value.dtype.kind in "fc"
    except AttributeError:
        return isinstance(value, (float, complex))


def _find_boxes(args):
    """Boxes among the arguments, as ``(position, sub-index or None, box)``."""
    found = []
    for i, a in enumerate(args):
        cls = type(a)
        if cls is Box:
            found.append((i, None, a))
        elif cls is list or cls is tuple:
            for j, b in enumerate(a):
                if type(b) is Box:
                    found.append((i, j, b))
    return found


def _is_integer(value):
    try:
        return value.dtype.kind in "iu"
    except AttributeError:
        return type(value) is int


def _still_traced(func, ans, args, parents):
    """Whether a result that is not a float array is still differentiable: an item of a
    traced container (``params["W"]``, a dict of arrays, or an integer item), or arithmetic
    on a traced integer array (``x ** 2`` of integer ``x``), as opposed to a float turned
    integer (``astype``, an index), whose derivative is zero.  Bools never are."""
    if func is operator.getitem:
        return _is_integer(ans) or isinstance(ans, (*_SEQUENCES, dict))
    if not _is_integer(ans) or func not in _RULES:
        return False
    return any(_is_integer(args[i] if j is None else args[i][j]) for i, j, _ in parents)


# func -> what apply_primitive reads of the registries for it (see ``_op``); rules.py clears
# it on every registration
_OPS = {}
_CACHES.append(_OPS)


def _op(func):
    """What ``apply_primitive`` needs of the registries for ``func`` (see ``_read_op``): one
    lookup per traced call instead of one per registry."""
    op = _OPS.get(func)
    if op is None:
        op = _read_op(func)
        # only registered functions are kept: the registry keeps them alive anyway, and
        # keeping others would keep every function ever traced
        if op[0] is not None or op[2] is not None:
            op = remember(_OPS, func, lambda: _read_op(func))
    return op


def _read_op(func):
    """``(composite, writes in place?, rules, how many (None unless a tuple), whether the
    rules are a tuple without None, the shape-only entry, what it says for any argument
    (None if it depends on which are differentiated), whether a ufunc)``."""
    rules = _RULES.get(func)
    shape_entry = _SHAPE_ONLY.get(func, NO_SHAPES)
    return (_COMPOSITES.get(func), func in _WRITES_IN_PLACE, rules,
            len(rules) if type(rules) is tuple else None,
            type(rules) is tuple and all(r is not None for r in rules),
            shape_entry, shape_entry[:2] if shape_entry[2] is None else None,
            type(func) is np.ufunc)


def apply_primitive(func, args, kwargs, boxes=None):
    """Run ``func`` on the innermost Boxes' values and record it on their trace.

    This runs once per NumPy call in traced code, so it is kept lean.  ``boxes`` (found
    if not given) come in the order of their argument positions.
    """
    op = _OPS.get(func)
    if op is None:
        op = _op(func)
    if op[0] is not None:  # a composite: traced through the operations it is written with
        return op[0](*args, **kwargs)
    if op[1]:
        raise MissingRuleError(f"{_opname(func)} (it writes into an array in place)",
                               _BUILD_INSTEAD)
    if kwargs:
        _check_keywords(func, kwargs)
    if boxes is None:
        found = _unwrap_one_trace(args)
        if found is not None:
            return _record(func, op, found[0], found[1], kwargs, found[2])
        boxes = _find_boxes(args)
    trace = boxes[0][2]._trace
    if len(boxes) > 1:
        for _, _, b in boxes:
            if b._trace.level > trace.level:
                trace = b._trace
    args = list(args)
    parents = []
    for i, j, b in boxes:
        if b._trace is not trace:
            continue
        if j is None:
            args[i] = b._value
        else:  # a copy of the sequence, of its type (a tuple index is not a list index)
            items = list(args[i])
            items[j] = b._value
            args[i] = items if type(args[i]) is list else tuple(items)
        parents.append((i, j, b._index))
    return _record(func, op, trace, args, kwargs, parents)


def _unwrap_one_trace(args):
    """``(trace, values, parents)`` of a call whose Boxes all sit at the top level of
    ``args`` and belong to one trace, found in one pass (measured: ``array * box`` 5.3 ->
    4.6 us, ``np.sum(box, axis=1)`` 7.2 -> 6.7 us), else None (no Box there, a sequence,
    or several traces: the general path)."""
    values = list(args)
    parents = []
    trace = None
    for i, a in enumerate(values):
        cls = type(a)
        if cls is Box:
            if trace is None:
                trace = a._trace
            elif a._trace is not trace:
                return None
            values[i] = a._value
            parents.append((i, None, a._index))
        elif cls is list or cls is tuple:
            return None
    return None if trace is None else (trace, values, parents)


def _apply_unwrapped(func, trace, args, parents, boxed):
    """``apply_primitive(func, boxed, {})`` for an operator whose Boxes all belong to
    ``trace``, already unwrapped into ``args`` (measured: ``box + box`` 4.7 -> 4.1 us)."""
    op = _OPS.get(func)
    if op is None:
        op = _op(func)
    if op[0] is not None or op[1]:  # a composite or an in-place write: see apply_primitive
        return apply_primitive(func, boxed, {})
    return _record(func, op, trace, args, {}, parents)


def _record(func, op, trace, args, kwargs, parents):
    """Call ``func`` on the unwrapped ``args`` and record it on ``trace`` if a gradient
    flows; ``parents`` are ``(position, index in a sequence or None, node index)`` of the
    arguments traced there, by position."""
    _, _, rules, n_rules, every_rule_given, shape_entry, shapes, is_ufunc = op
    ans = func(*args, **kwargs)
    if not (ans.dtype.kind in "fc" if type(ans) is _ndarray else _is_float(ans)) \
            and not _still_traced(func, ans, args, parents):
        if isinstance(ans, (tuple, list)) and any(map(_is_float, ans)) \
                and not is_nondifferentiable(func):  # NumPy's results are namedtuples
            # several arrays out: no rule form for that, so never drop the trace silently
            raise MissingRuleError(f"{_opname(func)} (it returns several arrays)")
        return ans
    if n_rules is not None:
        if parents[-1][0] >= n_rules:  # None in the rules says "no gradient"; no entry, no rule
            pos = next(p[0] for p in parents if p[0] >= n_rules)
            raise MissingRuleError(f"{_opname(func)} with respect to its argument {pos}")
        if not every_rule_given:
            parents = [p for p in parents if rules[p[0]] is not None]
    elif rules is None:
        if is_nondifferentiable(func):
            return ans
        raise MissingRuleError(_opname(func))
    else:
        parents = [p for p in parents if rules(p[0]) is not None]
    if not parents:
        return ans
    if is_ufunc and (kwargs or not _SEQUENCE_TYPES.isdisjoint(map(type, args))):
        args, kwargs = ufunc_call_for_rules(func, args, kwargs)
    # keep on the tape only what the rules read: the shape of what they read for no more
    shape_args, shape_ans = shapes or shapes_for(shape_entry, [p[0] for p in parents])
    for i in shape_args:
        if i < len(args):
            args[i] = shape_dtype(args[i])
    nodes = trace.nodes
    nodes.append((func, args, kwargs, shape_dtype(ans) if shape_ans else ans, parents))
    box = _new(Box)  # (its slots set here: calling Box, a Python __init__, costs ~100 ns more)
    box._value = ans
    box._trace = trace
    box._index = len(nodes) - 1
    return box


def _check_keywords(func, kwargs):
    """Traced values go by position (the rules take them so); ``out=`` writes in place."""
    for name, v in kwargs.items():
        if type(v) is Box or (type(v) in _SEQUENCES and Box in map(type, v)):
            raise MissingRuleError(f"{_opname(func)} with a traced value passed by keyword "
                                   f"({name}=)", "pass it by position")
    if kwargs.get("out") is not None:
        raise MissingRuleError(f"{_opname(func)} with out= (it writes into an array in place)",
                               _BUILD_INSTEAD)


def _opname(func):
    if isinstance(func, np.ufunc):
        return f"numpy.{func.__name__}"
    module = getattr(func, "__module__", None) or ""
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
    if module.startswith("numpy"):
        return f"numpy.{name}"
    return f"{module}.{name}" if module else name


@sent_by_cloudpickle_as_functions
class Primitive:
    """A helper function made traceable: called on Boxes, it is recorded as one op.

    A class, not a closure, for the way it pickles: as its function would, and with its
    rules when by value, so that a process that gets a copy (cloudpickle's of a function
    of the main script) can differentiate through it too (see ``primitive_pickle``).
    """

    __slots__ = ("__dict__", "__weakref__", "_token", "_copy")

    def __init__(self, func):
        functools.update_wrapper(self, func)
        self._token, self._copy = new_token(self), False

    def __call__(self, *args, **kwargs):
        boxes = _find_boxes(args)
        if boxes:
            return apply_primitive(self, args, kwargs, boxes)
        return self.__wrapped__(*args, **kwargs)

    def __get__(self, obj, owner=None):
        """In a class body, a method, as the function it wraps would be."""
        return self if obj is None else types.MethodType(self, obj)

    def __repr__(self):
        name = getattr(self, "__qualname__", None) or repr(self.__wrapped__)  # (a partial: none)
        return f"<taskgrad primitive {name}>"

    def __reduce__(self):
        return reduce_primitive(self)

    def __setstate__(self, state):
        restore_primitive(self, state)


def primitive(func):
    """Make a helper function traceable: called on Boxes, it is recorded as one op, so that
    the rules registered on it (``tg.defvjp``) apply inside traced code."""
    return Primitive(func)


@primitive
def astype(x, dtype):
    """``x`` cast to ``dtype`` (a traceable ``ndarray.astype``)."""
    return np.asarray(x).astype(dtype, copy=False)


def _method(func):
    def method(self, *args, **kwargs):
        return func(self, *args, **kwargs)
    method.__name__ = func.__name__
    return method


def _operator(ufunc, op):
    """``box <op> other`` records ``ufunc`` directly, skipping NumPy's dispatch; on two
    Python numbers it records ``op`` (the same rules), which keeps Python's arithmetic (big
    integers, ``True + True == 2``): the traced value is then the value the function has
    without a gradient."""
    def method(self, other):
        value = self._value
        func = op if type(value) in _PY_NUMBERS and type(_base(other)) in _PY_NUMBERS \
            else ufunc
        if type(other) is not Box:
            return _apply_unwrapped(func, self._trace, [value, other],
                                    [(0, None, self._index)], (self, other))
        if other._trace is self._trace:
            return _apply_unwrapped(func, self._trace, [value, other._value],
                                    [(0, None, self._index), (1, None, other._index)],
                                    (self, other))
        return apply_primitive(func, (self, other), {}, [(0, None, self), (1, None, other)])
    return method


def _in_place(ufunc, op):
    """``box <op>= other``: the Box itself takes the new value, as a NumPy array would, so
    another name for it sees the change (the old value stays on the tape, unchanged)."""
    operation = _operator(ufunc, op)

    def method(self, other):
        new = operation(self, other)
        if type(new) is Box and new._trace is self._trace:
            self._value, self._index = new._value, new._index
            return self
        return new
    return method


def _reflected(ufunc, op):
    def method(self, other):  # (other is no Box: Python would have called its own operator)
        value = self._value
        func = op if type(value) in _PY_NUMBERS and type(other) in _PY_NUMBERS else ufunc
        return _apply_unwrapped(func, self._trace, [other, value], [(1, None, self._index)],
                                (other, self))
    return method


def _unary_operator(ufunc, op):
    def method(self):
        value = self._value
        func = op if type(value) in _PY_NUMBERS else ufunc
        return _apply_unwrapped(func, self._trace, [value], [(0, None, self._index)], (self,))
    return method


def _sum(self, axis=None, dtype=None, out=None, keepdims=False, **kwargs):
    return np.sum(self if dtype is None else astype(self, dtype), axis=axis, out=out,
                  keepdims=keepdims, **kwargs)


# NumPy functions that store a value into an existing array: not traceable
_WRITES_IN_PLACE = frozenset([np.copyto, np.put, np.putmask, np.place, np.put_along_axis])

_BUILD_INSTEAD = ("build the array from traced values instead, with np.where, np.concatenate, "
                  "np.stack or np.pad")


class Box:
    """A traced value: behaves like its array for NumPy code, records every op."""

    __slots__ = ("_value", "_trace", "_index")
    __array_priority__ = 100.0

    def __init__(self, value, trace, index):
        self._value = value
        self._trace = trace
        self._index = index

    # -- NumPy protocols
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method == "__call__" and "out" not in kwargs:  # the common case first
            return apply_primitive(ufunc, inputs, kwargs)
        as_function = _UFUNC_METHODS.get((ufunc, method))
        if as_function is not None and "out" not in kwargs:
            return as_function(*inputs, **kwargs)
        if method != "__call__" or "out" in kwargs:
            op = f"numpy.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
            raise MissingRuleError(op + (" with out=" if "out" in kwargs else ""))
        return apply_primitive(ufunc, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return apply_primitive(func, args, kwargs)

    def __array__(self, dtype=None, copy=None):
        raise MissingRuleError(
            "numpy.asarray (conversion of a traced value to a plain array, as np.array, "
            "np.asarray and storing into a plain array b[...] = x do)",
            f"{_BUILD_INSTEAD}, or give the function a rule with @tg.delayed(vjp=...)")

    # -- array attributes
    shape = property(lambda self: np.shape(_base(self)))
    ndim = property(lambda self: np.ndim(_base(self)))
    size = property(lambda self: np.size(_base(self)))
    dtype = property(lambda self: np.result_type(_base(self)))
    T = property(lambda self: np.transpose(self))
    real = property(lambda self: np.real(self))

    def __len__(self):
        return len(_base(self))

    def __iter__(self):
        base = _base(self)
        if isinstance(base, dict):  # a traced dict iterates over its keys, as a dict does
            return iter(list(base))
        return (self[i] for i in range(len(self)))

    def __contains__(self, item):
        return item in _base(self)

    def __bool__(self):
        return bool(_base(self))

    def __float__(self):
        raise MissingRuleError("float() (conversion of a traced value to a Python float)")

    def __int__(self):
        raise MissingRuleError("int() (conversion of a traced value to a Python int)")

    def __repr__(self):
        return f"Box({_base(self)!r})"

    def __getitem__(self, index):
        return apply_primitive(operator.getitem, (self, index), {})

    def __setitem__(self, index, value):
        raise MissingRuleError("item assignment (x[...] = v, in place)", _BUILD_INSTEAD)

    def __getattr__(self, name):
        base = _base(self)
        fields = getattr(base, "_fields", ())
        if name in fields:  # a traced namedtuple: its field is an item
            return self[fields.index(name)]
        if isinstance(base, dict) and name in _DICT_READS:  # a traced dict's items are items
            return _DICT_READS[name](self, base)
        if not name.startswith("_") and hasattr(np.ndarray, name):
            raise MissingRuleError(f"ndarray.{name}")
        if dataclasses.is_dataclass(base) and not name.startswith("__"):
            raise MissingRuleError(
                f"getattr (field {name!r} of a {type(base).__name__} dataclass, whose values "
                "are not differentiable)", "differentiate with respect to a namedtuple or dict "
                "of arrays, or to the fields as Delayeds (a dataclass of Delayeds is a fine "
                "argument)")
        raise AttributeError(f"traced value has no attribute {name!r}")

    # -- methods
    def reshape(self, *shape, order="C"):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return np.reshape(self, shape, order=order)

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return np.transpose(self, axes or None)

    def astype(self, dtype, copy=True):
        return astype(self, dtype)

    def argmax(self, axis=None, **kwargs):
        return np.argmax(_base(self), axis, **kwargs)  # an index: no gradient flows

    def argmin(self, axis=None, **kwargs):
        return np.argmin(_base(self), axis, **kwargs)

    def argsort(self, axis=-1, **kwargs):
        return np.argsort(_base(self), axis, **kwargs)

    def nonzero(self):
        return np.nonzero(_base(self))

    def ravel(self, order="C"):
        return np.reshape(self, -1, order=order)

    flatten = ravel
    sum = _sum
    mean = _method(np.mean)
    var = _method(np.var)
    std = _method(np.std)
    cumsum = _method(np.cumsum)
    repeat = _method(np.repeat)
    take = _method(np.take)
    trace = _method(np.trace)
    diagonal = _method(np.diagonal)
    copy = _method(np.copy)
    max = _method(np.max)
    min = _method(np.min)
    prod = _method(np.prod)
    dot = _method(np.dot)
    squeeze = _method(np.squeeze)
    swapaxes = _method(np.swapaxes)
    clip = _method(np.clip)

    # -- operators: the NumPy ufuncs, so they share the ufuncs' rules
    __add__ = _operator(np.add, operator.add)
    __radd__ = _reflected(np.add, operator.add)
    __sub__ = _operator(np.subtract, operator.sub)
    __rsub__ = _reflected(np.subtract, operator.sub)
    __mul__ = _operator(np.multiply, operator.mul)
    __rmul__ = _reflected(np.multiply, operator.mul)
    __truediv__ = _operator(np.divide, operator.truediv)
    __rtruediv__ = _reflected(np.divide, operator.truediv)
    __pow__ = _operator(np.power, operator.pow)
    __rpow__ = _reflected(np.power, operator.pow)
    __matmul__ = _operator(np.matmul, operator.matmul)
    __rmatmul__ = _reflected(np.matmul, operator.matmul)
    __mod__ = _operator(np.mod, operator.mod)
    __rmod__ = _reflected(np.mod, operator.mod)
    __floordiv__ = _operator(np.floor_divide, operator.floordiv)
    __rfloordiv__ = _reflected(np.floor_divide, operator.floordiv)
    __iadd__ = _in_place(np.add, operator.add)
    __isub__ = _in_place(np.subtract, operator.sub)
    __imul__ = _in_place(np.multiply, operator.mul)
    __itruediv__ = _in_place(np.divide, operator.truediv)
    __ipow__ = _in_place(np.power, operator.pow)
    __neg__ = _unary_operator(np.negative, operator.neg)
    __pos__ = _unary_operator(np.positive, operator.pos)
    __abs__ = _unary_operator(np.abs, operator.abs)
    __lt__ = _method(np.less)
    __le__ = _method(np.less_equal)
    __gt__ = _method(np.greater)
    __ge__ = _method(np.greater_equal)
    __eq__ = _method(np.equal)
    __ne__ = _method(np.not_equal)
    __hash__ = None


_DICT_READS = {
    "keys": lambda box, base: base.keys,
    "values": lambda box, base: lambda: [box[k] for k in base],
    "items": lambda box, base: lambda: [(k, box[k]) for k in base],
    "get": lambda box, base: lambda key, default=None: box[key] if key in base else default,
}


def _reduce(func):
    """``ufunc.reduce`` as its NumPy function (whose default axis is 0, not None); the
    other options (``initial=``, ``where=``, ``out=``) mean the same to both."""
    def reduce(x, axis=0, dtype=None, out=None, keepdims=False, **options):
        if dtype is not None:
            x = astype(x, dtype)
        return func(x, axis=axis, out=out, keepdims=keepdims, **options)
    return reduce


def _accumulate(x, axis=0, dtype=None):
    return np.cumsum(x if dtype is None else astype(x, dtype), axis=axis)


_UFUNC_METHODS = {
    (np.add, "reduce"): _reduce(np.sum), (np.multiply, "reduce"): _reduce(np.prod),
    (np.maximum, "reduce"): _reduce(np.max), (np.minimum, "reduce"): _reduce(np.min),
    (np.add, "accumulate"): _accumulate,
}


def _base(value):
    """The plain value under any number of Box levels."""
    while type(value) is Box:
        value = value._value
    return value


# ---------------------------------------------------------------- tapes

class Tape:
    """A traced call: its value, its nodes, and where its inputs and outputs sit.

    ``outputs`` mirrors ``value``: a node index, None (a constant), or a tuple
    (a dict) of those for a tuple/list (dict) value.  ``inputs[j]`` lists the input nodes of
    the j-th differentiated argument (an argument may appear several times).
    """

    __slots__ = ("value", "nodes", "outputs", "inputs")

    def __init__(self, value, nodes, outputs, inputs):
        self.value = value
        self.nodes = nodes
        self.outputs = outputs
        self.inputs = inputs

    def __getstate__(self):
        return (self.value, self.nodes, self.outputs, self.inputs)

    def __setstate__(self, state):
        self.value, self.nodes, self.outputs, self.inputs = state


def _replace_at(obj, path, make):
    """A copy of the nested container ``obj`` with ``make(leaf)`` at ``path``.

    Recurses on the nesting of user containers only (a path is a few steps).
    """
    if not path:
        return make(obj)
    head, rest = path[0], path[1:]
    if isinstance(obj, dict):
        new = dict(obj)
        new[head] = _replace_at(obj[head], rest, make)
        return new
    if isinstance(obj, (list, tuple)):
        items = list(obj)
        items[head] = _replace_at(obj[head], rest, make)
        if type(obj) is list:
            return items
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    if dataclasses.is_dataclass(obj):  # steps count its init fields, as delayed's Pack does
        name = [f.name for f in dataclasses.fields(obj) if f.init][head]
        return dataclasses.replace(obj, **{name: _replace_at(getattr(obj, name), rest, make)})
    raise TypeError(f"cannot trace an argument inside a {type(obj).__name__}")


def trace_call(name, func, paths, args, kwargs):
    """Call ``func(*args, **kwargs)`` with Boxes at ``paths`` and return its Tape.

    ``paths[j]`` lists the places (in ``(args, kwargs)``) of the j-th
    differentiated argument.  ``name`` names the function in error messages.
    """
    trace = Trace()
    args = list(args)
    kwargs = dict(kwargs or {})
    call = (args, kwargs)
    inputs = []
    for places in paths:
        idx = []
        for path in places:
            if len(path) == 2:  # a top-level argument: no container to rebuild
                where = call[path[0]]
                box = where[path[1]] = trace.new_input(where[path[1]])
                idx.append(box._index)
                continue

            def make(leaf, idx=idx):
                box = trace.new_input(leaf)
                idx.append(box._index)
                return box
            call = _replace_at(call, path, make)
        inputs.append(tuple(idx))
    try:
        out = func(*call[0], **call[1])
    except MissingRuleError as exc:
        if getattr(exc, "taskgrad_named", False):
            raise
        hint = exc.args[1] if len(exc.args) > 1 else (
            "register one with tg.defvjp(...) or give the function a rule with "
            "@tg.delayed(vjp=...)")
        err = MissingRuleError(f"cannot differentiate {name}: it applies {exc.args[0]} to a "
                               f"traced value, and that operation has no VJP rule; {hint}")
        err.taskgrad_named = True
        raise err from None
    except ValueError as exc:
        if str(exc).startswith("setting an array element with a sequence"):
            # NumPy asks nothing of a traced value stored into a plain array (b[i] = x)
            exc.add_note(f"taskgrad: while tracing {name} for its gradient: storing a traced "
                         f"value into a plain NumPy array cannot be traced; {_BUILD_INSTEAD}")
        raise
    value, outputs = _unbox_output(out, trace)
    return Tape(value, trace.nodes, outputs, inputs)


def _unbox_output(out, trace):
    """The plain value of a traced call's result, and where its traced parts sit.

    Tuples (namedtuples too), lists and dicts are rebuilt with plain values, so
    that no Box leaks into the forward value; their traced parts sit in a
    tuple (or a dict) of node indices.
    """
    if type(out) is Box and out._trace is trace:
        return out._value, out._index
    if isinstance(out, (tuple, list)):
        pairs = [_unbox_output(o, trace) for o in out]
        values = [p[0] for p in pairs]
        value = type(out)(*values) if hasattr(out, "_fields") else type(out)(values)
        return value, tuple(p[1] for p in pairs)
    if isinstance(out, dict):
        value = out.copy()  # keeps the dict's own type (OrderedDict, defaultdict)
        where = {}
        for k, v in out.items():
            value[k], where[k] = _unbox_output(v, trace)
        return value, where
    return out, None


def add_cotangents(a, b):
    """``a + b`` for cotangents, where None is zero and tuples, lists and dicts add item by
    item (the cotangent of a tuple or list value is a tuple or list of its items')."""
    if a is None:
        return b
    if b is None:
        return a
    if type(a) is np.ndarray and type(b) is np.ndarray:
        return a + b
    if isinstance(a, _SEQUENCES) or isinstance(b, _SEQUENCES):  # namedtuples too
        # (an array with them: a ufunc read the sequence as one array; its rows are the items)
        kind = list if type(a) is list or type(b) is list else tuple
        return kind(add_cotangents(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return {k: add_cotangents(a.get(k), b.get(k)) for k in {**a, **b}}  # (in order)
    return a + b


def _seed(grads, outputs, g):
    if outputs is None or g is None:
        return
    if type(outputs) is tuple:
        for o, gi in zip(outputs, g):
            _seed(grads, o, gi)
        return
    if type(outputs) is dict:
        for k, o in outputs.items():  # a traced dict (higher order) is read item by item
            _seed(grads, o, g[k] if type(g) is Box else g.get(k))
        return
    grads[outputs] = add_cotangents(grads[outputs], g)


def backprop(tape, g):
    """The cotangents of a tape's differentiated arguments, given the output's ``g``.

    Walks the nodes once, last first; contributions to a node are summed in
    the tape's order, so the result does not depend on any scheduling.  Cotangents
    sit in a list by node index (cheaper than a dict), each dropped once used.
    """
    nodes = tape.nodes
    grads = [None] * len(nodes)
    if type(tape.outputs) is int:  # one array out (the common case, without the call)
        grads[tape.outputs] = g
    else:
        _seed(grads, tape.outputs, g)
    for i in range(len(nodes) - 1, -1, -1):
        gi = grads[i]
        if gi is None:
            continue
        func, args, kwargs, ans, parents = nodes[i]
        if func is None:  # an input: its cotangent is read below
            continue
        grads[i] = None
        rules = _RULES[func]
        for pos, sub, parent in parents:
            rule = rules[pos] if type(rules) is tuple else rules(pos)
            c = (rule(ans, *args, **kwargs) if kwargs else rule(ans, *args))(gi)
            if sub is not None:
                c = c[sub]
            prev = grads[parent]
            grads[parent] = c if prev is None else add_cotangents(prev, c)
    cotangents = []
    for idx in tape.inputs:
        total = None
        for i in idx:
            c = grads[i]
            if c is not None:
                total = c if total is None else add_cotangents(total, c)
        if total is None:
            total = zeros_like_value(nodes[idx[0]][3])
        cotangents.append(total)
    return cotangents


def zeros_like_value(value):
    """A zero cotangent for ``value``: zeros of its shape (float64 for an integer or bool
    array, whose gradient is real), the same structure for a tuple, list or dict (items
    that are not numbers get None, which counts as zero).

    Recurses on the nesting of user containers only.
    """
    base = _base(value)  # (traced, at higher order: the zeros are constants)
    if base is None:
        return None
    if isinstance(base, dict):
        return {k: zeros_like_value(v) for k, v in base.items()}
    if isinstance(base, _SEQUENCES):
        items = [zeros_like_value(v) for v in base]
        return items if type(base) is list else tuple(items)
    try:
        shape, dtype = np.shape(base), np.result_type(base)
    except (TypeError, ValueError):
        return None
    if dtype.kind not in "biufc":
        return None
    return np.zeros(shape, dtype if dtype.kind in "fc" else np.float64)
