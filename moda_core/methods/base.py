"""The interface every training method implements (standard training, MODA, MwT).

A method has a name, default loss weights (α, β, γ), a check of a training config, a way to prepare
a freshly built zoo model (add the modules it needs, e.g. MwT's gates, through its own block
subclasses), one training step's forward pass and loss terms, and the unit indicators decomposition
counts (which units of each point "fire" on a sample). The trainer, the run store and decomposition
call these and name no method.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterator, Protocol

import torch
from torch import nn

from moda_core.activations import firing_threshold, modular_points, record_activations, units_firing

# read() after a forward pass → {point: B×N bool} for every modular point
# (MwT reports its ungated points as all firing)
Indicators = Callable[[], dict[str, torch.Tensor]]


class MethodSettings(Protocol):
    """What a method reads from a training config (``moda_core.train.TrainConfig`` has all of it; a
    method needs no import of the trainer)."""

    model: str  # a zoo name or a builder's import path (package.module:function)
    method: str
    alpha: float
    beta: float
    gamma: float
    track_modular_terms: bool


@dataclass
class StepLosses:
    """One forward pass: the logits, cross-entropy, the loss to minimise and the three logged terms
    (affinity, dispersion, compactness; zeros when the method does not compute them)."""

    logits: torch.Tensor
    ce: torch.Tensor
    loss: torch.Tensor
    affinity: torch.Tensor
    dispersion: torch.Tensor
    compactness: torch.Tensor


class Method:
    """Base class: standard training's behaviour wherever a method does not override it."""

    name = ""
    label = ""
    defaults: tuple[float, float, float] = (0.0, 0.0, 0.0)  # alpha, beta, gamma

    def validate(self, config: MethodSettings) -> None:
        """Raise ``ModaError`` for a config this method cannot train (weights already checked >= 0)."""

    def prepare(self, model: nn.Module) -> nn.Module:
        """The model this method trains, built from a plain zoo model (default: the model itself)."""
        return model

    def logged_terms(self, config: MethodSettings) -> tuple[bool, bool, bool]:
        """Which of affinity, dispersion, compactness mean something in this run's history."""
        return (False, False, False)

    def losses(self, config: MethodSettings, model: nn.Module, network: nn.Module, x: torch.Tensor, y: torch.Tensor,
               autocast: ContextManager) -> StepLosses:
        raise NotImplementedError

    @contextmanager
    def unit_indicators(self, model: nn.Module) -> Iterator[Indicators]:
        """Firing units per sample at every point: a unit fires when its activation is non-zero (for a
        conv channel: anywhere in the map) — docs/design.md, Firing rule and floor."""
        points, threshold = modular_points(model), firing_threshold(model)
        with record_activations(model, points, detach=True) as recorder:
            yield lambda: {p: units_firing(a, threshold) for p, a in zip(points, recorder.values(), strict=True)}
