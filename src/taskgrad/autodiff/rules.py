"""The registry of VJP rules: which functions taskgrad knows how to differentiate.

A rule has HIPS autograd's form: ``rule(ans, *args, **kwargs)`` returns a
function of the output cotangent ``g`` giving the cotangent of one positional
argument.  The same registry serves the task-level backward pass (``grad.py``)
and the op-level tracer (``trace.py``), so a NumPy function, its ``tnp``
counterpart and the matching ``Delayed`` operator share one rule.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["defvjp", "defvjp_argnum", "copy_rules", "nondifferentiable", "defcomposite",
           "remember", "registrations", "uses_only_shapes", "shape_only_inputs", "rule_for", "has_rules",
           "ufunc_call_for_rules", "is_nondifferentiable", "is_composite", "MissingRuleError"]

# func -> tuple of rules (one per positional argument, None = not differentiable),
# or a callable ``pos -> rule or None`` for functions with any number of arguments
_RULES = {}
_NONDIFF = set()
# func -> an implementation written with traceable operations, used on traced values
_COMPOSITES = {}
# func -> (argument positions, whether ``ans``) its rules read only for shape and dtype, and
# None or {position: (positions, ans?)} for the rule of one argument alone (see ``uses_only_shapes``)
_SHAPE_ONLY = {}
NO_SHAPES = (frozenset(), False, None)
# caches their readers keep of what the registries above say (the tracer's summary of each
# function): every registration clears them, so that a rule registered late takes effect
_CACHES = []
_registrations = 0  # how many there have been (see ``remember``)
_registering = threading.Lock()


def _registered():
    global _registrations
    with _registering:
        _registrations += 1
        for cache in _CACHES:
            cache.clear()


def registrations():
    """How many registrations there have been: what was read of the registries before
    holds while this stays the same."""
    return _registrations


def remember(cache, key, find):
    """``find()``, kept in ``cache`` (one of ``_CACHES``) under ``key``, unless a
    registration came while ``find`` read the registries: what it read may be from
    before, and a stale entry would hide the new rules until the next registration."""
    seen = _registrations
    value = find()
    with _registering:
        if _registrations == seen:
            cache[key] = value
    return value


class MissingRuleError(TypeError):
    """A traced function used an operation that has no VJP rule."""


def _key(func):
    """Register the raw function behind a ``tg.delayed`` wrapper."""
    return getattr(func, "__wrapped__", func) if type(func).__name__ == "DelayedFunction" else func


def defvjp(func, *rules):
    """Register one VJP rule per positional argument of ``func`` (None: no gradient).

    A registered rule wins over tracing.  Returns ``func`` so it can decorate.
    """
    if not rules:
        raise TypeError(f"defvjp({func!r}) needs at least one rule")
    for i, rule in enumerate(rules):
        if rule is not None and not callable(rule):
            raise TypeError(f"rule {i} for {func!r} must be callable or None, got {rule!r}")
    func = _key(func)
    _RULES[func] = tuple(rules)
    _NONDIFF.discard(func)
    _SHAPE_ONLY.pop(func, None)  # new rules may read the values
    _registered()
    return func


def defvjp_argnum(func, maker):
    """Register ``maker(pos)`` -> rule for argument ``pos`` (variadic functions)."""
    _RULES[_key(func)] = maker
    _SHAPE_ONLY.pop(_key(func), None)
    _registered()
    return func


def copy_rules(dst, src):
    """Give ``dst`` the rules of ``src`` (``operator.add`` shares ``numpy.add``'s)."""
    _RULES[_key(dst)] = _RULES[_key(src)]
    if _key(src) in _SHAPE_ONLY:
        _SHAPE_ONLY[_key(dst)] = _SHAPE_ONLY[_key(src)]
    _registered()


def uses_only_shapes(func, args=(), ans=False, rule_of=None):
    """Declare that ``func``'s rules read these arguments (and ``ans``) only for their
    shape and dtype: backward tasks and traced tapes then keep a ``ShapeDtype`` instead
    of the value, which the forward pass can free as soon as it is done with it.

    With ``rule_of=pos`` the declaration is about the rule of argument ``pos`` alone: it
    holds when only that argument is differentiated (``x * c`` with a constant ``c`` reads
    ``x`` for its shape only, ``x * y`` with both differentiated reads both).
    """
    key = _key(func)
    shapes, reads_ans, per_rule = _SHAPE_ONLY.get(key, NO_SHAPES)
    if rule_of is None:
        _SHAPE_ONLY[key] = (frozenset(args), ans, per_rule)
    else:
        _SHAPE_ONLY[key] = (shapes, reads_ans,
                            {**(per_rule or {}), rule_of: (frozenset(args), ans)})
    _registered()


def shape_only_inputs(func, positions=()):
    """``(argument positions, ans?)`` that ``func``'s rules for the arguments at
    ``positions`` use only for shape and dtype."""
    try:
        entry = _SHAPE_ONLY.get(func, NO_SHAPES)
    except TypeError:
        entry = NO_SHAPES
    return shapes_for(entry, positions)


def shapes_for(entry, positions):
    """What an ``_SHAPE_ONLY`` entry says when the arguments at ``positions`` are
    differentiated: what every one of their rules reads for shape only."""
    shapes, reads_ans, per_rule = entry
    if per_rule is None or not positions:
        return shapes, reads_ans
    common, ans_too = None, True
    for pos in positions:
        rule_shapes, rule_ans = per_rule.get(pos, (shapes, reads_ans))
        common = rule_shapes if common is None else common & rule_shapes
        ans_too = ans_too and rule_ans
    return common, ans_too


def registration(func):
    """What the registries say of ``func``, for a copy of it in another process to be told
    (see ``primitive_pickle``)."""
    return (_RULES.get(func), _SHAPE_ONLY.get(func), _COMPOSITES.get(func), func in _NONDIFF)


def restore_registration(func, entry):
    """Make the registries say of ``func`` what ``registration`` said of its original."""
    if registration(func) == entry:
        return
    for registry, value in zip((_RULES, _SHAPE_ONLY, _COMPOSITES), entry):
        if value is None:
            registry.pop(func, None)
        else:
            registry[func] = value
    if entry[3]:
        _NONDIFF.add(func)
    else:
        _NONDIFF.discard(func)
    _registered()


def nondifferentiable(*funcs):
    """Declare functions whose outputs carry no gradient (comparisons, ``zeros_like``)."""
    for func in funcs:
        _NONDIFF.add(_key(func))
    _registered()


def defcomposite(func, impl):
    """Differentiate ``func`` through ``impl``, written with operations that have rules.

    The tracer calls ``impl`` instead of ``func`` on traced values (``np.var``
    as a mean of squares, ``np.sort`` as indexing), so no rule is needed.
    """
    _COMPOSITES[func] = impl
    _registered()
    return impl


def has_rules(func):
    try:
        return func in _RULES
    except TypeError:  # an unhashable callable cannot have been registered
        return False


def is_composite(func):
    """Whether ``func`` is differentiated through the operations it is made of."""
    try:
        return func in _COMPOSITES
    except TypeError:
        return False


def is_nondifferentiable(func):
    try:
        return func in _NONDIFF
    except TypeError:
        return False


# keywords of a ufunc call that change no derivative (the rules see the values and unbroadcast
# casts back); any other (where=, axes=, axis=, keepdims=) changes what is computed
_UFUNC_PLAIN_KWARGS = frozenset(["out", "dtype", "casting", "order", "subok", "signature"])


def ufunc_call_for_rules(func, args, kwargs):
    """``(args, kwargs)`` of a ufunc call as its rules take them: lists as arrays, no keywords.

    Raises MissingRuleError for a keyword that changes what the ufunc computes.
    """
    for name in kwargs or ():
        if name not in _UFUNC_PLAIN_KWARGS:
            raise MissingRuleError(f"numpy.{func.__name__} with {name}=")
    return [np.asarray(a) if type(a) in (list, tuple) else a for a in args], {}


def rule_for(func, pos):
    """The rule for positional argument ``pos`` of ``func``, or None where no gradient flows.

    A rule tuple that stops before ``pos`` says nothing of it: differentiating there
    is an error, never a silent zero.
    """
    rules = _RULES[func]
    if type(rules) is tuple:
        if pos < len(rules):
            return rules[pos]
        raise MissingRuleError(
            f"its VJP rules cover its first {len(rules)} argument(s) only; give one rule per "
            f"differentiable argument (None where no gradient flows)")
    return rules(pos)
