"""MODA (docs/design.md, Modular objectives): cross-entropy plus α·affinity + β·dispersion + γ·compactness of the ReLU
activations at every modular point."""
from __future__ import annotations

from typing import ContextManager

import torch
import torch.nn.functional as F
from torch import nn

from moda_core.activations import nonnegative_points
from moda_core.losses import modular_losses
from moda_core.methods.base import Method, MethodSettings, StepLosses


class Moda(Method):
    name = "moda"
    label = "MODA"
    defaults = (1.0, 1.0, 0.3)

    def logged_terms(self, config: MethodSettings) -> tuple[bool, bool, bool]:
        return (True, True, True)

    def losses(self, config: MethodSettings, model: nn.Module, network: nn.Module, x: torch.Tensor, y: torch.Tensor,
               autocast: ContextManager) -> StepLosses:
        with autocast:
            logits, activations, _ = network(x)
        ce = F.cross_entropy(logits.float(), y)
        affinity, dispersion, compactness = modular_losses(list(activations), y, nonnegative=nonnegative_points(model))
        loss = ce + config.alpha * affinity + config.beta * dispersion + config.gamma * compactness
        return StepLosses(logits, ce, loss, affinity, dispersion, compactness)
