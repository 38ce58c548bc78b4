"""Graph-to-graph optimization passes, each small and each switchable.

Every pass has the signature ``pass_(graph, keys) -> graph``: it takes a graph
(key -> Task) and the keys that must survive (the requested outputs), and
returns a new graph that computes the same values for those keys.  None of
them recurses on the depth of the graph.  ``taskgrad.optimize`` chains them.
"""

from .cse import cse
from .cull import cull
from .fold import fold_constants
from .fuse import Fused, fuse
from .inline import CHEAP_FUNCTIONS, inline

__all__ = ["CHEAP_FUNCTIONS", "Fused", "cse", "cull", "fold_constants", "fuse", "inline"]
