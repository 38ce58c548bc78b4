"""``grad`` and ``vjp``: the backward pass as a reversed task graph.

The forward graph is walked once, dependencies first (an iterative
depth-first post-order), to find the *active* nodes: those that depend on a ``wrt``.
Then, in reverse order, each active node's cotangent becomes a Delayed:

- the cotangent of a node read by several consumers is one ``sum_cotangents``
  task adding the contributions in the reverse post-order of the consumers,
  an order fixed by the graph, so every scheduler gives bit-identical sums;
- a node whose function has VJP rules gets one ``rule_vjp`` task per active
  dependency, reading the cotangent, the forward node (``ans``) and the
  forward arguments: the forward tasks are reused, not rebuilt;
- a node without rules (a plain-NumPy ``@tg.delayed`` function) gets a tape
  task that runs the function once under tracing, and one ``tape_vjp`` task
  that walks the tape back.  ``fuse_tape.fuse_tapes`` (called by
  ``optimize``) then computes the forward node from the tape, so the
  function runs once per ``compute``.

Every task built here has ``role="backward"``.  The tasks are written down as a
:class:`~taskgrad.autodiff.recipe.Recipe`, forward nodes named by position, and
made from it; a graph of a structure seen before takes the recipe of the first
(a training loop rebuilding its graph every step pays the analysis once).
"""

from __future__ import annotations

import operator

import numpy as np

from ..delayed import Delayed, funcname, new_token, unpack_delayed
from ..graph import Pack, Ref, Task
from ..placeholder import Placeholder
from .backward_tasks import (TapeSpec, checked_cotangent, describe, ones_for, retrace_vjp,
                             rule_vjp, sum_cotangents, tape_vjp, trace_forward, zeros_for)
from .recipe import (ARG, CONST, FUNC, KWARGS, REF, TAPE, Recipe, cached, kwargs_template,
                     signature)
from .rules import (_CACHES, MissingRuleError, has_rules, is_nondifferentiable, remember,
                    rule_for, shape_only_inputs, ufunc_call_for_rules)

__all__ = ["grad", "vjp"]


def grad(y, wrt):
    """Gradient(s) of the scalar ``y`` with respect to ``wrt`` (a Delayed or a list/tuple).

    Returns Delayed gradient(s) shaped like ``wrt``; nothing runs.
    """
    _check_delayed(y, "y")
    tok = new_token()
    seed = _make(f"seed-{y._key}-{tok}", ones_for, (Ref(y._key), y._key), (y,))
    return _backward(y, wrt, seed, tok)


def vjp(y, wrt, cotangent):
    """``cotangent``-weighted gradient of a (possibly non-scalar) ``y`` w.r.t. ``wrt``."""
    _check_delayed(y, "y")
    if cotangent is None:
        raise TypeError("tg.vjp needs a cotangent shaped like y (None is no cotangent)")
    tok = new_token()
    template, given = unpack_delayed(cotangent)  # (a tuple or dict may hold Delayeds)
    given.pop(y._key, None)
    seed = _make(f"cotangent-{y._key}-{tok}", checked_cotangent, (Ref(y._key), template, y._key),
                 (y, *given.values()))
    return _backward(y, wrt, seed, tok)


def _check_delayed(obj, what):
    if not isinstance(obj, Delayed):
        raise TypeError(f"{what} must be a taskgrad Delayed, got {type(obj).__name__}")


_key_of = operator.attrgetter("_key")

# (func, active argument positions) -> shape spec (see ``_plan``), and -> {position: rule}:
# what the registry says of a call, asked once for every graph; registrations clear them
_SPECS = {}
_EDGE_RULES = {}
_CACHES.extend([_SPECS, _EDGE_RULES])


def _make(key, func, args, deps):
    """A backward task made outside a recipe (the seed) as a Delayed."""
    task = Task(key, func, args, None, tuple(map(_key_of, deps)), True, "backward")
    return Delayed(key, task, deps)


def _collect(root):
    """``(nodes, clash)``: key -> Delayed for everything ``root`` depends on, each after its
    dependencies, and whether two different tasks share a key (which ``compute`` refuses).

    A depth-first post-order with an explicit stack of iterators, in the order
    ``graph.postorder`` gives; Delayeds are immutable, so there is no cycle.
    """
    nodes = {}
    seen = {root._key: root._task}
    clash = False
    stack = [(root, iter(root._dependencies))]
    while stack:
        node, deps = stack[-1]
        for d in deps:
            task = seen.get(d._key)
            if task is None:
                seen[d._key] = d._task
                stack.append((d, iter(d._dependencies)))
                break
            if task is not d._task:
                clash = True
        else:
            stack.pop()
            nodes[node._key] = node
    return nodes, clash


def _view(d, nodes):
    """``(func, args, kwargs, dependency keys, fill plan)`` to differentiate for node ``d``.

    A ``tape_vjp`` task reads an opaque tape; to differentiate it we look at
    what it computes, ``retrace_vjp`` of the traced function's arguments.
    """
    task = d._task
    if task.func is tape_vjp:
        tape, g = task.args
        t = nodes[tape.key]._task
        spec, func, kwargs, *args = t.args
        return retrace_vjp, (spec, func, kwargs, Ref(g.key), *args), None, \
            (g.key, *t.dependencies), None
    return task.func, task.args, task.kwargs, task.dependencies, task._refs


def _ref_paths(args, kwargs, refs=None):
    """key -> list of places ``(0, i, ...)`` / ``(1, name, ...)`` where a Ref appears.

    ``refs`` is the task's fill plan when it has one (Refs only as top-level
    positional arguments): then the places are known without a walk.
    """
    paths = {}
    if refs is not None:
        for i, key in refs:
            paths.setdefault(key, []).append((0, i))
        return paths
    stack = [((0, i), a) for i, a in enumerate(args)]
    stack += [((1, k), v) for k, v in (kwargs or {}).items()]
    while stack:
        path, t = stack.pop()
        cls = type(t)
        if cls is Ref:
            paths.setdefault(t.key, []).append(path)
        elif cls is Pack:
            if t.kind is dict:
                steps = [k for k, _ in t.items]
                items = [v for _, v in t.items]
            else:
                steps = range(len(t.items))
                items = t.items
            unordered = path is None or t.kind in (set, frozenset)
            stack.extend((None if unordered else path + (s,), v) for s, v in zip(steps, items))
    for places in paths.values():
        places.sort(key=repr)
    return paths


def _backward(y, wrt, seed, tok):
    single = isinstance(wrt, Delayed)
    if not single and not isinstance(wrt, (list, tuple)):
        raise TypeError(f"wrt must be a Delayed or a list/tuple of them, got {type(wrt).__name__}")
    wrts = [wrt] if single else list(wrt)
    for i, w in enumerate(wrts):
        _check_delayed(w, f"wrt[{i}]")

    nodes, clash = _collect(y)
    forward = list(nodes.values())
    key = None if clash else signature(forward, wrts, tape_vjp)
    if key is None:
        recipe = _analyse(nodes, y, wrts)
    else:
        recipe = cached(key, lambda: _analyse(nodes, y, wrts))
    # (a vjp's seed may read Delayeds outside the pool: its gradients are not run again)
    grads = recipe.make(forward, seed, wrts, tok, again=seed._task.func is ones_for)
    if single:
        return grads[0]
    return type(wrt)(grads) if isinstance(wrt, tuple) else grads


def _analyse(nodes, y, wrts):
    """The recipe of the backward tasks of ``y``'s graph (``nodes``, in post-order)."""
    targets = {w._key for w in wrts}
    order = list(nodes)
    at = {k: i for i, k in enumerate(order)}
    recipe = Recipe(len(order), len(wrts))
    plans = {}  # active key -> what its backward tasks are built from (see ``_plan``)
    active = set()
    valued = {y._key}  # forward values some backward task reads (the seed reads y)
    for key in order:
        view = _view(nodes[key], nodes)
        nondiff = is_nondifferentiable(view[0])
        if key in targets or (not nondiff and not active.isdisjoint(view[3])):
            active.add(key)
            plans[key] = _plan(key, view, nondiff, active, valued)

    metas = {}

    def meta(k):
        """The pool position of the ``describe`` task of forward value ``k`` (one per
        value).  A value that stays alive anyway (a leaf, or read whole by another
        backward task) is read as it is."""
        m = metas.get(k)
        if m is None:
            task = nodes[k]._task
            if k in valued or task.func is None or isinstance(task, Placeholder):
                return at[k]
            m = metas[k] = recipe.add("meta", at[k], "", describe, [(REF, 0, None)], [at[k]])
        return m

    found = {}
    cots = {y._key: [recipe.seed]} if y._key in active else {}
    for key in reversed(order):
        contribs = cots.pop(key, None)
        if not contribs:
            continue
        if len(contribs) == 1:
            g = contribs[0]
        else:
            g = recipe.add("grad", at[key], "", sum_cotangents,
                           [(REF, j, None) for j in range(len(contribs))], contribs)
        if key in targets:
            found[key] = g
        view, live, ruled, kwargs_t, spec = plans[key]
        if not live:
            continue
        if ruled:
            edges = _rule_edges(recipe, key, at, view, live, g, kwargs_t, spec, meta)
        else:
            edges = _tape_edges(recipe, key, at, view, live, g, kwargs_t)
        for dep, edge in edges:
            cots.setdefault(dep, []).append(edge)

    outputs = []
    for i, w in enumerate(wrts):
        g = found.get(w._key)
        if g is None:
            g = recipe.add("zeros", recipe.wrt(i), "", zeros_for, [(REF, 0, None)],
                           [recipe.wrt(i)])
        outputs.append(g)
    recipe.outputs = tuple(outputs)
    return recipe


def _plan(key, view, nondiff, active, valued):
    """What both passes need of active node ``key``, found once: ``(view, live, has rules?,
    kwargs template, spec)``; adds to ``valued`` the forward values its backward tasks read.

    ``live`` are the active dependencies its cotangent flows to (none through a
    nondifferentiable function).  ``spec`` is None where its backward tasks read the
    forward values as they are (no rules, or dependencies nested in containers), else
    ``(active argument positions, shape-only positions, ans shape-only?)``: what
    ``shape_only_inputs`` says of those positions, asked once per function and positions.
    """
    func, args, kwargs, deps, refs = view
    live = [] if nondiff else [dep for dep in deps if dep in active]
    ruled = has_rules(func)
    kwargs_t = kwargs_template(kwargs)
    if refs is None or not ruled or type(kwargs_t) is Pack:
        valued.add(key)
        valued.update(deps)
        return view, live, ruled, kwargs_t, None
    positions = tuple([i for i, k in refs if k in active])
    spec = _SPECS.get((func, positions))
    if spec is None:
        spec = remember(_SPECS, (func, positions),
                        lambda: (positions, *shape_only_inputs(func, positions)))
    positions, shape_args, shape_ans = spec
    valued.update([k for i, k in refs if i not in shape_args])
    if not shape_ans:
        valued.add(key)
    return view, live, ruled, kwargs_t, spec


def _rule_edges(recipe, key, at, view, live, g, kwargs_t, spec, meta):
    """One ``rule_vjp`` task per active dependency of a node with VJP rules.

    Where the rules read an argument (or ``ans``) only for its shape and dtype,
    the task reads its ``describe`` task instead (``meta``), so the forward
    value is not kept alive for the backward pass.
    """
    func, args, kwargs, deps, refs = view
    node = at[key]
    # the forward task's own arguments (not a tape's view, nor rewritten for a ufunc's rules)
    as_given = func is not retrace_vjp
    if type(func) is np.ufunc and (kwargs or list in map(type, args)):
        dtype = (kwargs or {}).get("dtype")
        if dtype is not None and np.dtype(dtype).kind not in "fc":
            return []  # cast to integers: no gradient, as for astype(int)
        args, kwargs = _ufunc_call(func, args, kwargs, key)
        view = (func, args, kwargs, deps, refs)
        kwargs_t = kwargs_template(kwargs)
        as_given = False
    if spec is None:
        return _nested_rule_edges(recipe, key, at, view, live, g, kwargs_t)
    # arguments only at top level (the common case): one pass over them
    positions, shape_args, shape_ans = spec
    rule_at = _EDGE_RULES.get((func, positions))
    if rule_at is None:
        rule_at = remember(_EDGE_RULES, (func, positions),
                           lambda: {i: _rule(func, i, key) for i in positions})
    ans = meta(key) if shape_ans else node
    reads = {g: 0, ans: 1}  # pool position -> dependency index, in the order the task reads
    # rule_vjp(places, kwargs, g, ans, *args)
    head = [(KWARGS, node, None) if as_given else (CONST, kwargs_t, None),
            (REF, 0, None), (REF, reads[ans], None)]
    head += [(ARG, node, i) if as_given else (CONST, a, None) for i, a in enumerate(args)]
    places = {}  # active dependency -> the (rule, position, None) of each place it fills
    for i, k in refs:
        d = meta(k) if i in shape_args else at[k]
        head[i + 3] = (REF, reads.setdefault(d, len(reads)), None)
        rule = rule_at.get(i)
        if rule is not None:
            places.setdefault(k, []).append((rule, i, None))
    reads = list(reads)
    return [(dep, recipe.add("vjp", node, f"-{deps.index(dep)}", rule_vjp,
                             [(CONST, tuple(places[dep]), None), *head], reads))
            for dep in live if dep in places]


def _ufunc_call(func, args, kwargs, key):
    """``ufunc_call_for_rules``, with the task named where a keyword has no rule."""
    try:
        return ufunc_call_for_rules(func, args, kwargs)
    except MissingRuleError as exc:
        raise MissingRuleError(f"cannot differentiate task {key!r}: {exc} has no VJP rule") \
            from None


def _rule(func, pos, key):
    """``rule_for``, with the task named when there is none."""
    try:
        return rule_for(func, pos)
    except MissingRuleError as exc:
        raise MissingRuleError(f"cannot differentiate {funcname(func)} (task {key!r}) with "
                               f"respect to its argument {pos}: {exc}") from None


def _nested_rule_edges(recipe, key, at, view, live, g, kwargs_t):
    """``_rule_edges`` where dependencies sit inside containers: the forward values as they are."""
    func, args, kwargs, deps, refs = view
    paths = _ref_paths(args, kwargs, refs)
    reads = [g, at[key], *(at[k] for k in deps)]
    tail = [(CONST, kwargs_t, None), (REF, 0, None), (CONST, Ref(key), None),
            *((CONST, a, None) for a in args)]
    edges = []
    for dep in live:
        positions = []
        for path in paths[dep]:
            if path is None or path[0] == 1 or len(path) > 3:
                raise TypeError(
                    f"cannot differentiate {funcname(func)} (task {key!r}) with respect to "
                    f"{dep!r}: VJP rules take positional arguments (or sequences of them) only")
            rule = _rule(func, path[1], key)
            if rule is not None:
                positions.append((rule, path[1], path[2] if len(path) == 3 else None))
        if positions:
            edge = recipe.add("vjp", at[key], f"-{deps.index(dep)}", rule_vjp,
                              [(CONST, tuple(positions), None), *tail], reads)
            edges.append((dep, edge))
    return edges


def _tape_edges(recipe, key, at, view, live, g, kwargs_t):
    """A tape task (the traced forward) and one ``tape_vjp`` task for a node without rules."""
    func, args, kwargs, deps, refs = view
    paths = _ref_paths(args, kwargs, refs)
    name = funcname(func)
    for dep in live:
        if any(p is None for p in paths[dep]):
            raise TypeError(f"cannot differentiate {name} (task {key!r}) with respect to "
                            f"{dep!r}: it is passed inside a set")
    places = tuple(tuple(paths[dep]) for dep in live)
    which = ".".join(str(deps.index(dep)) for dep in live)
    node = at[key]
    if refs is not None and func is not retrace_vjp:  # the forward task's own call, flat
        traced = [(TAPE, node, places), (FUNC, node, None), (KWARGS, node, None)]
        traced += [(ARG, node, i) for i in range(len(args))]
        for i, k in refs:
            traced[i + 3] = (REF, deps.index(k), None)
    else:  # (its arguments as they are: the recipe serves this graph only)
        traced = [(CONST, v, None) for v in (TapeSpec(key, name, places), func, kwargs_t, *args)]
    tape = recipe.add("tape", node, f"-{which}", trace_forward, traced, [at[k] for k in deps],
                      tokened=False)
    back = recipe.add("vjp", node, "", tape_vjp, [(REF, 0, None), (REF, 1, None)], [tape, g])
    if len(live) == 1:
        return [(live[0], back)]
    return [(dep, recipe.add("vjp", node, f"-{deps.index(dep)}", operator.getitem,
                             [(REF, 0, None), (CONST, j, None)], [back]))
            for j, dep in enumerate(live)]
