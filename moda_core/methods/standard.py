"""Standard training: cross-entropy only. With ``track_modular_terms`` the MODA terms are still
computed (detached, no gradient) so that the history can show them next to a MODA run's."""
from __future__ import annotations

from typing import ContextManager

import torch
import torch.nn.functional as F
from torch import nn

from moda_core.activations import nonnegative_points
from moda_core.losses import modular_losses
from moda_core.methods.base import Method, MethodSettings, Step, StepFunction
from moda_core.methods.moda import MODULAR_TERMS


class Standard(Method):
    name = "standard"
    label = "standard training"

    def terms(self, config: MethodSettings) -> dict[str, bool]:
        return {"ce": True, **dict.fromkeys(MODULAR_TERMS if config.track_modular_terms else (), False)}

    def network(self, model: nn.Module, config: MethodSettings) -> nn.Module:
        return super().network(model, config) if config.track_modular_terms else model

    def start(self, config: MethodSettings, model: nn.Module, network: nn.Module,
              autocast: ContextManager) -> StepFunction:
        if not config.track_modular_terms:
            def plain(x: torch.Tensor, y: torch.Tensor) -> Step:
                with autocast:
                    logits = network(x)
                ce = F.cross_entropy(logits.float(), y)
                return Step(logits, ce, {"ce": ce})
            return plain
        nonnegative = nonnegative_points(model)

        def tracked(x: torch.Tensor, y: torch.Tensor) -> Step:
            with autocast:
                logits, activations, _ = network(x)
            ce = F.cross_entropy(logits.float(), y)
            with torch.no_grad():
                measured = modular_losses([a.detach() for a in activations], y, nonnegative=nonnegative)
            return Step(logits, ce, {"ce": ce, **dict(zip(MODULAR_TERMS, measured, strict=True))})
        return tracked
