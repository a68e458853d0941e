"""The repaired models of module replacement (``moda_core.replace``): a frozen weak model and a frozen single-class
module of a strong model in one ``nn.Module`` with an ``input_shape``, its outputs in the weak model's class order,
so a repaired model is evaluated, saved and exported (``moda_core.export.export_module``) like a composed module.
One class per strategy: ``CalibratedModel`` (a K×K calibration layer over the weak logits and the module's logit),
``NormalizedModel`` (the weak softmax with the target's probability replaced) and ``AffineModel`` (only the target's
logit changes). ``check_replacement`` is what every strategy checks first."""
from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from moda_core.data import check_classes
from moda_core.errors import ModaError
from moda_core.model_attrs import input_shape_of


def check_replacement(weak: nn.Module, strong: nn.Module, weak_class: int, strong_class: int) -> None:
    """Same input shape, and both class indices inside their model's logits."""
    weak_shape, strong_shape = input_shape_of(weak), input_shape_of(strong)
    if weak_shape != strong_shape:
        raise ModaError(f"the weak model takes inputs of shape {weak_shape} but the strong model takes "
                        f"{strong_shape}: a module can only replace a class of a model with the same input")
    check_classes([weak_class], _num_classes(weak), "the weak model (--weak-class)")
    check_classes([strong_class], _num_classes(strong), "the strong model (--strong-class)")


def _num_classes(model: nn.Module) -> int:
    """How many logits ``model`` gives."""
    arch = getattr(model, "arch", None)
    if arch:
        return arch["num_classes"]
    with torch.no_grad():  # a model from outside the zoo: count its outputs
        return model.eval()(torch.zeros(1, *input_shape_of(model), device=device_of(model))).shape[1]


def _frozen(module: nn.Module) -> nn.Module:
    """``module`` with ``requires_grad`` off, in eval mode."""
    for param in module.parameters():
        param.requires_grad_(False)
    return module.eval()


class RepairedModel(nn.Module):
    """A frozen weak model and a frozen single-class module of a strong model; ``target`` is the
    position of the replaced class in the weak model's logits, ``classes`` their original ids."""

    others: torch.Tensor  # a buffer: the weak model's logits other than the target's

    def __init__(self, weak: nn.Module, module: nn.Module, target: int, classes: Sequence[int] | None = None) -> None:
        super().__init__()
        self.weak = _frozen(copy.deepcopy(weak))  # a copy: repairing never touches the caller's model
        self.module = _frozen(module)
        self.target = target
        self.num_classes = _num_classes(weak)
        self.classes = list(classes) if classes is not None else list(range(self.num_classes))
        self.input_shape = input_shape_of(weak)
        self.register_buffer("others", torch.tensor([k for k in range(self.num_classes) if k != target],
                                                    dtype=torch.long, device=device_of(weak)))

    def train(self, mode: bool = True) -> "RepairedModel":
        super().train(mode)
        self.weak.eval()  # frozen parts never update batch-norm statistics
        self.module.eval()
        return self


def device_of(module: nn.Module) -> torch.device:
    """The device of ``module``'s parameters."""
    return next(module.parameters()).device


class CalibratedModel(RepairedModel):
    """Logits ``calibration([weak logits without the target, module logit])`` in the weak class order."""

    def __init__(self, weak: nn.Module, module: nn.Module, target: int, classes: Sequence[int] | None = None) -> None:
        super().__init__(weak, module, target, classes)
        k = self.num_classes
        self.calibration = nn.Linear(k, k, device=device_of(weak))
        # start as the swap: output j reads weak logit j (j ≠ target), the target output reads the module
        start = torch.zeros(k, k)
        start[self.others.cpu(), torch.arange(k - 1)] = 1.0
        start[target, k - 1] = 1.0
        with torch.no_grad():
            self.calibration.weight.copy_(start)
            self.calibration.bias.zero_()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The calibration layer's input: K−1 weak logits (target left out, order kept), module logit."""
        return torch.cat([self.weak(x).index_select(1, self.others), self.module(x)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.calibration(self.features(x))


class NormalizedModel(RepairedModel):
    """Scores: the weak softmax, with the target's probability replaced by the module output
    min-max normalised to [``low``, ``high``] (measured on the training data) and clipped to [0, 1]."""

    low: torch.Tensor  # buffers
    high: torch.Tensor
    is_target: torch.Tensor

    def __init__(self, weak: nn.Module, module: nn.Module, target: int, low: float, high: float,
                 classes: Sequence[int] | None = None) -> None:
        super().__init__(weak, module, target, classes)
        if not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise ModaError(f"cannot normalise the module's output: it spans [{low}, {high}] on the training data "
                            "(constant or not finite); the module does not tell samples apart")
        device = device_of(weak)
        self.register_buffer("low", torch.tensor(low, device=device))
        self.register_buffer("high", torch.tensor(high, device=device))
        self.register_buffer("is_target", torch.arange(self.num_classes, device=device) == target)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = F.softmax(self.weak(x), dim=1)
        score = ((self.module(x) - self.low) / (self.high - self.low)).clamp(0.0, 1.0)
        return torch.where(self.is_target, score, probabilities)


class AffineModel(RepairedModel):
    """Logits: the weak model's, untouched, except the target's, which becomes
    ``scale · s + weak_scale · w + bias`` of the module's logit ``s`` and the weak model's own target
    logit ``w`` (three scalars). Non-target logits are bit-identical to the weak model's."""

    is_target: torch.Tensor  # a buffer

    def __init__(self, weak: nn.Module, module: nn.Module, target: int, scale: float = 1.0,
                 weak_scale: float = 0.0, bias: float = 0.0, classes: Sequence[int] | None = None) -> None:
        super().__init__(weak, module, target, classes)
        device = device_of(weak)
        self.scale = nn.Parameter(torch.tensor(float(scale), device=device))
        self.weak_scale = nn.Parameter(torch.tensor(float(weak_scale), device=device))
        self.bias = nn.Parameter(torch.tensor(float(bias), device=device))
        self.register_buffer("is_target", torch.arange(self.num_classes, device=device) == target)

    def combine(self, weak_logits: torch.Tensor, module_logit: torch.Tensor) -> torch.Tensor:
        """The output from precomputed weak logits (N×K) and module logits (N×1)."""
        own = weak_logits[:, self.target:self.target + 1]
        return torch.where(self.is_target, self.scale * module_logit + self.weak_scale * own + self.bias,
                           weak_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(self.weak(x), self.module(x))
