"""What MODA keeps on a model, typed: ``arch`` (the arguments it was built with, ``moda_core.models``, or what
``moda_core.loop.prepare_model`` read from it), ``input_shape`` (one example's shape, without the batch dim) and a
composed module's ``classes``.

torch's stubs type every attribute an ``nn.Module`` class does not declare as ``Tensor | Module`` (what its
``__getattr__`` finds) and accept only tensors and modules in its ``__setattr__``, so a type checker cannot follow
``model.arch``; these read and set such attributes in one place. Nothing here checks the values (a stored run's
``arch`` is checked when it is loaded: ``moda_core.run_config``).
"""
from __future__ import annotations

from typing import Any, Sequence, cast

from torch import nn


def arch_of(model: nn.Module) -> dict[str, Any]:
    """``model.arch`` (AttributeError when it has none)."""
    return cast("dict[str, Any]", model.arch)


def input_shape_of(model: nn.Module) -> tuple[int, ...]:
    """``model.input_shape``, as a tuple (AttributeError when it has none)."""
    return tuple(cast("Sequence[int]", model.input_shape))


def classes_of(module: nn.Module) -> list[int]:
    """A composed module's ``classes`` (``moda_core.compose.compose_module``: its logits' classes, sorted)."""
    return cast("list[int]", module.classes)


def set_attributes(module: nn.Module, **values: Any) -> None:
    """``module.NAME = value`` for each: attributes of MODA's own (``arch``, ``input_shape``, a composed module's
    ``classes``), which are neither tensors nor modules."""
    for name, value in values.items():
        setattr(module, name, value)


__all__ = ["arch_of", "classes_of", "input_shape_of", "set_attributes"]
