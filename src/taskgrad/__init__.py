"""taskgrad: lazy task graphs (dask-style ``@delayed``) with reverse-mode autodiff."""

from .base import compute, persist
from .callbacks import Callback, TaskInfo
from .delayed import Delayed, delayed
from .graph import CycleError, MissingDependencyError, Task
from .schedulers import WorkerDiedError, get

# visualize and diagnostics
from .diagnostics import Profiler, ProgressBar
from .visualize import visualize

__all__ = [
    "Callback", "CycleError", "Delayed", "MissingDependencyError", "Task", "TaskInfo",
    "WorkerDiedError", "compute", "delayed", "get", "persist",
]
__all__ += ["Profiler", "ProgressBar", "visualize"]  # visualize and diagnostics

# static graphs
from .placeholder import PlaceholderError, placeholder  # noqa: E402
from .serialize import FileFormatError, load, save  # noqa: E402
from .static import Compiled, compile  # noqa: E402
from .checkpoint import checkpoint  # noqa: E402

__all__ += ["Compiled", "FileFormatError", "PlaceholderError", "checkpoint", "compile", "load",
            "placeholder", "save"]

__version__ = "0.1.0"

# autodiff
from . import numpy  # noqa: E402  (import taskgrad.numpy as tnp)
from . import nn  # noqa: E402  (import taskgrad.nn as tnn)
from .autodiff import MissingRuleError, check_grads, defvjp, grad, primitive, vjp  # noqa: E402

__all__ += ["MissingRuleError", "check_grads", "defvjp", "grad", "nn", "numpy", "primitive",
            "vjp"]
