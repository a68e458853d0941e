"""Cached access to ``moda_core`` for the dashboard pages: which runs folders the server offers, and
cached calls into the engine. Every number shown comes from ``moda_core``; this module only picks
the folders, caches and converts (tensors → numpy for the figures).

Runs folders are chosen by whoever starts the server, never by a visitor: ``$MODA_RUNS_DIR``
(``os.pathsep``-separated folders; ``python -m dashboard.serve --runs-dir`` sets it), else the bundled
demo runs plus ``runs/``. New runs go only into the first configured folder that is not the bundled
demo (the *training folder*); ``MODA_TRAINING=off`` turns training from the browser off.

Functions that take a run take its *spec* (``RUN`` or ``RUN@EPOCH``, one of the offered runs) as a
string. ``@run_cached`` caches them (``st.cache_resource`` for live objects, ``st.cache_data`` for
arrays) keyed on their arguments and on the weights file's modification time, so a retrained run is
reloaded.
"""
from __future__ import annotations

import functools
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import streamlit as st
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from moda_core import runs as run_store  # noqa: E402
from moda_core.activations import run_with_cache  # noqa: E402
from moda_core.comparison import CompareFileError, read_compare_table, read_train_overhead  # noqa: E402,F401
from moda_core.compose import compose_module  # noqa: E402
from moda_core.decompose import DEFAULT_TAU, decompose, masks_from_rates, units_firing  # noqa: E402
from moda_core.decompose import clearest_point as find_clearest_point  # noqa: E402
from moda_core.errors import ModaError  # noqa: E402
from moda_core.export import export_module  # noqa: E402
from moda_core.metrics import compose_report, per_class_accuracy, predict_logits  # noqa: E402
from moda_core.replace import class_index, repair  # noqa: E402
from moda_core.replace import run_classes as classes_of
from moda_core.summary import module_summary  # noqa: E402

DEMO_DIR = ROOT / "assets" / "demo"
USER_RUNS_DIR = ROOT / "runs"
RUNS_ENV = "MODA_RUNS_DIR"
TRAINING_ENV = "MODA_TRAINING"  # "off" (or 0/no/false): no training from the browser
ALL_FOLDERS = "all runs folders"
# the Compare page's table, written by bench/compare.py (and its optional step-time ratios, next to it)
COMPARE_CSV = ROOT / "bench" / "results" / "compare.csv"
COMPARE_ENV = "MODA_COMPARE_CSV"
OVERHEAD_JSON = "train_overhead.json"

# Run statuses (moda_core.runs.list_runs) a page may open, and the one a page opens by default.
OPENABLE = ("complete", "running", "interrupted", "unknown")
HEALTHY = "complete"


# ----- runs folders: configured by the server, picked by the visitor ------------------------------

@dataclass(frozen=True)
class RunsFolder:
    """A configured runs folder: where it is (never shown), how pages name it, whether new runs go there."""

    path: Path
    label: str
    trains_here: bool

    @property
    def bundled(self) -> bool:
        return _same(self.path, DEMO_DIR)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def default_runs_dirs() -> list[Path]:
    """Folders the server offers: ``$MODA_RUNS_DIR`` (``os.pathsep``-separated) if set, else the bundled
    demo runs plus ``runs/``."""
    configured = os.environ.get(RUNS_ENV)
    if configured:
        return [Path(p).expanduser() for p in configured.split(os.pathsep) if p.strip()]
    return [DEMO_DIR, USER_RUNS_DIR]


def training_enabled() -> bool:
    return os.environ.get(TRAINING_ENV, "on").strip().lower() not in ("off", "0", "no", "false")


def _label(path: Path) -> str:
    if _same(path, DEMO_DIR):
        return "demo (bundled)"
    try:
        return str(path.resolve().relative_to(ROOT))
    except (ValueError, OSError):
        return path.name or str(path)


def configured_folders() -> list[RunsFolder]:
    """The configured runs folders with their public labels (unique); the first one that is not the
    bundled demo is the training folder (when training is enabled)."""
    folders, labels = [], set()
    trainer_found = not training_enabled()
    for path in default_runs_dirs():
        label = _label(path)
        parent = path
        while label in labels and parent.parent != parent:  # two folders of the same name
            parent = parent.parent
            label = f"{parent.name}/{label}"
        labels.add(label)
        trains = not trainer_found and not _same(path, DEMO_DIR)
        trainer_found = trainer_found or trains
        folders.append(RunsFolder(path, label, trains))
    return folders


def folder_choices() -> list[str]:
    """What the sidebar offers: every configured folder together, then each one alone (their labels)."""
    labels = [f.label for f in configured_folders()]
    return labels if len(labels) == 1 else [ALL_FOLDERS, *labels]


def selected_folders() -> list[RunsFolder]:
    """The configured folders the visitor picked in the sidebar (all of them by default). Anything else in
    the session state is ignored: a visitor picks among the configured folders and names no path."""
    folders = configured_folders()
    chosen = st.session_state.get("runs_folder")
    picked = [f for f in folders if f.label == chosen]
    return picked or folders


def runs_dirs() -> list[Path]:
    """The folders whose runs the pages list (the sidebar's pick among the configured folders)."""
    return [f.path for f in selected_folders()]


def folders_text(folders: list[RunsFolder] | None = None) -> str:
    return ", ".join(f"`{f.label}`" for f in (folders if folders is not None else selected_folders()))


def runs_dir_problems() -> list[str]:
    """Readable messages (labels, no server paths) for configured folders that cannot hold runs
    (the training folder may not exist yet: the first training creates it)."""
    problems = []
    for folder in configured_folders():
        path = folder.path
        if not path.exists():
            if folder.trains_here or _same(path, USER_RUNS_DIR):
                continue
            problems.append(f"Runs folder `{folder.label}` does not exist: the server was started with a "
                            f"folder that holds no runs.")
        elif not path.is_dir():
            problems.append(f"Runs folder `{folder.label}` is a file, not a folder of runs.")
        elif (path / run_store.CONFIG).exists():
            problems.append(f"Runs folder `{folder.label}` is a single run, not a folder of runs: start the "
                            f"server with its parent folder instead.")
    return problems


def training_folder() -> RunsFolder | None:
    """The configured folder new runs go into; None when training from the browser is off."""
    return next((f for f in configured_folders() if f.trains_here), None)


def training_dir() -> Path | None:
    folder = training_folder()
    return folder.path if folder else None


# ----- what a visitor may read: labels instead of server paths ------------------------------------

_ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/(?:[^\s/`'\"():,;]+/)+([^\s/`'\"():,;]*)")


def public(text: str) -> str:
    """``text`` with server paths replaced: a configured folder by its label, the project folder by ``.``,
    any other absolute path by ``…/`` and its last part. For messages shown to visitors."""
    text = str(text)
    replacements: list[tuple[str, str]] = []
    for folder in configured_folders():
        for form in {str(folder.path), str(folder.path.resolve())}:
            replacements.append((form, folder.label))
    replacements.append((str(ROOT), "."))
    for original, shown in sorted(replacements, key=lambda r: -len(r[0])):
        if original not in ("", "/", "."):
            text = text.replace(original, shown)
    return _ABSOLUTE_PATH.sub(lambda m: f"…/{m.group(1)}", text)


def shown_path(path: str | Path) -> str:
    """A server path as visitors see it (see ``public``)."""
    return public(str(path))


def run_label(spec: str) -> str:
    """``FOLDER/RUN`` (``FOLDER/RUN @ epoch N`` for a checkpoint), with the folder's public label."""
    path, epoch = run_store.split_run_spec(spec)
    folder = next((f.label for f in configured_folders() if _same(path.parent, f.path)), path.parent.name)
    return f"{folder}/{path.name}" + (f" @ epoch {epoch}" if epoch is not None else "")


def run_epoch_label(spec: str) -> str:
    """``run_label`` that always says which epoch's weights: ``FOLDER/RUN @ epoch 40 (final)``, and for a
    checkpoint ``FOLDER/RUN @ epoch 8 of 40 (early)`` (early: the first half of the epochs, else late)."""
    path, epoch = run_store.split_run_spec(spec)
    label = run_label(str(path))
    try:
        final = run_store.weights_epoch(path / run_store.MODEL)
    except (ModaError, OSError, ValueError):
        return run_label(spec)
    if epoch is None:
        return f"{label} @ epoch {final} (final)"
    return f"{label} @ epoch {epoch} of {final} ({'early' if epoch <= final / 2 else 'late'})"


# ----- run listing ---------------------------------------------------------------------------------

def run_status(summary: dict[str, Any]) -> str:
    """complete / running / interrupted / broken, as ``moda_core.runs.list_runs`` says (an entry without a
    status that has an error counts as broken)."""
    status = summary.get("status")
    if not status or status == "unknown":
        return "broken" if summary.get("error") else "unknown"
    return str(status)


def list_runs() -> list[dict[str, Any]]:
    """Summaries of every run in the selected runs folders (``moda_core.runs.list_runs``; not cached: it is
    cheap and must see new runs), each with ``folder`` (its label) and ``status`` (see ``run_status``)."""
    summaries = []
    for folder in selected_folders():
        try:
            listed = run_store.list_runs(folder.path)
        except ModaError:  # not a folder: the sidebar says so (runs_dir_problems)
            continue
        for summary in listed:
            summary["folder"] = folder.label
            summary["status"] = run_status(summary)
            if summary.get("error"):
                summary["error"] = public(summary["error"])
            summaries.append(summary)
    return summaries


def openable(summary: dict[str, Any]) -> bool:
    """Whether a page may open the run: it loads (``loadable``: a finished epoch, not broken)."""
    return run_status(summary) in OPENABLE and summary.get("loadable", not summary.get("error"))


def loadable_specs(summaries: list[dict[str, Any]], with_checkpoints: bool = False) -> list[str]:
    """Run specs of the runs a page may open (not broken ones), optionally each periodic checkpoint as
    ``RUN@EPOCH`` too."""
    specs = []
    for s in summaries:
        if not openable(s):
            continue
        specs.append(s["path"])
        if with_checkpoints:
            specs += [f"{s['path']}@{e}" for e in s.get("checkpoints") or [] if e != s.get("epochs_done")]
    return specs


# ----- caching -------------------------------------------------------------------------------------

def _weights_mtime(spec: str) -> float:
    path, epoch = run_store.split_run_spec(spec)
    weights = path / run_store.MODEL if epoch is None else run_store.checkpoint_path(path, epoch)
    try:
        return weights.stat().st_mtime
    except OSError:
        return 0.0


def run_cached(*, resource: bool = False, max_entries: int = 32, specs: int = 1) -> Callable:
    """Cache a function whose first ``specs`` arguments are run specs: ``st.cache_resource`` (live objects,
    shared, not copied) when ``resource``, else ``st.cache_data``. The key adds each spec's weights-file
    modification time, so a run that is trained again is not served stale."""
    cache = st.cache_resource if resource else st.cache_data

    def decorate(function: Callable) -> Callable:
        def keyed(stamps: tuple[float, ...], *args: Any, **kwargs: Any) -> Any:
            return function(*args, **kwargs)

        # Streamlit keys a cache on the function's module, qualified name and source: give each its own
        keyed.__module__, keyed.__qualname__ = function.__module__, f"{function.__qualname__}[cached]"
        cached = cache(show_spinner=False, max_entries=max_entries)(keyed)

        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            return cached(tuple(_weights_mtime(str(s)) for s in args[:specs]), *args, **kwargs)

        call.clear = cached.clear  # type: ignore[attr-defined]
        return call

    return decorate


# ----- cached engine calls -------------------------------------------------------------------------

@run_cached(resource=True, max_entries=16)
def load_run(spec: str) -> run_store.Run:
    """The loaded run (model in eval mode); raises ``ModaError`` with a readable message."""
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    return run_store.load_run(spec)


def try_load(spec: str) -> tuple[run_store.Run | None, str | None]:
    """(run, None) or (None, the reason it does not load, without server paths)."""
    try:
        return load_run(spec), None
    except ModaError as error:
        return None, public(str(error))


def class_names(spec: str) -> list[str]:
    run = load_run(spec)
    names = run.config.get("data", {}).get("class_names")
    classes = run.config.get("data", {}).get("classes")
    if names:
        return [str(n) for n in names]
    return [str(c) for c in (classes or range(run.model.arch["num_classes"]))]


def writable(run: run_store.Run) -> bool:
    """Whether the dashboard may store results (the decomposition cache) in the run's folder: only in the
    training folder, never in the bundled demo or another configured folder."""
    folder = training_folder()
    return folder is not None and _same(run.path.parent, folder.path)


@run_cached(resource=True, max_entries=16)
def _decomposition(spec: str):
    # Rates do not depend on τ: computed (or read) once, masks are derived per τ below.
    run = load_run(spec)
    return decompose(run, DEFAULT_TAU, save=writable(run))


def rates(spec: str) -> dict[str, torch.Tensor]:
    """Per-point class×unit activation rates (read from the run folder, or computed)."""
    return _decomposition(spec).rates


@run_cached(max_entries=64)
def masks(spec: str, tau: float) -> dict[str, np.ndarray]:
    """Per-point class×unit module masks at τ (``moda_core.decompose.masks_from_rates``)."""
    stored = _decomposition(spec)
    chosen = stored.masks if abs(float(tau) - stored.tau) < 1e-9 else masks_from_rates(stored.rates, float(tau))
    return {p: m.numpy() for p, m in chosen.items()}


def _torch_masks(spec: str, tau: float) -> dict[str, torch.Tensor]:
    return {p: torch.from_numpy(m) for p, m in masks(spec, tau).items()}


@run_cached(max_entries=64)
def clearest_point(spec: str, tau: float) -> str:
    """The activation point with the clearest class structure at τ (``moda_core.decompose.clearest_point``):
    where the Activations page opens."""
    return find_clearest_point(rates(spec), _torch_masks(spec, tau))


@run_cached(max_entries=64)
def module_metrics(spec: str, tau: float) -> dict[str, Any]:
    """``moda_core.summary.module_summary`` at τ: module sizes and their mean, the overlap matrix (numpy),
    the mean pairwise overlap, its per-layer breakdown and the model's parameter count."""
    summary = module_summary(load_run(spec).model, _torch_masks(spec, tau))
    return {"sizes": summary.sizes, "mean_size": summary.mean_size, "overlap": summary.overlap.numpy(),
            "mean_overlap": summary.mean_overlap, "by_layer": summary.mean_overlap_by_layer,
            "params": summary.params}


@run_cached(resource=True, max_entries=8)
def dataset(spec: str):
    """The run's data set (same classes, fraction and seed as training)."""
    return run_store.run_dataset(load_run(spec))


@run_cached(resource=True, max_entries=8)
def _full_logits(spec: str) -> torch.Tensor:
    return predict_logits(load_run(spec).model, dataset(spec).test)


@run_cached(max_entries=64)
def compose(spec: str, tau: float, classes: list[int]) -> dict[str, Any]:
    """``moda_core.metrics.compose_report`` for these classes (parameters, FLOPs, accuracy vs full model)."""
    return compose_report(load_run(spec).model, _torch_masks(spec, tau), sorted(classes), dataset(spec).test,
                          full_logits=_full_logits(spec))


@run_cached(max_entries=32)
def export_bytes(spec: str, tau: float, classes: list[int]) -> bytes:
    """The composed module exported with ``moda_core.export`` as ``.pt2`` file contents."""
    run = load_run(spec)
    module = compose_module(run.model, _torch_masks(spec, tau), sorted(classes))
    with tempfile.TemporaryDirectory() as folder:
        path = export_module(module, Path(folder) / "module.pt2", run.model.input_shape)
        return path.read_bytes()


@run_cached(max_entries=256)
def image_activations(spec: str, index: int) -> dict[str, Any]:
    """For one test image: the pixels, true and predicted label, and per point which units fire
    (``moda_core.activations.run_with_cache``; a conv unit fires when any of its positions is non-zero)."""
    run = load_run(spec)
    test = dataset(spec).test
    x, y = test.batch(slice(int(index), int(index) + 1))
    with torch.no_grad():
        logits, cache = run_with_cache(run.model, x)
    fired = {p: units_firing(a)[0].numpy() for p, a in cache.items()}
    raw = test.images[int(index)].float().div(255.0).permute(1, 2, 0).numpy()
    return {"image": raw if raw.shape[2] == 3 else raw[:, :, 0], "label": int(y[0]),
            "predicted": int(logits.argmax(1)[0]), "fired": fired}


@run_cached(max_entries=16)
def per_class(spec: str) -> list[float]:
    """Per-class test accuracy of the run's model (``moda_core.metrics.per_class_accuracy``)."""
    data = dataset(spec)
    return per_class_accuracy(_full_logits(spec), data.test.labels, data.num_classes)


@run_cached(max_entries=32, specs=2)
def swap(weak: str, strong: str, weak_class_id: int, strong_class_id: int, strategy: str, epochs: int = 5,
         tau: float = DEFAULT_TAU) -> dict[str, Any]:
    """``moda_core.replace.repair`` of the weak run's class with the strong run's module; its report
    (per-class accuracy before/after keyed by original class id, target gain, largest other change).
    Class arguments are original class ids."""
    weak_run, strong_run = load_run(weak), load_run(strong)
    return repair(weak_run, strong_run, class_index(weak_run, weak_class_id), class_index(strong_run, strong_class_id),
                  strategy=strategy, epochs=int(epochs), tau=float(tau),
                  save_decomposition=writable(strong_run)).report


def run_classes(spec: str) -> list[int]:
    """Original class ids of a run's logits, in logit order."""
    return classes_of(load_run(spec))


# ----- the Compare page's files (formats and readers: moda_core.comparison) ----------------------

def compare_csv_path() -> Path:
    """The comparison table: ``$MODA_COMPARE_CSV`` if set, else ``bench/results/compare.csv``."""
    configured = os.environ.get(COMPARE_ENV)
    return Path(configured).expanduser() if configured else COMPARE_CSV


def overhead_json_path(csv_path: Path | None = None) -> Path:
    """``train_overhead.json`` in the comparison table's folder."""
    return (csv_path or compare_csv_path()).parent / OVERHEAD_JSON


def _stamp(path: str) -> tuple[int, int]:
    try:
        info = Path(path).stat()
        return info.st_mtime_ns, info.st_size
    except OSError:
        return 0, 0


@st.cache_data(show_spinner=False, max_entries=8)
def _read_file(reader: str, path: str, stamp: tuple[int, int]):
    return {"compare": read_compare_table, "overhead": read_train_overhead}[reader](Path(path))


def compare_table(path: Path | None = None) -> pd.DataFrame:
    """The comparison table (cached until the file changes); raises ``CompareFileError``."""
    path = str(path or compare_csv_path())
    return _read_file("compare", path, _stamp(path))


def train_overhead(path: Path | None = None) -> tuple[str | None, dict[str, dict[str, float]]] | None:
    """(device, per-model step-time ratios) from ``train_overhead.json`` next to the comparison table, None
    when there is no such file; raises ``CompareFileError`` when it does not parse."""
    path = path or overhead_json_path()
    if not path.exists():
        return None
    return _read_file("overhead", str(path), _stamp(str(path)))


def compare_budgets(table: pd.DataFrame) -> dict[str, Any]:
    """Seeds and epoch budgets in the table, and the (model, width) rows whose methods did not share both."""
    grouped = table.groupby(["model", "width"], sort=False, dropna=False)
    uneven = [{"model": model, "width": width} for (model, width), group in grouped
              if group["seed"].nunique(dropna=False) > 1 or group["epochs"].nunique(dropna=False) > 1]
    return {"seeds": sorted(table["seed"].dropna().unique().tolist()),
            "epochs": sorted(table["epochs"].dropna().unique().tolist()), "uneven": uneven}
