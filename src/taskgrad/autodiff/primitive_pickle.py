"""How a ``tg.primitive`` pickles: as its function would, and by value with what the rule
registries say of it.

Why: pickle sends a function by name, and so a primitive (the receiving process's
import of its module registers its rules).  cloudpickle sends a function of the
main script, a notebook or a function by value, and a copy by value is a new
object that no rule is registered on: so a primitive's pickle by value carries
its registration (``rules.registration``), and unpickling registers that on the
copy.

A token names a primitive across processes, and each process keeps one object
per token: the original in the process that made it, else one copy.  So a
primitive sent again and again (every batch of tasks sends it) is one copy in
a worker, not one more registered copy a batch (which the registry would keep
forever), and one sent back to the process that made it is the original.  A
copy takes the registration of each pickle it is loaded from (rules registered
after an earlier sending arrive); the original keeps its own.
"""

from __future__ import annotations

import itertools
import os
import sys
import uuid
import weakref

import cloudpickle

from .rules import registration, restore_registration

_PROCESS = uuid.uuid4().hex  # (each process that imports taskgrad has its own)
_numbers = itertools.count()
# token -> the primitive this process has for it (weak: a primitive no one holds may go)
_BY_TOKEN = weakref.WeakValueDictionary()


def _renew_after_fork():
    """A forked child makes primitives of its own: their tokens must not be the ones the
    parent gives its next primitives (the parent's earlier ones keep theirs, rightly)."""
    global _PROCESS
    _PROCESS = uuid.uuid4().hex


os.register_at_fork(after_in_child=_renew_after_fork)


def new_token(prim):
    """A token naming the new primitive ``prim`` in every process it is sent to."""
    token = (_PROCESS, next(_numbers))
    _BY_TOKEN[token] = prim
    return token


def reduce_primitive(prim):
    """``prim.__reduce__()``, what pickle and copy use: pickle's way for a function, by name
    where its module (the main script too) holds it, else by value."""
    return _reduce(prim, _held_by_its_module(prim))


def _reduce_for_cloudpickle(prim):
    """cloudpickle's way for a function: by name where another process imports it too, else
    by value (one of the main script, a notebook, a module cloudpickle is told to send by
    value)."""
    return _reduce(prim, _held_by_its_module(prim) and prim.__module__ != "__main__"
                   and not _sent_by_value(prim.__module__))


def sent_by_cloudpickle_as_functions(cls):
    """Class decorator: cloudpickle reduces the primitives of ``cls`` its way for functions
    (its picklers read their dispatch table before ``__reduce__``)."""
    cloudpickle.Pickler.dispatch_table[cls] = _reduce_for_cloudpickle
    return cls


def _reduce(prim, by_name):
    """By value, the state is set after the object is made, so that it may refer to it (a
    recursive primitive, a rule calling it)."""
    if by_name:
        return prim.__qualname__
    return _restore, (type(prim), prim._token), (prim.__dict__, registration(prim))


def _held_by_its_module(prim):
    """Whether ``prim`` is what its module holds under its name."""
    found = sys.modules.get(getattr(prim, "__module__", None))
    name = getattr(prim, "__qualname__", None)  # (none for a primitive of a partial)
    if found is None or name is None:
        return False
    for part in name.split("."):  # (a primitive in a class body: "Class.name")
        found = getattr(found, part, None)
    return found is prim


def _sent_by_value(module):
    return any(module == m or module.startswith(m + ".")
               for m in cloudpickle.list_registry_pickle_by_value())


def _restore(cls, token):
    """The primitive this process has for ``token``, or a new, empty copy for it."""
    prim = _BY_TOKEN.get(token)
    if prim is None:
        prim = cls.__new__(cls)
        prim._token, prim._copy = token, True
        _BY_TOKEN[token] = prim
    return prim


def restore_primitive(prim, state):
    """``prim.__setstate__(state)``: a copy takes the function, metadata and registration it
    is sent with; the original keeps its own."""
    if prim._copy:
        metadata, entry = state
        prim.__dict__.update(metadata)
        restore_registration(prim, entry)
