"""Two studies over one run, for teaching: how modules form over training, and how the
threshold τ trades module size against the accuracy of composed modules.

- ``training_evolution(run)``: for every periodic checkpoint ``RUN@E`` and the final weights, the mean
  module size, the mean pairwise weight overlap (at τ) and the test accuracy — one row per epoch.
- ``tau_sweep(run)``: for each τ, the mean module size, the mean overlap, and the mean accuracy and
  parameter share of composed 2-class modules on a small seeded sample of class pairs. Activation
  rates do not depend on τ (only the masks do), so they are measured once.

Both work in memory: a stored, current decomposition is read when there is one, and nothing is ever
written (demo runs live in read-only folders). ``progress(done, total)`` is called as work finishes.

A run folder may also ship ``evolution-rates.safetensors`` (``save_evolution_rates``): the activation rates
and test accuracy of every checkpoint, measured while its weights were at hand. Masks at any τ follow from
rates alone, and module sizes and overlaps from masks and the architecture, so ``training_evolution`` then
draws every checkpoint at any τ in milliseconds, including checkpoints whose weights were not kept (the
demo keeps two in full and the rates of all twenty).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pandas as pd
import torch

from moda_core.activations import point_units
from moda_core.compose import compose_module, parameter_count
from moda_core.data import Dataset
from moda_core.decompose import DEFAULT_TAU, check_tau, decompose, masks_from_rates
from moda_core.errors import ModaError
from moda_core.evaluate import accuracy, predict_logits
from moda_core.io import load_tensors, read_tensor_header, save_tensors
from moda_core.metrics import composed_accuracy, subtask_sets
from moda_core.model_attrs import arch_of
from moda_core.store.listing import summarize_run
from moda_core.store.loading import Run, list_checkpoints, load_run, run_dataset
from moda_core.store.names import RunRef
from moda_core.summary import module_summary

Progress = Callable[[int, int], None] | None

EVOLUTION_COLUMNS = ["epoch", "mean_module_size", "mean_overlap", "test_accuracy"]
TAU_COLUMNS = ["tau", "mean_module_size", "mean_overlap", "pair_accuracy", "pair_params_fraction"]
DEFAULT_TAUS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
DEFAULT_PAIRS = 6  # class pairs sampled (seeded) by tau_sweep when none are given
EVOLUTION_RATES = "evolution-rates.safetensors"  # per-checkpoint rates and accuracy (save_evolution_rates)
MAX_EVOLUTION_RATES_BYTES = 64 << 20  # far above any real run's (the demo VGG's: about 0.7 MB)


def _as_run(run_or_spec: Run | str | Path) -> Run:
    return run_or_spec if isinstance(run_or_spec, Run) else load_run(run_or_spec)


def run_rates(run: Run, data: Dataset | None = None,
              progress: Progress = None) -> dict[str, torch.Tensor]:
    """Activation rates of a loaded run: the stored ones when current for these weights, else measured
    over its training data (in memory; nothing is saved)."""
    return decompose(run, DEFAULT_TAU, progress=progress, save=False, data=data).rates


def evolution_states(run_dir: str | Path) -> list[tuple[int, str]]:
    """(epoch, spec) of every periodic checkpoint and the final weights, in epoch order; a checkpoint
    of the final epoch is the final weights (one row)."""
    run_dir = Path(run_dir)
    final = summarize_run(run_dir)
    if not final.loadable:
        raise ModaError(f"run {run_dir} cannot be loaded: {final.error}")
    states = {epoch: str(RunRef(run_dir, epoch)) for epoch in list_checkpoints(run_dir)}
    states[final.epochs_done] = str(RunRef(run_dir))
    return sorted(states.items())


def _rates_key(epoch: int, point: str) -> str:
    return f"{epoch:06d}/{point}"


def checkpoint_record(run: Run, data: Dataset | None = None) -> tuple[dict[str, torch.Tensor], float]:
    """What ``evolution-rates.safetensors`` keeps of one loaded state: its activation rates (as ``decompose``
    measures them) and its test accuracy."""
    data = data or run_dataset(run)
    return run_rates(run, data), accuracy(predict_logits(run.model, data.test), data.test.labels)


def measure_states(states: Sequence[tuple[int, str]], final: Run | None = None,
                   ) -> Iterator[tuple[int, Run, tuple[dict[str, torch.Tensor], float]]]:
    """Load each state of ``states`` ((epoch, spec) pairs, as ``evolution_states`` lists them) and measure it
    (``checkpoint_record``), in order, loading the data set once: (epoch, loaded run, record). ``final``, the
    run's latest weights when the caller has them loaded already, serves for its own spec."""
    data: Dataset | None = None
    for epoch, spec in states:
        run = final if final is not None and spec == final.spec else load_run(spec)
        data = data or run_dataset(run)
        yield epoch, run, checkpoint_record(run, data)


def save_evolution_rates(run_dir: str | Path,
                         records: dict[int, tuple[dict[str, torch.Tensor], float]]) -> Path:
    """Write ``evolution-rates.safetensors`` in ``run_dir`` (atomically): for each epoch, the rates and test
    accuracy of that state (``checkpoint_record``). Returns the file's path."""
    if not records:
        raise ModaError("save_evolution_rates: no checkpoint to record")
    tensors: dict[str, torch.Tensor] = {}
    points: list[str] | None = None
    for epoch, (rates, _) in sorted(records.items()):
        if points is not None and list(rates) != points:
            raise ModaError(f"save_evolution_rates: epoch {epoch} has points {list(rates)}, others {points}")
        points = list(rates)
        tensors.update({_rates_key(epoch, p): r.detach().float().cpu().contiguous() for p, r in rates.items()})
    meta = {"epochs": json.dumps(sorted(records)), "points": json.dumps(points),
            "test_accuracy": json.dumps([float(records[e][1]) for e in sorted(records)])}
    path = Path(run_dir) / EVOLUTION_RATES
    save_tensors(path, tensors, meta)
    return path


def _is_epoch(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def load_evolution_rates(run: Run) -> dict[int, tuple[dict[str, torch.Tensor], float]]:
    """The run folder's (``run``: its latest weights) ``evolution-rates.safetensors`` as {epoch: (rates, test
    accuracy)}; {} when there is none. The file is checked against the run before use (it is input like any
    other in a runs folder): its epochs lie within the run's, its points and shapes are the model's, rates and
    accuracies are in [0, 1]. Anything else is a ``ModaError`` that names the file and what is wrong."""
    path = run.path / EVOLUTION_RATES
    if not path.exists():
        return {}
    where = f"{path}"
    size = path.stat().st_size
    if size > MAX_EVOLUTION_RATES_BYTES:
        raise ModaError(f"{where}: {size} bytes, more than the {MAX_EVOLUTION_RATES_BYTES} an evolution file may hold")
    header = read_tensor_header(path)
    meta = header.get("__metadata__") or {}
    try:
        epochs = json.loads(meta["epochs"])
        points = json.loads(meta["points"])
        accuracies = json.loads(meta["test_accuracy"])
    except (KeyError, TypeError, ValueError, RecursionError) as error:  # RecursionError: JSON nested too deep
        raise ModaError(f"{where}: its metadata lacks readable epochs, points and test_accuracy "
                        f"({type(error).__name__})") from None
    done = run.epoch
    if (not isinstance(epochs, list) or not epochs or not all(_is_epoch(e) and 1 <= e <= done for e in epochs)
            or len(set(epochs)) != len(epochs)):
        raise ModaError(f"{where}: epochs must be distinct whole numbers in 1..{done} (the run's epochs), "
                        f"got {str(epochs)[:200]}")
    if not isinstance(accuracies, list) or len(accuracies) != len(epochs) or not all(
            isinstance(a, (int, float)) and not isinstance(a, bool) and 0.0 <= a <= 1.0 for a in accuracies):
        raise ModaError(f"{where}: test_accuracy must hold one fraction in [0, 1] per epoch")
    units = point_units(run.model)
    if points != list(units):
        raise ModaError(f"{where}: recorded for points {str(points)[:200]}, but the model's are {list(units)[:20]}")
    classes = int(arch_of(run.model)["num_classes"])
    expected = {_rates_key(e, p): [classes, n] for e in epochs for p, n in units.items()}
    shapes = {k: v.get("shape") for k, v in header.items() if k != "__metadata__"}
    if set(shapes) != set(expected) or any(shapes[k] != expected[k] for k in expected):
        wrong = (sorted(set(shapes) ^ set(expected))
                 or sorted(k for k in expected if shapes[k] != expected[k]))
        raise ModaError(f"{where}: its tensors do not match the model ({classes} classes, units {dict(units)}); "
                        f"first difference: {wrong[0]}")
    tensors, _ = load_tensors(path)
    records = {}
    for epoch, acc in zip(epochs, accuracies, strict=True):
        rates = {p: tensors[_rates_key(epoch, p)].float() for p in points}
        if not all(bool(torch.isfinite(r).all()) and float(r.min()) >= 0.0 and float(r.max()) <= 1.0
                   for r in rates.values()):
            raise ModaError(f"{where}: the rates of epoch {epoch} are not all in [0, 1]")
        records[int(epoch)] = (rates, float(acc))
    return records


def _evolution_row(model: torch.nn.Module, epoch: int, rates: dict[str, torch.Tensor], acc: float,
                   tau: float) -> dict[str, float]:
    summary = module_summary(model, masks_from_rates(rates, tau))
    return {"epoch": epoch, "mean_module_size": summary.mean_size, "mean_overlap": summary.mean_overlap,
            "test_accuracy": acc}


def training_evolution(run_dir_or_run: Run | str | Path, tau: float = DEFAULT_TAU,
                       progress: Progress = None) -> pd.DataFrame:
    """Mean module size, mean pairwise overlap (at ``tau``) and test accuracy per checkpoint epoch.

    One row per periodic checkpoint ``RUN@E`` plus the run's final weights, sorted by epoch
    (columns ``EVOLUTION_COLUMNS``; sizes, overlaps and accuracies are fractions 0–1), and one per epoch
    recorded in the folder's ``evolution-rates.safetensors`` (whose rates are used instead of measuring
    again). A run without checkpoints gives one row. ``progress(done, total)`` counts evaluated states."""
    tau = check_tau(tau)
    final = run_dir_or_run if isinstance(run_dir_or_run, Run) else None
    path = run_dir_or_run.path if isinstance(run_dir_or_run, Run) else RunRef.parse(run_dir_or_run).path
    states = dict(evolution_states(path))
    final = final if final is not None and final.ref == RunRef(path) else load_run(path)
    recorded = load_evolution_rates(final)
    epochs = sorted(set(states) | set(recorded))
    rows: dict[int, dict[str, float]] = {}

    def add(epoch: int, model: torch.nn.Module, rates: dict[str, torch.Tensor], acc: float) -> None:
        rows[epoch] = _evolution_row(model, epoch, rates, acc, tau)
        if progress:
            progress(len(rows), len(epochs))

    for epoch in sorted(recorded):
        add(epoch, final.model, *recorded[epoch])
    unrecorded = [(epoch, spec) for epoch, spec in sorted(states.items()) if epoch not in recorded]
    for epoch, run, (rates, acc) in measure_states(unrecorded, final):
        add(epoch, run.model, rates, acc)
    return pd.DataFrame([rows[epoch] for epoch in epochs], columns=EVOLUTION_COLUMNS)


def evolution_is_recorded(run_dir: str | Path, most: int | None = None) -> bool:
    """Whether every state ``training_evolution`` draws for this run has its rates in the folder's
    ``evolution-rates.safetensors`` (so it needs no model evaluation: a few milliseconds a state, at any τ),
    and (with ``most``) it records at most ``most`` states. Reads only the file's header; a file that does
    not parse counts as not recorded."""
    run_dir = Path(run_dir)
    path = run_dir / EVOLUTION_RATES
    if not path.is_file():
        return False
    try:
        epochs = set(json.loads((read_tensor_header(path).get("__metadata__") or {})["epochs"]))
        states = {epoch for epoch, _ in evolution_states(run_dir)}
    except (ModaError, OSError, KeyError, TypeError, ValueError, RecursionError):
        return False
    return states <= epochs and (most is None or len(epochs) <= most)


def default_pairs(num_classes: int, samples: int = DEFAULT_PAIRS, seed: int = 0) -> list[list[int]]:
    """A seeded sample of class pairs (every pair when there are at most ``samples``)."""
    if num_classes < 2:
        raise ModaError(f"a τ sweep composes class pairs: the run has only {num_classes} class")
    return subtask_sets(num_classes, [2], samples, seed)


def tau_sweep(run: Run | str | Path, taus: Sequence[float] = DEFAULT_TAUS,
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
    data = run_dataset(run)
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
