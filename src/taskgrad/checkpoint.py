"""Checkpointing (rematerialisation): trade recomputation for memory in the backward pass.

``tg.checkpoint(fn)`` turns a plain-NumPy function (a block of layers) into
a lazy one whose call is one forward task that keeps only its output: the
activations inside the block die with the task.  The backward pass does not
read them; it runs the block again from its inputs, under tracing, right
where its cotangent is needed, and walks that tape back.  On a chain of N
layers cut into blocks of k, the forward+backward holds about N/k block
outputs plus one block's activations instead of all N layers' activations,
and the gradients are the same numbers, computed by the same operations.

How it sits in the graph: the block's Delayed inputs are first packed into
one tuple (``pack_inputs``), so the block has one differentiable input and
``grad`` makes one backward task per block, whose VJP rule re-traces the
block once and returns the cotangents of all inputs; unpacking them costs an
item lookup each (see :class:`Cotangents`).  The backward task reads the cotangent, so it cannot run
before the backward pass reaches the block.
"""

from __future__ import annotations

import functools
from functools import partial

from .autodiff.trace import backprop, trace_call
from .autodiff.rules import defvjp, defvjp_argnum
from .delayed import Delayed, _make_delayed, funcname, unpack_delayed
from .graph import materialize

__all__ = ["checkpoint", "Segment", "pack_inputs"]


def pack_inputs(*values):
    """The Delayed inputs of a checkpointed block, as one tuple (one differentiable input)."""
    return values


class Cotangents:
    """The cotangents of a block's inputs, each handed out once and then let go.

    The backward pass reads the cotangent of the block's input activation
    early (the chain goes on from it) and those of its weights maybe much
    later; a plain tuple would keep the activation-sized one alive until then.
    """

    __slots__ = ("items",)

    def __init__(self, items):
        self.items = list(items)

    def take(self, pos):
        value, self.items[pos] = self.items[pos], _TAKEN
        if value is _TAKEN:  # two readers of one cotangent: never answer the second with zero
            raise RuntimeError(f"taskgrad: the cotangent of input {pos} of a checkpointed block "
                               "was read twice (please report this)")
        return value


_TAKEN = object()


def _take(pos, g):
    if type(g) is not Cotangents:  # a traced value: someone differentiates the backward pass
        raise NotImplementedError(
            "gradients of gradients through a tg.checkpoint block are not supported; "
            "use tg.delayed(fn) for the block instead")
    return g.take(pos)


def _pack_rule(pos, ans, *values):
    return partial(_take, pos)


# rules made of importable functions, so a saved graph names them without pickling
defvjp_argnum(pack_inputs, lambda pos: partial(_pack_rule, pos))


class Segment:
    """The function a checkpointed block's task runs: ``fn`` on the unpacked inputs.

    ``template`` is ``(args, kwargs)`` with Refs where the inputs named by
    ``keys`` go.  Its VJP rule (registered on creation, also after unpickling
    in a worker process) recomputes the block from the packed inputs.
    """

    def __init__(self, fn, template, keys):
        self.fn = fn
        self.template = template
        self.keys = keys
        self.__name__ = f"checkpoint:{funcname(fn)}"
        self.paths = tuple(((0, i),) for i in range(len(keys)))  # input i: positional arg i
        defvjp(self, self.vjp_rule)

    def apply(self, *inputs):
        args, kwargs = materialize(self.template, dict(zip(self.keys, inputs)))
        out = self.fn(*args, **kwargs)
        if isinstance(out, Delayed):  # tnp code, or a closure over a Delayed
            raise TypeError(
                f"{self.__name__} returned a lazy {out!r}: tg.checkpoint takes a function "
                f"written with plain NumPy on its arguments (not tnp, and with every "
                f"Delayed it uses passed as an argument)")
        return out

    def __call__(self, packed):
        return self.apply(*packed)

    def vjp_rule(self, ans, packed):
        return partial(self.backward, packed)

    def backward(self, packed, g):
        """Run the block again from its inputs under tracing, and walk the tape back."""
        tape = trace_call(repr(self.__name__), self.apply, self.paths, packed, {})
        return Cotangents(backprop(tape, g))

    def __reduce__(self):
        return (Segment, (self.fn, self.template, self.keys))

    def __repr__(self):
        return f"<{self.__name__}>"


def checkpoint(fn):
    """Make ``fn`` (written with plain NumPy) a lazy block that is recomputed for gradients.

    Calling the result with Delayed arguments (also inside lists, tuples,
    dicts) builds one task, as ``tg.delayed(fn)`` would; ``tg.grad`` through
    it recomputes the block instead of keeping its activations.
    """
    @functools.wraps(fn)
    def block(*args, **kwargs):
        template, found = unpack_delayed((args, kwargs))
        keys = tuple(found)
        name = funcname(fn)
        packed = _make_delayed(pack_inputs, tuple(found.values()), None,
                               prefix=f"{name}-inputs")
        return _make_delayed(Segment(fn, template, keys), (packed,), None, prefix=name)

    return block
