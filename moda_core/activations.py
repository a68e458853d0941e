"""Modular activation points: every ``nn.ReLU`` module of a model, named by its module path.

``record_activations`` captures the outputs of named points with forward hooks (any model works, not
only the zoo); ``mask_points`` zeroes units at points, which is how the "masked full model" of the
composition contract is made; ``units_firing`` says which units of a recorded activation fire.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import torch
from torch import nn

from moda_core.errors import ModaError
from moda_core.hooks import hooks


def modular_points(model: nn.Module) -> list[str]:
    """Names of the model's ReLU modules in registration (= forward) order."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.ReLU)]


def _resolve(model: nn.Module, points: Sequence[str] | None) -> list[str]:
    available = modular_points(model)
    if points is None:
        return available
    unknown = [p for p in points if p not in available]
    if unknown:
        raise ModaError(f"unknown activation point(s) {unknown}: this model's points are {available}")
    return list(points)


class ActivationRecorder:
    """Holds the latest forward pass's activations, keyed by point name, in point order."""

    def __init__(self, points: list[str]) -> None:
        self.points = points
        self.cache: dict[str, torch.Tensor] = {}

    def values(self) -> list[torch.Tensor]:
        missing = [p for p in self.points if p not in self.cache]
        if missing:
            raise ModaError(f"activation point(s) {missing} did not run in the last forward pass")
        return [self.cache[p] for p in self.points]


@contextmanager
def record_activations(model: nn.Module, points: Sequence[str] | None = None,
                       detach: bool = False) -> Iterator[ActivationRecorder]:
    """Record the outputs of ``points`` (default: all ReLUs) on every forward pass inside the block.

    A point that runs twice in one forward pass is an error: each point must be its own module.
    """
    recorder = ActivationRecorder(_resolve(model, points))
    modules = dict(model.named_modules())

    def start(_module: nn.Module, _inputs: tuple) -> None:
        recorder.cache.clear()

    def hook_for(name: str):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            if name in recorder.cache:
                raise ModaError(f"ReLU module {name!r} ran twice in one forward pass; "
                                "give every activation point its own nn.ReLU instance")
            recorder.cache[name] = output.detach() if detach else output
        return hook

    with hooks(forward=[(modules[name], hook_for(name)) for name in recorder.points], pre=[(model, start)]):
        yield recorder


def run_with_cache(model: nn.Module, x: torch.Tensor,
                   points: Sequence[str] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward pass; returns the output and a point-name → activation dict."""
    with record_activations(model, points, detach=True) as recorder:
        output = model(x)
    return output, dict(recorder.cache)


@contextmanager
def mask_points(model: nn.Module, unit_masks: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """Zero every unit whose mask entry is False at each named point (units = channels for conv maps)."""
    modules = dict(model.named_modules())
    _resolve(model, list(unit_masks))

    def hook_for(mask: torch.Tensor):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            if output.shape[1] != mask.numel():
                raise ModaError(f"mask has {mask.numel()} units but the point has {output.shape[1]}")
            shape = (1, -1) + (1,) * (output.dim() - 2)
            return output * mask.to(output.device, output.dtype).view(shape)
        return hook

    with hooks(forward=[(modules[name], hook_for(mask)) for name, mask in unit_masks.items()]):
        yield


def units_firing(activation: torch.Tensor) -> torch.Tensor:
    """B×N bool: which units fire per sample (units on dim 1; a conv channel fires when its mean
    |activation| over H,W is non-zero, i.e. when any position is non-zero)."""
    if activation.dim() > 2:
        return activation.flatten(2).abs().amax(2) > 0
    return activation != 0
