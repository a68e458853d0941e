"""One summary of a decomposition's modules (docs/design.md, Module metrics): the numbers the CLI, the benchmarks and
the dashboard show, computed here once.

``module_summary(model, masks)`` gives per-class module sizes, their mean, the class×class weight
overlap matrix (fractions of the full model's parameters; the diagonal is the sizes), the mean
pairwise overlap, and the same overlap split by layer (block name → class×class fractions, which
sum to the whole matrix). Everything comes from the analytic counts of ``overlap.overlap_counts``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from moda_core.activations import point_units
from moda_core.compose import parameter_count
from moda_core.model_attrs import arch_of
from moda_core.overlap import overlap_counts


def mean_off_diagonal(matrix: torch.Tensor) -> float:
    """Mean over class pairs i<j (the mean pairwise overlap); NaN with a single class."""
    k = matrix.shape[0]
    if k < 2:
        return float("nan")
    upper = torch.triu(torch.ones(k, k, dtype=torch.bool), diagonal=1)
    return matrix[upper].mean().item()


@dataclass(frozen=True)
class ModuleSummary:
    """Module sizes and weight overlaps of one decomposition (all fractions of ``params``)."""

    sizes: list[float]  # per class: parameters of its single-class module ÷ full-model parameters
    mean_size: float
    overlap: torch.Tensor  # class×class float64, fraction of full-model parameters both modules keep
    mean_overlap: float  # mean over class pairs i<j; NaN with one class
    overlap_by_layer: dict[str, torch.Tensor]  # block name → class×class fractions; they sum to ``overlap``
    params: int  # parameters of the full model

    @property
    def mean_overlap_by_layer(self) -> dict[str, float]:
        """Block name → its share of the mean pairwise overlap (these sum to ``mean_overlap``)."""
        return {name: mean_off_diagonal(matrix) for name, matrix in self.overlap_by_layer.items()}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able numbers (lists instead of tensors)."""
        return {"module_size": {str(c): s for c, s in enumerate(self.sizes)}, "mean_module_size": self.mean_size,
                "overlap": self.overlap.tolist(), "mean_overlap": self.mean_overlap,
                "overlap_by_layer": {n: m.tolist() for n, m in self.overlap_by_layer.items()},
                "params": self.params}


def module_summary(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> ModuleSummary:
    """Sizes, mean size, overlap matrix, mean overlap and overlap by layer of ``masks`` on ``model``."""
    params = parameter_count(model)
    counts = overlap_counts(model, masks, by_layer=True)
    # the same sum as overlap_counts(model, masks) / params
    overlap = sum(counts.values(), torch.zeros((), dtype=torch.float64)) / params
    layers = {name: layer / params for name, layer in counts.items()}
    sizes = overlap.diagonal().tolist()
    return ModuleSummary(sizes=sizes, mean_size=sum(sizes) / len(sizes), overlap=overlap,
                         mean_overlap=mean_off_diagonal(overlap), overlap_by_layer=layers, params=params)


def module_floor(model: nn.Module) -> float:
    """The share of the full model's parameters that every single-class module keeps whatever its masks: the
    parameters no unit mask can drop (a ViT's attention, norms and embeddings, which the composer keeps whole;
    a CNN's logit bias), counted as the module size of masks that keep no unit at all. A module's size never
    falls below it, so a ViT's modules stay near it at any τ."""
    params = parameter_count(model)
    classes = int(arch_of(model)["num_classes"])
    empty = {point: torch.zeros(classes, units, dtype=torch.bool) for point, units in point_units(model).items()}
    return float(overlap_counts(model, empty).diagonal().min()) / params


def fully_connected_share(model: str, width: float) -> tuple[int, int] | None:
    """(parameters in fully connected layers, all parameters) of the zoo model ``model`` at ``width``, built for ten
    classes of 28×28 digits (as the comparison table trains it): the share no unit mask of a convolution can drop
    from a composed module. None for a model that is not the zoo's (a model of one's own is not built here)."""
    from moda_core.models import MODELS, build_model

    if model not in MODELS:
        return None
    net = build_model(model, width=float(width))
    linear = sum(p.numel() for m in net.modules() if isinstance(m, nn.Linear) for p in m.parameters(recurse=False))
    return linear, sum(p.numel() for p in net.parameters())
