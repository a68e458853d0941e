"""Decomposition: per-class activation rates → per-class unit masks (DESIGN.md §1.3).

``rate[point][c, u]`` is the fraction of class-c training samples for which unit u fires (for a conv
map: whose mean |activation| over H,W is non-zero), measured in eval mode without augmentation.
Unit u belongs to class c's module at a point iff ``rate ≥ τ``. A class that keeps fewer than
``max(1, ⌊0.005·N⌋)`` units at a point gets its top-k units by rate instead, with k the larger of
that floor and the most units any class keeps there.

Results live in the run folder as ``rates.safetensors`` and ``masks-tau0.90.safetensors`` keyed by
point name (for ``RUN@EPOCH``: under ``checkpoints/epoch-NNNN/``), tagged with a fingerprint of the
weights they were computed from, so a stale file is recomputed rather than trusted.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from moda_core import distributed, runs
from moda_core.activations import modular_points, record_activations
from moda_core.data import Split
from moda_core.errors import ModaError

RATES_FILE = "rates.safetensors"
DEFAULT_TAU = 0.9


def masks_file(tau: float) -> str:
    return f"masks-tau{tau:.2f}.safetensors"


@dataclass
class Decomposition:
    """Rates (float) and masks (bool), each ``point name → (num_classes, num_units)``."""

    rates: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    tau: float
    class_counts: list[int]

    @property
    def points(self) -> list[str]:
        return list(self.rates)

    @property
    def num_classes(self) -> int:
        return len(self.class_counts)

    def kept_units(self) -> dict[str, list[int]]:
        """Units each class keeps, per point (class order)."""
        return {p: m.sum(1).tolist() for p, m in self.masks.items()}


def check_tau(tau: float) -> float:
    tau = float(tau)
    if not 0.0 <= tau <= 1.0 or math.isnan(tau):
        raise ModaError(f"threshold tau must be in [0, 1], got {tau}")
    return tau


@torch.no_grad()
def activation_rates(model: nn.Module, split: Split, num_classes: int, batch_size: int = 500,
                     progress: Callable[[int, int], None] | None = None) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Per-class firing rates at every modular point, over ``split`` in eval mode (no augmentation).

    Under torchrun each rank counts a strided shard of the samples and the counts are summed over
    ranks, so the rates equal a single-process pass exactly (the counts are integers).
    """
    points = modular_points(model)
    ctx = distributed.context()
    class_counts = class_counts_of(split, num_classes)
    counts: dict[str, torch.Tensor] = {}
    was_training = model.training
    model.eval()
    shard = torch.arange(ctx.rank, len(split), ctx.world_size, device=split.labels.device)
    steps = math.ceil(len(shard) / batch_size)
    try:
        with record_activations(model, points, detach=True) as recorder:
            for step in range(steps):
                x, y = split.batch(shard[step * batch_size:(step + 1) * batch_size])
                model(x)
                onehot = (y[:, None] == torch.arange(num_classes, device=y.device)).float()
                for point, activation in zip(points, recorder.values()):
                    fired = units_firing(activation)
                    update = onehot.T @ fired.float()
                    counts[point] = counts[point] + update if point in counts else update
                if progress:
                    progress(step + 1, steps)
    finally:
        model.train(was_training)
    if ctx.active:
        packed = torch.cat([counts[p].flatten() for p in points])
        distributed.all_reduce_sum(packed, ctx)  # one collective for all points
        sizes = [counts[p].numel() for p in points]
        counts = {p: chunk.view_as(counts[p]) for p, chunk in zip(points, packed.split(sizes))}
    denominator = torch.tensor(class_counts, dtype=torch.float32, device=split.labels.device)[:, None]
    return {p: (c / denominator).cpu() for p, c in counts.items()}, class_counts


def units_firing(activation: torch.Tensor) -> torch.Tensor:
    """B×N bool: which units fire per sample (a conv channel fires when its mean |activation| over
    H,W is non-zero, i.e. when any position is non-zero)."""
    if activation.dim() > 2:
        return activation.flatten(2).abs().amax(2) > 0
    return activation != 0


def class_counts_of(split: Split, num_classes: int) -> list[int]:
    """Samples per class in ``split``; a class without samples, or a label past the model, is an error."""
    counts = torch.bincount(split.labels, minlength=num_classes)
    if len(counts) > num_classes:
        raise ModaError(f"labels go up to {len(counts) - 1} but the model has {num_classes} classes")
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty:
        raise ModaError(f"cannot decompose: no training samples of class(es) {empty}")
    return counts.tolist()


def masks_from_rates(rates: Mapping[str, torch.Tensor], tau: float = DEFAULT_TAU) -> dict[str, torch.Tensor]:
    """Threshold rates at τ, then lift classes below the minimum-unit floor to their top-k units."""
    tau = check_tau(tau)
    masks = {}
    for point, rate in rates.items():
        keep = rate >= tau
        units = rate.shape[1]
        floor = max(1, math.floor(0.005 * units))
        kept = keep.sum(1)
        short = torch.nonzero(kept < floor).flatten()
        if len(short):
            k = max(floor, int(kept.max()))
            order = torch.sort(rate[short], dim=1, descending=True, stable=True).indices[:, :k]
            lifted = torch.zeros(len(short), units, dtype=torch.bool)
            lifted.scatter_(1, order, True)
            keep[short] = lifted
        masks[point] = keep
    return masks


def weights_fingerprint(weights_file: str | Path) -> str:
    digest = hashlib.sha256()
    with open(weights_file, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def decomposition_dir(run: runs.Run) -> Path:
    """Where a run's decomposition files live: the run folder, or its checkpoint's subfolder."""
    if run.spec == str(run.path):
        return run.path
    return run.path / runs.CHECKPOINTS / f"epoch-{run.epoch:04d}"


def _weights_file(run: runs.Run) -> Path:
    return run.path / runs.MODEL if run.spec == str(run.path) else runs.checkpoint_path(run.path, run.epoch)


def load_decomposition(run: runs.Run, tau: float = DEFAULT_TAU, save: bool = True) -> Decomposition | None:
    """The stored decomposition of ``run`` at τ, or None if there is none for these exact weights.

    Masks for a τ not stored yet come from the stored rates, and are saved unless ``save`` is False."""
    tau = check_tau(tau)
    folder = decomposition_dir(run)
    if not (folder / RATES_FILE).exists():
        return None
    rates, meta = runs.load_tensors(folder / RATES_FILE)
    if meta.get("weights") != weights_fingerprint(_weights_file(run)):
        return None
    points = modular_points(run.model)
    if list(json.loads(meta.get("points", "[]"))) != points:
        return None
    rates = {p: rates[p] for p in points}
    class_counts = json.loads(meta["class_counts"])
    if (folder / masks_file(tau)).exists():
        masks, mask_meta = runs.load_tensors(folder / masks_file(tau))
        if mask_meta.get("weights") == meta.get("weights") and set(masks) == set(points):
            return Decomposition(rates, {p: masks[p].bool() for p in points}, tau, class_counts)
    masks = masks_from_rates(rates, tau)
    if save:
        runs.save_tensors(folder / masks_file(tau), masks, {"weights": meta["weights"], "tau": f"{tau:.2f}"})
    return Decomposition(rates, masks, tau, class_counts)


def decompose(run: runs.Run, tau: float = DEFAULT_TAU, progress: Callable[[int, int], None] | None = None,
              recompute: bool = False, save: bool = True) -> Decomposition:
    """Decomposition of a loaded run at τ: read from the run folder if current, else computed (and saved)."""
    tau = check_tau(tau)
    if not recompute:
        stored = load_decomposition(run, tau, save)
        if stored is not None:
            return stored
    data = runs.run_dataset(run)
    if run.model.arch.get("mwt"):  # the MwT baseline decomposes by its masks, not by activations
        from moda_core.baselines.mwt import mask_rates

        rates, class_counts = mask_rates(run.model, data.train, data.num_classes, progress=progress)
    else:
        rates, class_counts = activation_rates(run.model, data.train, data.num_classes, progress=progress)
    masks = masks_from_rates(rates, tau)
    if save and distributed.context().is_main:
        folder = decomposition_dir(run)
        fingerprint = weights_fingerprint(_weights_file(run))
        meta = {"weights": fingerprint, "points": json.dumps(list(rates)), "class_counts": json.dumps(class_counts)}
        runs.save_tensors(folder / RATES_FILE, rates, meta)
        runs.save_tensors(folder / masks_file(tau), masks, {"weights": fingerprint, "tau": f"{tau:.2f}"})
    distributed.barrier(distributed.context())
    return Decomposition(rates, masks, tau, class_counts)
