"""Reverse-mode automatic differentiation of task graphs.

``rules.py`` holds the VJP registry, ``numpy_vjps.py`` the rules of NumPy and
of Python's operators, ``trace.py`` the tracer for plain-NumPy bodies,
``grad.py`` the construction of the backward graph, ``backward_tasks.py`` the
functions its tasks run, ``shape_dtype.py`` what rules keep of values they read
only for their shape, ``fuse_tape.py`` the rewrite that runs a traced
forward once, and ``check.py`` finite-difference checking.
"""

from . import numpy_composites, numpy_vjps  # noqa: F401  (register the rules)
from .check import check_grads
from .grad import grad, vjp
from .rules import MissingRuleError, defvjp
from .trace import primitive

__all__ = ["grad", "vjp", "defvjp", "primitive", "check_grads", "MissingRuleError"]
