"""Modular activation points and the hooks that record and mask them.

A zoo model's points are its ``nn.ReLU`` modules, named by module path. A model of any other definition is
used *tapped* (``moda_core.tapped``): its points are its activation call sites, each followed by a ``Tap``
module, named as torchvision's feature extraction names graph nodes. A model fx cannot trace keeps its
``nn.ReLU``/``nn.ReLU6`` modules as points (each must then run once per forward pass).

``record_activations`` captures the outputs of named points with forward hooks, units on dim 1;
``mask_points`` zeroes units at points, which is how the "masked full model" of the composition contract is
made; ``units_firing`` says which units of a recorded activation fire.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import torch
from torch import nn

from moda_core.errors import ModaError
from moda_core.graph import DEFAULT_THRESHOLD
from moda_core.hooks import hooks
from moda_core.tapped import taps_of


def point_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Point name → the module whose output is that point's activation, in forward order: a tapped model's
    taps, else the model's ``nn.ReLU``/``nn.ReLU6`` modules (registration order)."""
    taps = taps_of(model)
    if taps:
        return dict(taps)
    return {name: module for name, module in model.named_modules() if isinstance(module, (nn.ReLU, nn.ReLU6))}


def modular_points(model: nn.Module) -> list[str]:
    """Names of the model's modular points in forward order (``point_modules``)."""
    return list(point_modules(model))


def unit_dim(module: nn.Module) -> int:
    """The dimension of a point module's output that holds its units (1 unless a tap says otherwise)."""
    return getattr(module, "unit_dim", 1)


def firing_threshold(model: nn.Module) -> float:
    """A unit fires when its activation exceeds this (0 unless the model's taps were given another)."""
    taps = taps_of(model)
    return next(iter(taps.values())).threshold if taps else DEFAULT_THRESHOLD


def nonnegative_points(model: nn.Module) -> bool:
    """Whether every point's activation is ≥ 0 (ReLU and ReLU6; not GELU or SiLU)."""
    return all(getattr(module, "kind", "relu") == "relu" for module in point_modules(model).values())


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
    modules = point_modules(model)

    def start(_module: nn.Module, _inputs: tuple) -> None:
        recorder.cache.clear()

    def hook_for(name: str):
        dim = unit_dim(modules[name])

        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            if name in recorder.cache:
                raise ModaError(f"ReLU module {name!r} ran twice in one forward pass; "
                                "give every activation point its own nn.ReLU instance")
            if dim != 1:
                output = output.movedim(dim, 1)
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
    modules = point_modules(model)
    _resolve(model, list(unit_masks))

    def hook_for(name: str, mask: torch.Tensor):
        dim = unit_dim(modules[name])

        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            if output.shape[dim] != mask.numel():
                raise ModaError(f"mask of point {name!r} has {mask.numel()} units but the point has "
                                f"{output.shape[dim]}")
            shape = [1] * output.dim()
            shape[dim] = -1
            return output * mask.to(output.device, output.dtype).view(shape)
        return hook

    with hooks(forward=[(modules[name], hook_for(name, mask)) for name, mask in unit_masks.items()]):
        yield


def units_firing(activation: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """B×N bool: which units fire per sample (units on dim 1): a unit fires where its activation exceeds
    ``threshold`` at some position (a conv channel anywhere in its map, a token unit at any token). For ReLU
    outputs and the default 0 that is "non-zero": a conv channel fires when its mean |activation| is."""
    if activation.dim() > 2:
        return activation.flatten(2).amax(2) > threshold
    return activation > threshold
