"""The three modular objectives of MODA on ReLU activations (docs/design.md, Modular objectives).

For each point, a conv map B×C×H×W is reduced to B×C by mean |a| over H,W; an FC output B×N is used
as it is. Rows are normalised to unit L2 norm and compared by cosine similarity over pairs i<j:

- affinity    = 1 − mean over points of the mean similarity of same-label pairs
- dispersion  = mean over points of the mean similarity of different-label pairs
- compactness = mean over points of the mean absolute activation

A batch with no same-label pair gives affinity 0 (the term is skipped, not NaN); likewise dispersion
with no different-label pair. All sums over pairs come from one B×B Gram matrix for all points: no loop
over samples or pairs, and no host synchronisation.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def unit_vectors(activation: torch.Tensor, nonnegative: bool = False) -> torch.Tensor:
    """Per-sample unit vector: conv maps reduced by mean |a| over the spatial axes, as float32.

    ``nonnegative`` (ReLU outputs) skips the ``abs``: the same values and gradients, one pass fewer
    over the largest tensors of the step. The mean is a float32 sum divided afterwards: the sum's gradient
    is a broadcast view of the B×C gradient, which autograd adds to the map's other gradient in one pass
    (a mean's gradient is first written out at the map's full size), and a half-precision or channels-last
    map is read as it is, never copied.
    """
    if activation.dim() > 2:
        spatial = tuple(range(2, activation.dim()))
        size = activation[0, 0].numel()
        magnitude = activation if nonnegative else activation.abs()
        # (a float32 sum asked of a float32 map takes a slower path than a plain sum: about 1.5× on a CPU)
        summed = magnitude.sum(spatial) if magnitude.dtype == torch.float32 else magnitude.sum(spatial,
                                                                                              dtype=torch.float32)
        return summed / size
    return activation.float()


def modular_losses(activations: Sequence[torch.Tensor], labels: torch.Tensor,
                   nonnegative: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(affinity, dispersion, compactness)`` scalar tensors for one batch.

    Pass ``nonnegative=True`` only for activations known to be ≥ 0 (ReLU outputs, as in training).
    """
    if len(activations) == 0:
        raise ValueError("modular_losses needs at least one activation tensor")
    labels = labels.reshape(-1)
    batch = labels.numel()
    same = (labels[:, None] == labels[None, :]).float()
    # pairs i<j: off-diagonal entries of the symmetric matrices, halved
    same_pairs = (same.sum() - batch) / 2
    all_pairs = torch.tensor(batch * (batch - 1) / 2, device=labels.device)
    diff_pairs = all_pairs - same_pairs

    # Every point's pairs are the same (they depend on the labels only), so the mean over points of
    # per-point pair means is the pair mean of the summed Gram matrices, and Σ_l V_l V_lᵀ is one
    # matrix product of the points' unit vectors laid side by side: one Gram for all points.
    normed, compact = [], []
    for activation in activations:
        vectors = unit_vectors(activation, nonnegative)
        if vectors.shape[0] != batch:
            raise ValueError(f"activation batch size {vectors.shape[0]} != {batch} labels")
        normed.append(F.normalize(vectors, dim=1))
        compact.append((vectors if nonnegative else vectors.abs()).mean())
    stacked = torch.cat(normed, dim=1)
    gram = stacked @ stacked.T
    diagonal = gram.diagonal().sum()
    same_sum = ((gram * same).sum() - diagonal) / 2
    all_sum = (gram.sum() - diagonal) / 2
    points = len(activations)

    zero = torch.zeros((), device=labels.device)
    affinity = torch.where(same_pairs > 0, 1 - same_sum / (points * same_pairs.clamp(min=1)), zero)
    dispersion = torch.where(diff_pairs > 0, (all_sum - same_sum) / (points * diff_pairs.clamp(min=1)), zero)
    return affinity, dispersion, torch.stack(compact).mean()
