"""Cached access to ``moda_core`` for the dashboard pages (the only place the pages get numbers from).

Models are cached with ``st.cache_resource`` (one live object per run spec), arrays and matrices
with ``st.cache_data``, so moving a slider re-runs the page against warm caches. Functions that
take a run take its *spec* (``RUN`` or ``RUN@EPOCH``) as a string, which is what the caches key on;
a cached entry also keys on the weights file's modification time, so a retrained run is reloaded.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from moda_core import runs as run_store  # noqa: E402
from moda_core.activations import run_with_cache  # noqa: E402
from moda_core.baselines import COMPARE_COLUMNS  # noqa: E402
from moda_core.compose import compose_module, overlap_counts, parameter_count  # noqa: E402
from moda_core.decompose import DEFAULT_TAU, decompose, masks_from_rates, units_firing  # noqa: E402
from moda_core.errors import ModaError  # noqa: E402
from moda_core.export import export_module  # noqa: E402
from moda_core.metrics import (compose_report, mean_off_diagonal, module_sizes, overlap_matrix,  # noqa: E402
                               per_class_accuracy, predict_logits)

DEMO_DIR = ROOT / "assets" / "demo"
USER_RUNS_DIR = ROOT / "runs"
RUNS_ENV = "MODA_RUNS_DIR"
# the Compare page's table, written by bench/compare.py (and its optional step-time ratios, next to it)
COMPARE_CSV = ROOT / "bench" / "results" / "compare.csv"
COMPARE_ENV = "MODA_COMPARE_CSV"
OVERHEAD_JSON = "train_overhead.json"


def default_runs_dirs() -> list[Path]:
    """Folders the dashboard lists runs from: ``$MODA_RUNS_DIR`` (``os.pathsep``-separated) if set,
    else the bundled demo runs plus ``runs/``."""
    configured = os.environ.get(RUNS_ENV)
    if configured:
        return [Path(p).expanduser() for p in configured.split(os.pathsep) if p]
    return [DEMO_DIR, USER_RUNS_DIR]


def runs_dirs() -> list[Path]:
    """The folders chosen in the sidebar (session state), else the defaults."""
    chosen = st.session_state.get("runs_dirs_text")
    if chosen:
        return [Path(p.strip()).expanduser() for p in chosen.split(",") if p.strip()]
    return default_runs_dirs()


def runs_dir_problems() -> list[str]:
    """Readable messages for chosen runs folders that cannot hold runs (``runs/`` may not exist yet)."""
    problems = []
    for folder in runs_dirs():
        if folder.resolve() == USER_RUNS_DIR.resolve() and not folder.exists():
            continue
        if not folder.exists():
            problems.append(f"`{folder}` does not exist: give a folder that contains run folders.")
        elif not folder.is_dir():
            problems.append(f"`{folder}` is a file, not a folder of runs.")
        elif (folder / run_store.CONFIG).exists():
            problems.append(f"`{folder}` is a single run, not a folder of runs: give its parent, `{folder.parent}`.")
    return problems


def training_dir() -> Path:
    """Where the Runs page trains new runs: the first listed folder that is not the demo bundle."""
    for folder in runs_dirs():
        if folder.resolve() != DEMO_DIR.resolve():
            return folder
    return USER_RUNS_DIR


def _mtime(spec: str) -> float:
    path, epoch = run_store.split_run_spec(spec)
    weights = path / run_store.MODEL if epoch is None else run_store.checkpoint_path(path, epoch)
    try:
        return weights.stat().st_mtime
    except OSError:
        return 0.0


def list_runs(folders: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Summaries of every run in the runs folders (not cached: it is cheap, and must see new runs)."""
    folders = folders or tuple(str(f) for f in runs_dirs())
    summaries = []
    for folder in folders:
        for summary in run_store.list_runs(folder):
            summary["folder"] = folder
            summaries.append(summary)
    return summaries


def loadable_specs(summaries: list[dict[str, Any]], with_checkpoints: bool = False) -> list[str]:
    """Run specs of the runs that load (optionally each periodic checkpoint as ``RUN@EPOCH`` too)."""
    specs = []
    for s in summaries:
        if s.get("error"):
            continue
        specs.append(s["path"])
        if with_checkpoints:
            specs += [f"{s['path']}@{e}" for e in s.get("checkpoints") or [] if e != s.get("epochs_done")]
    return specs


def run_label(spec: str) -> str:
    path, epoch = run_store.split_run_spec(spec)
    return f"{path.parent.name}/{path.name}" + (f" @ epoch {epoch}" if epoch is not None else "")


@st.cache_resource(show_spinner=False, max_entries=16)
def _load_run(spec: str, mtime: float) -> run_store.Run:
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    return run_store.load_run(spec)


def load_run(spec: str) -> run_store.Run:
    """The loaded run (model in eval mode); raises ``ModaError`` with a readable message."""
    return _load_run(spec, _mtime(spec))


def class_names(spec: str) -> list[str]:
    run = load_run(spec)
    names = run.config.get("data", {}).get("class_names")
    classes = run.config.get("data", {}).get("classes")
    if names:
        return [str(n) for n in names]
    return [str(c) for c in (classes or range(run.model.arch["num_classes"]))]


@st.cache_resource(show_spinner=False, max_entries=16)
def _decomposition(spec: str, mtime: float):
    # Rates do not depend on τ: computed (or read) once, masks are derived per τ below. A new
    # decomposition is saved into the run folder, except into the bundled demo (kept as shipped).
    run = load_run(spec)
    return decompose(run, DEFAULT_TAU, save=writable(run))


def writable(run: run_store.Run) -> bool:
    """Whether the dashboard may store results in the run's folder: not in the bundled demo (kept as shipped)."""
    return DEMO_DIR.resolve() not in run.path.resolve().parents


def rates(spec: str) -> dict[str, torch.Tensor]:
    """Per-point class×unit activation rates (read from the run folder, or computed and saved there)."""
    return _decomposition(spec, _mtime(spec)).rates


@st.cache_data(show_spinner=False, max_entries=64)
def _masks(spec: str, mtime: float, tau: float) -> dict[str, np.ndarray]:
    stored = _decomposition(spec, mtime)
    masks = stored.masks if abs(tau - stored.tau) < 1e-9 else masks_from_rates(stored.rates, tau)
    return {p: m.numpy() for p, m in masks.items()}


def masks(spec: str, tau: float) -> dict[str, np.ndarray]:
    """Per-point class×unit module masks at τ (from ``moda_core.decompose.masks_from_rates``)."""
    return _masks(spec, _mtime(spec), round(float(tau), 2))


def _torch_masks(spec: str, tau: float) -> dict[str, torch.Tensor]:
    return {p: torch.from_numpy(m) for p, m in masks(spec, tau).items()}


@st.cache_data(show_spinner=False, max_entries=64)
def _module_metrics(spec: str, mtime: float, tau: float) -> dict[str, Any]:
    model = load_run(spec).model
    m = _torch_masks(spec, tau)
    overlap = overlap_matrix(model, m)
    total = parameter_count(model)
    layers = overlap_counts(model, m, by_layer=True)
    return {"sizes": module_sizes(model, m), "overlap": overlap.numpy(), "mean_overlap": mean_off_diagonal(overlap),
            "by_layer": {name: mean_off_diagonal(counts / total) for name, counts in layers.items()},
            "params": total}


def module_metrics(spec: str, tau: float) -> dict[str, Any]:
    """Module sizes, overlap matrix, mean pairwise overlap and its per-layer breakdown (moda_core.metrics)."""
    return _module_metrics(spec, _mtime(spec), round(float(tau), 2))


@st.cache_resource(show_spinner=False, max_entries=8)
def _dataset(spec: str, mtime: float):
    return run_store.run_dataset(load_run(spec))


def dataset(spec: str):
    """The run's data set (same classes, fraction and seed as training)."""
    return _dataset(spec, _mtime(spec))


@st.cache_data(show_spinner=False, max_entries=64)
def _compose(spec: str, mtime: float, tau: float, classes: tuple[int, ...]) -> dict[str, Any]:
    run = load_run(spec)
    test = dataset(spec).test
    return compose_report(run.model, _torch_masks(spec, tau), list(classes), test, full_logits=_full_logits(spec))


def compose(spec: str, tau: float, classes: list[int]) -> dict[str, Any]:
    """``moda_core.metrics.compose_report`` for these classes (parameters, FLOPs, accuracy vs full model)."""
    return _compose(spec, _mtime(spec), round(float(tau), 2), tuple(sorted(classes)))


@st.cache_resource(show_spinner=False, max_entries=8)
def _logits(spec: str, mtime: float) -> torch.Tensor:
    return predict_logits(load_run(spec).model, dataset(spec).test)


def _full_logits(spec: str) -> torch.Tensor:
    return _logits(spec, _mtime(spec))


@st.cache_data(show_spinner=False, max_entries=32)
def _export(spec: str, mtime: float, tau: float, classes: tuple[int, ...]) -> bytes:
    run = load_run(spec)
    module = compose_module(run.model, _torch_masks(spec, tau), list(classes))
    with tempfile.TemporaryDirectory() as folder:
        path = export_module(module, Path(folder) / "module.pt2", run.model.input_shape)
        return path.read_bytes()


def export_bytes(spec: str, tau: float, classes: list[int]) -> bytes:
    """The composed module exported with ``moda_core.export`` as ``.pt2`` file contents."""
    return _export(spec, _mtime(spec), round(float(tau), 2), tuple(sorted(classes)))


@st.cache_data(show_spinner=False, max_entries=256)
def _image(spec: str, mtime: float, index: int) -> dict[str, Any]:
    run = load_run(spec)
    test = dataset(spec).test
    x, y = test.batch(slice(index, index + 1))
    with torch.no_grad():
        logits, cache = run_with_cache(run.model, x)
    fired = {p: units_firing(a)[0].numpy() for p, a in cache.items()}
    raw = test.images[index].float().div(255.0).permute(1, 2, 0).numpy()
    return {"image": raw if raw.shape[2] == 3 else raw[:, :, 0], "label": int(y[0]),
            "predicted": int(logits.argmax(1)[0]), "fired": fired}


def image_activations(spec: str, index: int) -> dict[str, Any]:
    """For one test image: the pixels, true and predicted label, and per point which units fire
    (``moda_core.activations.run_with_cache``; a conv unit fires when any of its positions is non-zero)."""
    return _image(spec, _mtime(spec), int(index))


@st.cache_data(show_spinner=False, max_entries=16)
def _per_class(spec: str, mtime: float) -> list[float]:
    data = dataset(spec)
    return per_class_accuracy(_full_logits(spec), data.test.labels, data.num_classes)


def per_class(spec: str) -> list[float]:
    """Per-class test accuracy of the run's model (``moda_core.metrics.per_class_accuracy``)."""
    return _per_class(spec, _mtime(spec))


def try_load(spec: str) -> tuple[run_store.Run | None, str | None]:
    """(run, None) or (None, error message) for a spec typed or picked by the user."""
    try:
        return load_run(spec), None
    except ModaError as error:
        return None, str(error)


@st.cache_data(show_spinner=False, max_entries=32)
def _swap(weak: str, weak_mtime: float, strong: str, strong_mtime: float, weak_class: int, strong_class: int,
          strategy: str, epochs: int, tau: float) -> dict[str, Any]:
    from moda_core.replace import repair

    strong_run = load_run(strong)
    return repair(load_run(weak), strong_run, weak_class, strong_class, strategy=strategy, epochs=epochs,
                  tau=tau, save_decomposition=writable(strong_run)).report


def swap(weak: str, strong: str, weak_class_id: int, strong_class_id: int, strategy: str, epochs: int = 5,
         tau: float = DEFAULT_TAU) -> dict[str, Any]:
    """``moda_core.replace.repair`` of the weak run's class with the strong run's module; its report
    (per-class accuracy before/after keyed by original class id, target gain, largest other change).
    Class arguments are original class ids."""
    from moda_core.replace import class_index

    return _swap(weak, _mtime(weak), strong, _mtime(strong), class_index(load_run(weak), weak_class_id),
                 class_index(load_run(strong), strong_class_id), strategy, int(epochs), round(float(tau), 2))


def run_classes(spec: str) -> list[int]:
    """Original class ids of a run's logits, in logit order."""
    from moda_core.replace import run_classes as classes_of

    return classes_of(load_run(spec))


class CompareFileError(ValueError):
    """A comparison file that exists but cannot be used; the message names the file and what is wrong."""


def compare_csv_path() -> Path:
    """The comparison table: ``$MODA_COMPARE_CSV`` if set, else ``bench/results/compare.csv``."""
    configured = os.environ.get(COMPARE_ENV)
    return Path(configured).expanduser() if configured else COMPARE_CSV


def overhead_json_path(csv_path: Path | None = None) -> Path:
    """``train_overhead.json`` in the comparison table's folder."""
    return (csv_path or compare_csv_path()).parent / OVERHEAD_JSON


def _stamp(path: Path) -> tuple[int, int]:
    try:
        info = path.stat()
        return info.st_mtime_ns, info.st_size
    except OSError:
        return 0, 0


def read_compare_table(path: Path) -> pd.DataFrame:
    """bench/compare.py's table, checked: every column of ``COMPARE_COLUMNS``, numbers where numbers belong,
    at least one row, one row per model × width × method (methods lower-cased). Raises ``CompareFileError``."""
    path = Path(path)
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise CompareFileError(f"`{path}` is empty: no header, no rows.") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as error:
        raise CompareFileError(f"`{path}` is not a readable CSV file: {error}") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in COMPARE_COLUMNS if c not in table.columns]
    if missing:
        raise CompareFileError(f"`{path}` lacks the column(s) {', '.join(missing)}. Expected the columns "
                               f"{', '.join(COMPARE_COLUMNS)}.")
    if table.empty:
        raise CompareFileError(f"`{path}` has a header but no rows.")
    for column in ("model", "method"):
        values = table[column].astype("string").str.strip()
        if values.isna().any() or (values == "").any():
            row = int(np.flatnonzero((values.isna() | (values == "")).to_numpy())[0])
            raise CompareFileError(f"`{path}`: row {row + 2} has no {column}.")
        table[column] = values.astype(str)
    table["method"] = table["method"].str.lower()
    for column in COMPARE_COLUMNS:
        if column in ("model", "method"):
            continue
        numbers = pd.to_numeric(table[column], errors="coerce")
        bad = numbers.isna() & table[column].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise CompareFileError(f"`{path}`: column `{column}` must hold numbers, but row {row + 2} has "
                                   f"{table[column].iloc[row]!r}.")
        table[column] = numbers.astype(float)
    twice = table.duplicated(["model", "width", "method"], keep=False)
    if twice.any():
        first = table[twice].iloc[0]
        raise CompareFileError(f"`{path}` has more than one row for model {first['model']} (width "
                               f"{first['width']:g}) and method {first['method']}.")
    return table[list(COMPARE_COLUMNS) + [c for c in table.columns if c not in COMPARE_COLUMNS]]


@st.cache_data(show_spinner=False, max_entries=8)
def _compare_table(path: str, stamp: tuple[int, int]) -> pd.DataFrame:
    return read_compare_table(Path(path))


def compare_table(path: Path | None = None) -> pd.DataFrame:
    """The comparison table (cached until the file changes); raises ``CompareFileError``."""
    path = path or compare_csv_path()
    return _compare_table(str(path), _stamp(path))


def read_train_overhead(path: Path) -> tuple[str | None, dict[str, dict[str, float]]]:
    """bench's ``train_overhead.json``: ``{"device": ..., MODEL: {"moda_ratio": r, "mwt_ratio": r}, ...}`` →
    (device, ``{model: {"moda_ratio": r, ...}}``). Only the ``*_ratio`` numbers of object-valued entries
    are kept (other keys are ignored). Raises ``CompareFileError``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CompareFileError(f"`{path}` is not readable JSON: {error}") from None
    if not isinstance(data, dict):
        raise CompareFileError(f"`{path}` should hold a JSON object, not {type(data).__name__}.")
    device = data.get("device")
    ratios: dict[str, dict[str, float]] = {}
    for model, values in data.items():
        if not isinstance(values, dict):
            continue
        for key, ratio in values.items():
            if not str(key).endswith("_ratio"):
                continue
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
                raise CompareFileError(f"`{path}`: `{model}` → `{key}` should be a number, not {ratio!r}.")
            ratios.setdefault(str(model), {})[str(key)] = float(ratio)
    if not ratios:
        raise CompareFileError(f"`{path}` holds no step-time ratios (expected e.g. "
                               '{"lenet5": {"moda_ratio": 1.3, "mwt_ratio": 1.1}}).')
    return (None if device is None else str(device)), ratios


@st.cache_data(show_spinner=False, max_entries=8)
def _train_overhead(path: str, stamp: tuple[int, int]):
    return read_train_overhead(Path(path))


def train_overhead(path: Path | None = None) -> tuple[str | None, dict[str, dict[str, float]]] | None:
    """(device, per-model step-time ratios) from ``train_overhead.json`` next to the comparison table, None
    when there is no such file; raises ``CompareFileError`` when it does not parse."""
    path = path or overhead_json_path()
    if not path.exists():
        return None
    return _train_overhead(str(path), _stamp(path))


def compare_budgets(table: pd.DataFrame) -> dict[str, Any]:
    """Seeds and epoch budgets in the table, and the models whose methods did not share both."""
    from dashboard.figures import model_label

    labels = [model_label(r) for r in table.to_dict("records")]
    grouped = table.assign(label=labels).groupby("label", sort=False)
    uneven = [label for label, group in grouped if group["seed"].nunique(dropna=False) > 1
              or group["epochs"].nunique(dropna=False) > 1]
    return {"seeds": sorted(table["seed"].dropna().unique().tolist()),
            "epochs": sorted(table["epochs"].dropna().unique().tolist()), "uneven": uneven}
