"""The editors: each a hyperparameter dataclass and a function that returns a ``WeightEdit``."""

from . import rome
from .rome import RomeHparams, apply_rome, compute_rome

__all__ = ["rome", "RomeHparams", "compute_rome", "apply_rome"]
