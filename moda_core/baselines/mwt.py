"""MwT baseline — "Modularizing while Training" (Qi et al., ICSE 2024), written from its description.

After the batch norm of every conv layer except the first, a per-sample, per-channel mask in [0, 1)
multiplies the output. The mask comes from a small generator on the layer's input:
global average pool → Linear → ReLU → Linear → tanh → ReLU. Training adds, per gated layer and then
averaged over layers, ``α·(1 − mean cosine similarity of same-label masks) + β·(mean cosine
similarity of different-label masks)`` to cross-entropy (α = 0.5, β = 1.5). Decomposition is
kernel-level: a channel belongs to class c's module if its mask is > 0 for at least τ = 90% of
class-c training samples; fully-connected layers stay whole.

Here the gates sit on our zoo blocks (``ConvUnit.gate`` etc.), so a channel's mask gates exactly one
of our activation points, and MwT modules come out in our mask format: composition, overlap and
accuracy are measured with our own code, and the numbers compare directly with MODA's. Choices the
description leaves open, made here: the generator's hidden width is ``max(16, channels // 4)``; its
last bias starts at 1 so that masks start open; in a residual block the second gate acts on the sum
after the shortcut add (the point our decomposition reads), the downsample shortcut has no gate of
its own; the first conv of a model (the stem) has none, as in the description.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from moda_core.data import Split
from moda_core.errors import ModaError
from moda_core.losses import modular_losses
from moda_core.models.base import ZooNet
from moda_core.models.blocks import BasicBlock, ConvUnit, PlainConvUnit

ALPHA, BETA = 0.5, 1.5


class MaskGenerator(nn.Module):
    """Input feature map B×C_in×H×W → mask B×C_out in [0, 1)."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or max(16, out_channels // 4)
        self.fc1 = nn.Linear(in_channels, hidden)
        self.fc2 = nn.Linear(hidden, out_channels)
        nn.init.constant_(self.fc2.bias, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # functional ReLUs on purpose: an nn.ReLU here would count as a modular activation point
        pooled = x.mean(dim=(2, 3)) if x.dim() == 4 else x
        return F.relu(torch.tanh(self.fc2(F.relu(self.fc1(pooled)))))

    def sliced(self, inputs: torch.Tensor, outputs: torch.Tensor) -> "MaskGenerator":
        """The generator of a composed unit: kept input channels in, kept output channels out."""
        new = MaskGenerator.__new__(MaskGenerator)
        nn.Module.__init__(new)
        new.fc1 = nn.Linear(len(inputs), self.fc1.out_features).to(self.fc1.weight)
        new.fc2 = nn.Linear(self.fc2.in_features, len(outputs)).to(self.fc2.weight)
        with torch.no_grad():
            new.fc1.weight.copy_(self.fc1.weight[:, inputs])
            new.fc1.bias.copy_(self.fc1.bias)
            new.fc2.weight.copy_(self.fc2.weight[outputs])
            new.fc2.bias.copy_(self.fc2.bias[outputs])
        return new


    def shared_parameters(self, input_gram: torch.Tensor, output_gram: torch.Tensor) -> torch.Tensor:
        """Class×class count of this generator's parameters that two modules both keep, from the
        counts of shared kept input channels (``input_gram``) and output channels (``output_gram``):
        fc1 keeps the kept inputs' columns and every hidden unit, fc2 the kept outputs' rows."""
        hidden = self.fc1.out_features
        return input_gram * hidden + hidden + output_gram * (hidden + 1)


def gated_points(model: nn.Module) -> dict[str, nn.Module]:
    """Activation point name → the mask generator that gates it."""
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if isinstance(module, (ConvUnit, PlainConvUnit)) and module.gate is not None:
            found[f"{name}.relu"] = module.gate
        elif isinstance(module, BasicBlock):
            for index in (1, 2):
                gate = getattr(module, f"gate{index}")
                if gate is not None:
                    found[f"{name}.relu{index}"] = gate
    return found


def to_mwt(model: ZooNet) -> ZooNet:
    """Add MwT mask generators to a zoo model in place (every conv after the first); returns it."""
    first = True
    for module in model.modules():
        if isinstance(module, (ConvUnit, PlainConvUnit)):
            if not first:
                module.gate = MaskGenerator(module.conv.in_channels, module.conv.out_channels)
            first = False
        elif isinstance(module, BasicBlock):
            module.gate1 = MaskGenerator(module.conv1.in_channels, module.conv1.out_channels)
            module.gate2 = MaskGenerator(module.conv1.in_channels, module.conv2.out_channels)
            first = False
    if not gated_points(model):
        raise ModaError(f"model {model.arch.get('name')} has no conv layer after the first: MwT needs conv layers")
    model.arch = {**model.arch, "mwt": True}
    return model


@contextmanager
def record_masks(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Collect every gate's mask of the latest forward pass, keyed by the point it gates."""
    masks: dict[str, torch.Tensor] = {}
    handles = [gate.register_forward_hook(lambda _m, _i, out, point=point: masks.__setitem__(point, out))
               for point, gate in gated_points(model).items()]
    try:
        yield masks
    finally:
        for handle in handles:
            handle.remove()


def mwt_loss(masks: list[torch.Tensor], labels: torch.Tensor, alpha: float = ALPHA,
             beta: float = BETA) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(total, affinity, dispersion)``: the same-label and different-label cosine terms of MODA's
    ``modular_losses`` applied to the masks (B×C each), weighted by α and β."""
    affinity, dispersion, _ = modular_losses(masks, labels)
    return alpha * affinity + beta * dispersion, affinity, dispersion


@torch.no_grad()
def mask_rates(model: nn.Module, split: Split, num_classes: int, batch_size: int = 500,
               progress: Callable[[int, int], None] | None = None) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Per class, the fraction of samples whose mask is > 0, per gated channel; 1 for ungated points
    (fully-connected layers and the first conv stay whole)."""
    from moda_core.activations import run_with_cache
    from moda_core.decompose import class_counts_of

    class_counts = class_counts_of(split, num_classes)
    counts: dict[str, torch.Tensor] = {}
    was_training = model.training
    model.eval()
    steps = math.ceil(len(split) / batch_size)
    try:
        _, shapes = run_with_cache(model, split.batch(slice(0, 1))[0])
        with record_masks(model) as masks:
            for step, (x, y) in enumerate(split.batches(batch_size)):
                model(x)
                onehot = (y[:, None] == torch.arange(num_classes, device=y.device)).float()
                for point, mask in masks.items():
                    update = onehot.T @ (mask > 0).float()
                    counts[point] = counts[point] + update if point in counts else update
                if progress:
                    progress(step + 1, steps)
    finally:
        model.train(was_training)
    denominator = torch.tensor(class_counts, dtype=torch.float32)[:, None]
    return ({p: counts[p].cpu() / denominator if p in counts else torch.ones(num_classes, a.shape[1])
             for p, a in shapes.items()}, class_counts)
