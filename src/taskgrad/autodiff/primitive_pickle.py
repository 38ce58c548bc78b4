"""How a ``tg.primitive`` pickles: with what the rule registries say of it.

Why: a primitive that another process can import by name pickles by name, as a
function does, and that process's import of its module registers its rules.
One it cannot (defined in the main script, a notebook or a function) pickles by
value, as cloudpickle sends such a function, and a copy by value is a new
object that no rule is registered on: so its pickle carries its registration
(``rules.registration``), and unpickling registers that on the copy.

A token names a primitive across processes, and each process keeps one object
per token: the original in the process that made it, else one copy.  So a
primitive sent again and again (every batch of tasks sends it) is one copy
registered once, not one more registered copy a batch, and one sent back to
the process that made it is the original.  A copy takes the registration of
each pickle it is loaded from (rules registered after an earlier sending
arrive), the original keeps its own.
"""

from __future__ import annotations

import itertools
import sys
import uuid
import weakref

import cloudpickle

from .rules import registration, restore_registration

_PROCESS = uuid.uuid4().hex  # (each process that imports taskgrad has its own)
_numbers = itertools.count()
# token -> the primitive this process has for it (weak: a primitive no one holds may go)
_BY_TOKEN = weakref.WeakValueDictionary()


def new_token(prim):
    """A token naming the new primitive ``prim`` in every process it is sent to."""
    token = (_PROCESS, next(_numbers))
    _BY_TOKEN[token] = prim
    return token


def reduce_primitive(prim):
    """``prim.__reduce__()``: by name where pickle's way for a function finds it, else by
    value.  The state is set after the object is made, so that it may refer to it (a
    recursive primitive, a rule calling it)."""
    if _importable(prim):
        return prim.__qualname__
    return _restore, (type(prim), prim._token), (prim.__dict__, registration(prim))


def _importable(prim):
    """Whether ``prim`` is what its module, not the main script, holds under its name, in a
    module cloudpickle is not told to send by value."""
    module = getattr(prim, "__module__", None)
    found = sys.modules.get(module) if module != "__main__" else None
    name = getattr(prim, "__qualname__", None)  # (none for a primitive of a partial)
    if found is None or name is None or _sent_by_value(module):
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
