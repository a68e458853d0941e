"""MODA (docs/design.md, Modular objectives): cross-entropy plus α·affinity + β·dispersion + γ·compactness of the ReLU
activations at every modular point."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ContextManager, cast

import torch
import torch.nn.functional as F
from torch import nn

from moda_core.activations import nonnegative_points
from moda_core.losses import modular_losses
from moda_core.methods.base import Method, MethodSettings, Step, StepFunction, Weights, weight

MODULAR_TERMS = ("affinity", "dispersion", "compactness")


@dataclass(frozen=True)
class ModaWeights(Weights):
    affinity: float = weight("alpha", "α, affinity weight", 1.0)
    dispersion: float = weight("beta", "β, dispersion weight", 1.0)
    compactness: float = weight("gamma", "γ, compactness weight", 0.3)


class Moda(Method):
    name = "moda"
    label = "MODA"
    Weights = ModaWeights

    def terms(self, config: MethodSettings) -> dict[str, bool]:
        return {"ce": True, **dict.fromkeys(MODULAR_TERMS, True)}

    def start(self, config: MethodSettings, model: nn.Module, network: nn.Module,
              autocast: ContextManager) -> StepFunction:
        w, nonnegative = cast(ModaWeights, self.weights(config)), nonnegative_points(model)  # its Weights

        def step(x: torch.Tensor, y: torch.Tensor) -> Step:
            with autocast:
                logits, activations, _ = network(x)
            ce = F.cross_entropy(logits.float(), y)
            affinity, dispersion, compactness = modular_losses(activations, y, nonnegative=nonnegative)
            loss = ce + w.affinity * affinity + w.dispersion * dispersion + w.compactness * compactness
            return Step(logits, loss, {"ce": ce, "affinity": affinity, "dispersion": dispersion,
                                       "compactness": compactness})
        return step
