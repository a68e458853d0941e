"""The interface every training method implements (standard training, MODA, MwT).

A method has a name, default loss weights (α, β, γ), a check of a training config, a way to prepare
a freshly built zoo model (add the modules it needs, e.g. MwT's gates, through its own block
subclasses), the network the trainer runs (by default the model's recorder: logits and every point's
activation, ``moda_core.activations.recorder``), one training step's loss terms, and which units of each
point "fire" on a batch (what decomposition counts). The trainer, the run store and decomposition call
these and name no method.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ContextManager, Protocol

import torch
from torch import nn

from moda_core.activations import firing_threshold, modular_points, recorder, units_firing

# firing(x) → {point: B×N bool} for every modular point (MwT reports its ungated points as all firing)
Firing = Callable[[torch.Tensor], dict[str, torch.Tensor]]


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

    def network(self, model: nn.Module, config: MethodSettings) -> nn.Module:
        """What a training step runs (the trainer wraps it for DDP or ``torch.compile``): by default the model's
        recorder, ``x → (logits, point activations, extras)`` over the model's own modules."""
        return recorder(model, training=True)

    def losses(self, config: MethodSettings, model: nn.Module, network: nn.Module, x: torch.Tensor, y: torch.Tensor,
               autocast: ContextManager) -> StepLosses:
        raise NotImplementedError

    def firing(self, model: nn.Module) -> Firing:
        """Firing units per sample at every point, from one pure eval-mode pass: a unit fires when its activation
        is non-zero (for a conv channel: anywhere in the map) — docs/design.md, Firing rule and floor."""
        record, points, threshold = recorder(model), modular_points(model), firing_threshold(model)

        def read(x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {p: units_firing(a, threshold) for p, a in zip(points, record(x)[1], strict=True)}
        return read
