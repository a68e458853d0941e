"""MODA Studio engine: activation-driven modular training, decomposition, composition, metrics and repair.

For your own model and training loop: ``ModularLoss``, ``decompose_model`` and ``compose_module`` (imported on
first use, so ``import moda_core`` stays light).
"""
from typing import Any

from moda_core.errors import ModaError

__all__ = ["ModaError", "ModularLoss", "compose_module", "decompose_model", "prepare_model"]
__version__ = "0.2.0"  # the package's version (pyproject.toml reads it from here)

_LAZY = {"ModularLoss": "moda_core.loop", "decompose_model": "moda_core.loop", "prepare_model": "moda_core.loop",
         "compose_module": "moda_core.compose"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'moda_core' has no attribute {name!r}")
