"""Two studies over one run, for teaching: how modules form over training, and how the
threshold τ trades module size against the accuracy of composed modules.

- ``training_evolution(run)``: for every periodic checkpoint ``RUN@E`` and the final weights, the mean
  module size, the mean pairwise weight overlap (at τ) and the test accuracy — one row per epoch.
- ``tau_sweep(run)``: for each τ, the mean module size, the mean overlap, and the mean accuracy and
  parameter share of composed 2-class modules on a small seeded sample of class pairs. Activation
  rates do not depend on τ (only the masks do), so they are measured once.

Both work in memory: a stored, current decomposition is read when there is one, and nothing is ever
written (demo runs live in read-only folders). ``progress(done, total)`` is called as work finishes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch

from moda_core import runs
from moda_core.compose import compose_module, parameter_count
from moda_core.data import Dataset
from moda_core.decompose import DEFAULT_TAU, check_tau, decompose, masks_from_rates
from moda_core.errors import ModaError
from moda_core.evaluate import accuracy, predict_logits
from moda_core.metrics import composed_accuracy, subtask_sets
from moda_core.summary import module_summary

Progress = Callable[[int, int], None] | None

EVOLUTION_COLUMNS = ["epoch", "mean_module_size", "mean_overlap", "test_accuracy"]
TAU_COLUMNS = ["tau", "mean_module_size", "mean_overlap", "pair_accuracy", "pair_params_fraction"]
DEFAULT_TAUS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
DEFAULT_PAIRS = 6  # class pairs sampled (seeded) by tau_sweep when none are given


def _as_run(run_or_spec: runs.Run | str | Path) -> runs.Run:
    return run_or_spec if isinstance(run_or_spec, runs.Run) else runs.load_run(run_or_spec)


def run_rates(run: runs.Run, data: Dataset | None = None,
              progress: Progress = None) -> dict[str, torch.Tensor]:
    """Activation rates of a loaded run: the stored ones when current for these weights, else measured
    over its training data (in memory; nothing is saved)."""
    return decompose(run, DEFAULT_TAU, progress=progress, save=False, data=data).rates


def evolution_states(run_dir: str | Path) -> list[tuple[int, str]]:
    """(epoch, spec) of every periodic checkpoint and the final weights, in epoch order; a checkpoint
    of the final epoch is the final weights (one row)."""
    run_dir = Path(run_dir)
    final = runs.summarize_run(run_dir)
    if not final["loadable"]:
        raise ModaError(f"run {run_dir} cannot be loaded: {final['error']}")
    states = {epoch: f"{run_dir}@{epoch}" for epoch in runs.list_checkpoints(run_dir)}
    states[final["epochs_done"]] = str(run_dir)
    return sorted(states.items())


def training_evolution(run_dir_or_run: runs.Run | str | Path, tau: float = DEFAULT_TAU,
                       progress: Progress = None) -> pd.DataFrame:
    """Mean module size, mean pairwise overlap (at ``tau``) and test accuracy per checkpoint epoch.

    One row per periodic checkpoint ``RUN@E`` plus the run's final weights, sorted by epoch
    (columns ``EVOLUTION_COLUMNS``; sizes, overlaps and accuracies are fractions 0–1). A run without
    checkpoints gives one row. ``progress(done, total)`` counts evaluated checkpoints."""
    tau = check_tau(tau)
    path = run_dir_or_run.path if isinstance(run_dir_or_run, runs.Run) else runs.split_run_spec(run_dir_or_run)[0]
    states = evolution_states(path)
    data: Dataset | None = None
    rows = []
    for done, (epoch, spec) in enumerate(states, start=1):
        run = runs.load_run(spec)
        data = data or runs.run_dataset(run)
        summary = module_summary(run.model, masks_from_rates(run_rates(run, data), tau))
        rows.append({"epoch": epoch, "mean_module_size": summary.mean_size, "mean_overlap": summary.mean_overlap,
                     "test_accuracy": accuracy(predict_logits(run.model, data.test), data.test.labels)})
        if progress:
            progress(done, len(states))
    return pd.DataFrame(rows, columns=EVOLUTION_COLUMNS)


def default_pairs(num_classes: int, samples: int = DEFAULT_PAIRS, seed: int = 0) -> list[list[int]]:
    """A seeded sample of class pairs (every pair when there are at most ``samples``)."""
    if num_classes < 2:
        raise ModaError(f"a τ sweep composes class pairs: the run has only {num_classes} class")
    return subtask_sets(num_classes, [2], samples, seed)


def tau_sweep(run: runs.Run | str | Path, taus: Sequence[float] = DEFAULT_TAUS,
              pairs: Sequence[Sequence[int]] | None = None, progress: Progress = None) -> pd.DataFrame:
    """Module size, overlap and composed-pair accuracy for each τ of ``taus`` (columns ``TAU_COLUMNS``).

    ``pair_accuracy`` is the mean over ``pairs`` (default: ``default_pairs``; class indices of the
    model) of a composed 2-class module's accuracy on the test samples of its pair;
    ``pair_params_fraction`` the mean of its parameters ÷ the full model's. Rates are measured once.
    ``progress(done, total)`` counts τ values."""
    taus = [check_tau(t) for t in taus]
    if not taus:
        raise ModaError("a τ sweep needs at least one τ")
    run = _as_run(run)
    data = runs.run_dataset(run)
    pairs = [sorted(int(c) for c in p) for p in (pairs if pairs is not None else default_pairs(data.num_classes))]
    bad = [p for p in pairs if len(p) != 2 or len(set(p)) != 2 or not all(0 <= c < data.num_classes for c in p)]
    if bad or not pairs:
        raise ModaError(f"class pairs must be two different classes in 0..{data.num_classes - 1}, got "
                        f"{bad or 'no pairs'}")
    rates = run_rates(run, data)
    full_params = parameter_count(run.model)
    rows = []
    for done, tau in enumerate(taus, start=1):
        masks = masks_from_rates(rates, tau)
        summary = module_summary(run.model, masks)
        accuracies, fractions = [], []
        for pair in pairs:
            composed = compose_module(run.model, masks, pair)
            accuracies.append(composed_accuracy(composed, data.test, pair))
            fractions.append(parameter_count(composed) / full_params)
        rows.append({"tau": tau, "mean_module_size": summary.mean_size, "mean_overlap": summary.mean_overlap,
                     "pair_accuracy": sum(accuracies) / len(accuracies),
                     "pair_params_fraction": sum(fractions) / len(fractions)})
        if progress:
            progress(done, len(taus))
    return pd.DataFrame(rows, columns=TAU_COLUMNS)
