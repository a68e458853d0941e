"""Decomposition: per-class activation rates → per-class unit masks (docs/design.md, Firing rule and floor).

``rate[point][c, u]`` is the fraction of class-c training samples for which unit u fires (for a conv
map: whose mean |activation| over H,W is non-zero), measured in eval mode without augmentation.
Unit u belongs to class c's module at a point iff ``rate ≥ τ``. A class that keeps fewer than
``max(1, ⌊0.005·N⌋)`` units at a point gets its top-k units by rate instead, with k the larger of
that floor and the most units any class keeps there.

Results live in the run folder as ``rates.safetensors`` and ``masks-tau0.90.safetensors`` keyed by
point name (for ``RUN@EPOCH``: under ``checkpoints/epoch-NNNN/``), tagged with a fingerprint of the
weights they were computed from, so a stale file is recomputed rather than trusted. A masks file is
named by its exact τ (``masks_file``) and stores that τ, which is checked when it is read. When the
run folder cannot be written (a shared or read-only mount), the decomposition is computed in memory
and cached under the user's cache folder (``$XDG_CACHE_HOME/moda-studio``) instead; ``note`` says so.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch
from torch import nn

from moda_core import distributed
from moda_core.activations import modular_points, point_units
from moda_core.config import DEFAULT_TAU
from moda_core.data import Dataset, Split
from moda_core.errors import ModaError
from moda_core.io import load_tensors, save_tensors
from moda_core.methods import METHODS, method_of
from moda_core.methods.base import Firing
from moda_core.model_attrs import arch_of
from moda_core.store.loading import Run, run_dataset
from moda_core.store.names import CHECKPOINTS, MODEL, checkpoint_path

RATES_FILE = "rates.safetensors"


def masks_file(tau: float) -> str:
    """The masks file of exactly this τ: ``masks-tau0.90.safetensors`` when τ is exactly a two-decimal
    number (the name older versions used), else the shortest exact spelling (``masks-tau0.895…``)."""
    tau = float(tau)
    two = f"{tau:.2f}"
    return f"masks-tau{two if float(two) == tau else repr(tau)}.safetensors"


def _stored_tau_matches(meta: dict[str, str], tau: float) -> bool:
    try:
        return float(meta.get("tau", "nan")) == tau
    except ValueError:
        return False


@dataclass
class Decomposition:
    """Rates (float) and masks (bool), each ``point name → (num_classes, num_units)``."""

    rates: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    tau: float
    class_counts: list[int]
    note: str | None = None  # where it was kept, when not in the run folder (e.g. a read-only folder)

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
                     progress: Callable[[int, int], None] | None = None,
                     firing: Callable[[nn.Module], Firing] | None = None,
                     ) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Per-class firing rates at every modular point, over ``split`` in eval mode (no augmentation).

    ``firing`` (default: standard/MODA's, a unit fires when its activation is non-zero) is the training
    method's ``firing``: for a batch it says which units fired per sample, at every modular point (MwT
    reports its ungated layers as always firing). The passes are pure: the model is not switched to eval
    mode or hooked (they run on eval-mode views of its tensors).
    Under torchrun each rank counts a strided shard of the samples and the counts are summed over
    ranks, so the rates equal a single-process pass exactly (the counts are integers).
    """
    points = modular_points(model)
    ctx = distributed.context()
    class_counts = class_counts_of(split, num_classes)
    counts: dict[str, torch.Tensor] = {}
    shard = torch.arange(ctx.rank, len(split), ctx.world_size, device=split.labels.device)
    steps = math.ceil(len(shard) / batch_size)
    read = (firing or METHODS["moda"].firing)(model)
    with torch.no_grad():
        for step in range(steps):
            x, y = split.batch(shard[step * batch_size:(step + 1) * batch_size])
            onehot = (y[:, None] == torch.arange(num_classes, device=y.device)).float()
            fired = read(x)
            for point in points:
                update = onehot.T @ fired[point].float()
                counts[point] = counts[point] + update if point in counts else update
            if progress:
                progress(step + 1, steps)
    if ctx.active:
        packed = torch.cat([counts[p].flatten() for p in points])
        distributed.all_reduce_sum(packed, ctx)  # one collective for all points
        sizes = [counts[p].numel() for p in points]
        counts = {p: chunk.view_as(counts[p]) for p, chunk in zip(points, packed.split(sizes), strict=True)}
    denominator = torch.tensor(class_counts, dtype=torch.float32, device=split.labels.device)[:, None]
    return {p: (c / denominator).cpu() for p, c in counts.items()}, class_counts


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


def decomposition_dir(run: Run) -> Path:
    """Where a run's decomposition files live: the run folder, or its checkpoint's subfolder."""
    if run.ref.epoch is None:
        return run.path
    return run.path / CHECKPOINTS / f"epoch-{run.epoch:04d}"


def _weights_file(run: Run) -> Path:
    if run.weights_path is not None:
        return run.weights_path
    return run.path / MODEL if run.ref.epoch is None else checkpoint_path(run.path, run.epoch)


def cache_root() -> Path:
    """The user's cache folder for decompositions of runs whose folder cannot be written."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "moda-studio" / "decompositions"


def _cache_dir(run: Run, fingerprint: str) -> Path:
    """The cache entry of these exact weights and data set (content-addressed, so copies share it)."""
    data = json.dumps([run.config.get("data"), (run.config.get("train") or {}).get("classes")], sort_keys=True)
    return cache_root() / f"{run.name}-{fingerprint}-{hashlib.sha256(data.encode()).hexdigest()[:8]}"


def _save_somewhere(run: Run, fingerprint: str, files: dict[str, tuple[dict, dict]]) -> str | None:
    """Save ``files`` (name → (tensors, metadata)) in the run's decomposition folder; if that folder
    cannot be written, in the user cache; if neither can, nowhere. Returns a note unless saved in the run."""
    folder = decomposition_dir(run)
    try:
        for name, (tensors, meta) in files.items():
            save_tensors(folder / name, tensors, meta, inside=run.path)  # never written outside the run folder
        return None
    except OSError as error:
        reason = f"run folder {run.path} is not writable ({error.strerror or error})"
    except ModaError as error:  # a symbolic link on the way, or the folder is gone
        reason = f"nothing was written in run folder {run.path} ({error})"
    cache = _cache_dir(run, fingerprint)
    try:
        for name, (tensors, meta) in files.items():
            save_tensors(cache / name, tensors, meta)
        return f"{reason}: the decomposition was computed in memory and cached in {cache}"
    except OSError:
        return f"{reason}: the decomposition was computed in memory (not saved)"


MAX_META_CHARS = 1 << 16  # a stored point list or class counts: a few kilobytes


class StoredProblem(Exception):
    """A stored decomposition that must not be used (the reason says why); it is recomputed instead."""


def _json_meta(meta: Mapping[str, str], key: str) -> object:
    """A JSON value of a stored file's metadata, of bounded size and depth; ``StoredProblem`` otherwise."""
    text = meta.get(key)
    if not isinstance(text, str) or len(text) > MAX_META_CHARS:
        raise StoredProblem(f"its {key} are missing or too long")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise StoredProblem(f"its {key} are not readable JSON") from None


def _checked_rates(rates: Mapping[str, torch.Tensor], meta: Mapping[str, str], units: Mapping[str, int],
                   num_classes: int) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Stored rates as untrusted input: the model's points, class × unit float tensors of the right shapes, every
    rate a share of its class's sample count (finite, in [0, 1]), the counts present and positive."""
    counts = _json_meta(meta, "class_counts")
    if not (isinstance(counts, list) and len(counts) == num_classes
            and all(type(c) is int and 0 < c <= 10**9 for c in counts)):
        raise StoredProblem(f"its class_counts are not {num_classes} positive counts")
    checked = {}
    for point, count in units.items():
        rate = rates.get(point)
        if rate is None or not rate.is_floating_point() or tuple(rate.shape) != (num_classes, count):
            raise StoredProblem(f"its rates of point {point!r} are not a float {num_classes} × {count} table")
        rate = rate.float()
        samples = rate * torch.tensor(counts, dtype=torch.float32)[:, None]
        if not bool(torch.isfinite(rate).all()) or float(rate.min()) < 0 or float(rate.max()) > 1 \
                or float((samples - samples.round()).abs().max()) > 1e-2:
            raise StoredProblem(f"its rates of point {point!r} are not shares of the class counts in [0, 1]")
        checked[point] = rate
    return checked, counts


def _read_from(folder: Path, tau: float, fingerprint: str, units: Mapping[str, int],
               num_classes: int) -> tuple[dict, list[int], dict | None] | None:
    """Rates, class counts and (if stored for exactly this τ, and what the rates give) masks from ``folder``; None if
    absent or stale; ``StoredProblem`` if present but not usable."""
    if not (folder / RATES_FILE).exists():
        return None
    try:
        rates, meta = load_tensors(folder / RATES_FILE)
    except ModaError as error:
        raise StoredProblem(str(error)) from None
    if meta.get("weights") != fingerprint:
        return None
    if _json_meta(meta, "points") != list(units):
        return None  # from another version of the model's points
    rates, class_counts = _checked_rates(rates, meta, units, num_classes)
    masks = None
    if (folder / masks_file(tau)).exists():
        try:
            stored, mask_meta = load_tensors(folder / masks_file(tau))
        except ModaError:
            stored, mask_meta = {}, {}
        derived = masks_from_rates(rates, tau)
        if mask_meta.get("weights") == fingerprint and _stored_tau_matches(mask_meta, tau) and \
                all(p in stored and stored[p].dtype == torch.bool and torch.equal(stored[p], derived[p])
                    for p in units):
            masks = derived  # a masks file is only trusted when it says what the rates say
    return rates, class_counts, masks


def load_decomposition(run: Run, tau: float = DEFAULT_TAU, save: bool = True) -> Decomposition | None:
    """The stored decomposition of ``run`` at τ (in its folder, or in the user cache for a read-only
    folder), or None if there is none for these exact weights.

    Masks for a τ not stored yet come from the stored rates, and are saved unless ``save`` is False."""
    tau = check_tau(tau)
    try:
        return _load_stored(run, tau, save, weights_fingerprint(_weights_file(run)))
    except StoredProblem:
        return None


def _load_stored(run: Run, tau: float, save: bool, fingerprint: str) -> Decomposition | None:
    """``load_decomposition`` for weights whose fingerprint the caller already has."""
    units, problems = point_units(run.model), []
    for folder, note in ((decomposition_dir(run), None),
                         (_cache_dir(run, fingerprint), "read from the user cache")):
        try:
            found = _read_from(folder, tau, fingerprint, units, arch_of(run.model)["num_classes"])
        except StoredProblem as problem:
            problems.append(f"the stored decomposition in {folder} was not used ({problem})")
            continue
        if found is None:
            continue
        rates, class_counts, masks = found
        if note is not None:
            note = f"the decomposition of {run.spec} was {note} {folder} (its run folder was not writable)"
        if masks is None:
            masks = masks_from_rates(rates, tau)
            if save:
                mask_meta = {"weights": fingerprint, "tau": repr(tau)}
                if note is None:  # found in the run folder
                    note = _save_somewhere(run, fingerprint, {masks_file(tau): (masks, mask_meta)})
                else:
                    try:
                        save_tensors(folder / masks_file(tau), masks, mask_meta)
                    except OSError:
                        pass  # the cache is only a cache
        return Decomposition(rates, masks, tau, class_counts, note)
    if problems:
        raise StoredProblem("; ".join(problems))
    return None


def decompose(run: Run, tau: float = DEFAULT_TAU, progress: Callable[[int, int], None] | None = None,
              recompute: bool = False, save: bool = True, data: Dataset | None = None) -> Decomposition:
    """Decomposition of a loaded run at τ: read from the run folder if current, else computed (and saved)
    over its training data (``data``: the run's data set when the caller has it loaded already)."""
    tau = check_tau(tau)
    fingerprint, problem = None, None  # hashed at most once: to look for stored files, and to label new ones
    if not recompute:
        fingerprint = weights_fingerprint(_weights_file(run))
        try:
            stored = _load_stored(run, tau, save, fingerprint)
        except StoredProblem as error:  # said, then recomputed and saved over it
            stored, problem = None, f"{error}: recomputed"
        if stored is not None:
            return stored
    data = data or run_dataset(run)
    method = method_of(run.config)  # e.g. MwT counts its gates' masks instead of activations
    rates, class_counts = activation_rates(run.model, data.train, data.num_classes, progress=progress,
                                           firing=method.firing)
    masks = masks_from_rates(rates, tau)
    note = None
    if save and distributed.context().is_main:
        fingerprint = fingerprint or weights_fingerprint(_weights_file(run))
        meta = {"weights": fingerprint, "points": json.dumps(list(rates)), "class_counts": json.dumps(class_counts)}
        note = _save_somewhere(run, fingerprint, {RATES_FILE: (rates, meta),
                                                  masks_file(tau): (masks, {"weights": fingerprint, "tau": repr(tau)})})
    distributed.barrier(distributed.context())
    note = "; ".join(n for n in (problem, note) if n) or None
    return Decomposition(rates, masks, tau, class_counts, note)


def class_specificity(rates: torch.Tensor) -> float:
    """How block-diagonal one point's class × unit rates are, without τ: the mean over units of (the unit's highest
    class rate − its mean rate over the other classes). 1 when every unit fires on all the images of one class and
    on none of the others (sorted by class, the heatmap is a block diagonal); 0 when every unit fires alike for
    every class, or never (early layers, standard training)."""
    rates = rates.float()
    classes = rates.shape[0]
    if classes < 2 or rates.shape[1] == 0:
        return 0.0
    top = rates.max(0).values
    others = (rates.sum(0) - top) / (classes - 1)
    return float((top - others).mean())


def most_class_specific_point(rates: Mapping[str, torch.Tensor]) -> str:
    """The activation point whose units are most class-specific (``class_specificity``; the first such point on
    ties): where a heatmap of the rates shows modules as blocks — the first view of a decomposition."""
    if not rates:
        raise ModaError("most_class_specific_point: no activation points to choose from")
    points = list(rates)
    return max(points, key=lambda p: (round(class_specificity(rates[p]), 12), -points.index(p)))


TAU_RANGE = tuple(round(0.5 + 0.01 * step, 2) for step in range(51))  # 0.50, 0.51, …, 1.00: the pages' τ slider


def kept_share_by_tau(rates: Mapping[str, torch.Tensor], taus: Iterable[float] = TAU_RANGE) -> dict[str, list[float]]:
    """Per point: the mean share of its units a class module keeps (``masks_from_rates``, floor included), at
    each τ of ``taus`` in order: how much moving τ changes the modules, layer by layer."""
    taus = [float(tau) for tau in taus]
    shares: dict[str, list[float]] = {point: [] for point in rates}
    for tau in taus:
        for point, mask in masks_from_rates(rates, tau).items():
            shares[point].append(mask.double().mean().item())
    return shares
