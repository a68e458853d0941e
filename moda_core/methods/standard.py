"""Standard training: cross-entropy only. With ``track_modular_terms`` the MODA terms are still
computed (detached, no gradient) so that the history can show them next to a MODA run's."""
from __future__ import annotations

from typing import ContextManager

import torch
import torch.nn.functional as F
from torch import nn

from moda_core.activations import nonnegative_points
from moda_core.errors import ModaError
from moda_core.losses import modular_losses
from moda_core.methods.base import Method, MethodSettings, StepLosses


class Standard(Method):
    name = "standard"
    label = "standard training"
    defaults = (0.0, 0.0, 0.0)

    def validate(self, config: MethodSettings) -> None:
        if config.alpha or config.beta or config.gamma:
            raise ModaError(f"standard training has no modular terms: alpha, beta and gamma must be 0, got "
                            f"{config.alpha}, {config.beta}, {config.gamma}")

    def logged_terms(self, config: MethodSettings) -> tuple[bool, bool, bool]:
        return (config.track_modular_terms,) * 3

    def network(self, model: nn.Module, config: MethodSettings) -> nn.Module:
        return super().network(model, config) if config.track_modular_terms else model

    def losses(self, config: MethodSettings, model: nn.Module, network: nn.Module, x: torch.Tensor, y: torch.Tensor,
               autocast: ContextManager) -> StepLosses:
        zero = torch.zeros((), device=x.device)
        if not config.track_modular_terms:
            with autocast:
                logits = network(x)
            ce = F.cross_entropy(logits.float(), y)
            return StepLosses(logits, ce, ce, zero, zero, zero)
        with autocast:
            logits, activations, _ = network(x)
        ce = F.cross_entropy(logits.float(), y)
        with torch.no_grad():
            affinity, dispersion, compactness = modular_losses([a.detach() for a in activations], y,
                                                                 nonnegative=nonnegative_points(model))
        return StepLosses(logits, ce, ce, affinity, dispersion, compactness)
