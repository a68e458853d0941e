"""MODA Studio engine: activation-driven modular training, decomposition, composition, metrics and repair."""
from moda_core.errors import ModaError

__all__ = ["ModaError"]
__version__ = "0.1.0"
