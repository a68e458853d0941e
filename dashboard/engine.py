"""Cached calls into ``moda_core`` for the dashboard pages. Every number shown comes from ``moda_core``;
this module only caches and converts (tensors → numpy for the figures). Which runs exist and how they are
named is ``dashboard.folders``' business.

Functions that take a run take its *spec* (``RUN`` or ``RUN@EPOCH``) as a string. Each public function is a
thin, uncached wrapper: it looks up the run's weights-file modification time (``weights_stamp``) and calls
a ``st.cache_resource`` (live objects, shared, not copied) or ``st.cache_data`` (arrays, reports) function
that takes that stamp as an argument, so a run trained again is loaded again instead of served stale.
Cached functions call each other with the stamp they were given.
"""
from __future__ import annotations

import copy
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import torch

from dashboard.folders import compare_csv_path, overhead_json_path, public, writable
from moda_core import runs as run_store
from moda_core.activations import run_with_cache, units_firing
from moda_core.comparison import read_compare_table, read_train_overhead
from moda_core.compose import compose_module
from moda_core.data import Dataset
from moda_core.decompose import DEFAULT_TAU, Decomposition, decompose, masks_from_rates
from moda_core.errors import ModaError
from moda_core.evaluate import predict_logits
from moda_core.export import export_module
from moda_core.links import weight_links
from moda_core.metrics import compose_report
from moda_core.replace import Stage, class_index, repair
from moda_core.replace import run_classes as classes_of
from moda_core.summary import module_summary


def weights_stamp(spec: str) -> int:
    """Modification time (ns) of the weights file a spec loads (the final weights or the checkpoint); 0
    when it is missing. Every cached call takes it as an argument."""
    path, epoch = run_store.split_run_spec(spec)
    weights = path / run_store.MODEL if epoch is None else run_store.checkpoint_path(path, epoch)
    try:
        return weights.stat().st_mtime_ns
    except OSError:
        return 0


# ----- the run and what it is made of ---------------------------------------------------------------

@st.cache_resource(show_spinner=False, max_entries=16)
def _load_run(spec: str, stamp: int) -> run_store.Run:
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    return run_store.load_run(spec)


def load_run(spec: str) -> run_store.Run:
    """The loaded run (model in eval mode); raises ``ModaError`` with a readable message."""
    return _load_run(spec, weights_stamp(spec))


def try_load(spec: str) -> tuple[run_store.Run | None, str | None]:
    """(run, None) or (None, the reason it does not load, without server paths)."""
    try:
        return load_run(spec), None
    except ModaError as error:
        return None, public(str(error))


def composition_blocker(spec: str) -> str | None:
    """Why a run's model cannot be composed (None when it can; see ``moda_core.compose.composition_blocker``)."""
    return _composition_blocker(spec, weights_stamp(spec))


@st.cache_data(show_spinner=False, max_entries=64)
def _composition_blocker(spec: str, stamp: int) -> str | None:
    from moda_core.compose import composition_blocker as blocker

    reason = blocker(_load_run(spec, stamp).model)
    return None if reason is None else public(reason)


def graph_limits(spec: str) -> dict[str, Any]:
    """What composition keeps whole for a run's model and which points reach the logits directly (empty when it
    cannot compose at all: ``composition_blocker`` says why)."""
    return _graph_limits(spec, weights_stamp(spec))


@st.cache_data(show_spinner=False, max_entries=64)
def _graph_limits(spec: str, stamp: int) -> dict[str, Any]:
    from moda_core.graph import graph_of

    model = _load_run(spec, stamp).model
    if _composition_blocker(spec, stamp) is not None:
        return {"kept_whole": [], "logit_points": []}
    graph = graph_of(model)
    return {"kept_whole": graph.kept_whole(), "logit_points": graph.logit_points()}


def class_names(spec: str) -> list[str]:
    """The names of a run's classes, in logit order (their ids when the data set names none)."""
    run = load_run(spec)
    names = run.config.get("data", {}).get("class_names")
    classes = run.config.get("data", {}).get("classes")
    if names:
        return [str(n) for n in names]
    return [str(c) for c in (classes or range(run.model.arch["num_classes"]))]


def run_classes(spec: str) -> list[int]:
    """Original class ids of a run's logits, in logit order."""
    return classes_of(load_run(spec))


@st.cache_resource(show_spinner=False, max_entries=8)
def _dataset(spec: str, stamp: int) -> Dataset:
    return run_store.run_dataset(_load_run(spec, stamp))


def dataset(spec: str) -> Dataset:
    """The run's data set (same classes, fraction and seed as training)."""
    return _dataset(spec, weights_stamp(spec))


@st.cache_resource(show_spinner=False, max_entries=8)
def _full_logits(spec: str, stamp: int) -> torch.Tensor:
    return predict_logits(_load_run(spec, stamp).model, _dataset(spec, stamp).test)


# ----- modules at τ ---------------------------------------------------------------------------------

@st.cache_resource(show_spinner=False, max_entries=16)
def _decomposition(spec: str, stamp: int) -> Decomposition:
    # Rates do not depend on τ: computed (or read) once, masks are derived per τ below.
    run = _load_run(spec, stamp)
    return decompose(run, DEFAULT_TAU, save=writable(run))


def rates(spec: str) -> dict[str, torch.Tensor]:
    """Per-point class×unit activation rates (read from the run folder, or computed)."""
    return _decomposition(spec, weights_stamp(spec)).rates


@st.cache_data(show_spinner=False, max_entries=64)
def _masks(spec: str, stamp: int, tau: float) -> dict[str, np.ndarray]:
    stored = _decomposition(spec, stamp)
    chosen = stored.masks if abs(float(tau) - stored.tau) < 1e-9 else masks_from_rates(stored.rates, float(tau))
    return {p: m.numpy() for p, m in chosen.items()}


def masks(spec: str, tau: float) -> dict[str, np.ndarray]:
    """Per-point class×unit module masks at τ (``moda_core.decompose.masks_from_rates``)."""
    return _masks(spec, weights_stamp(spec), tau)


def _torch_masks(spec: str, stamp: int, tau: float) -> dict[str, torch.Tensor]:
    return {p: torch.from_numpy(m) for p, m in _masks(spec, stamp, tau).items()}



@st.cache_data(show_spinner=False, max_entries=64)
def _module_metrics(spec: str, stamp: int, tau: float) -> dict[str, Any]:
    summary = module_summary(_load_run(spec, stamp).model, _torch_masks(spec, stamp, tau))
    return {"sizes": summary.sizes, "mean_size": summary.mean_size, "overlap": summary.overlap.numpy(),
            "mean_overlap": summary.mean_overlap, "by_layer": summary.mean_overlap_by_layer,
            "params": summary.params}


def module_metrics(spec: str, tau: float) -> dict[str, Any]:
    """``moda_core.summary.module_summary`` at τ: module sizes and their mean, the overlap matrix (numpy),
    the mean pairwise overlap, its per-layer breakdown and the model's parameter count."""
    return _module_metrics(spec, weights_stamp(spec), tau)


# ----- composing, exporting, one image, swapping -----------------------------------------------------

@st.cache_data(show_spinner=False, max_entries=64)
def _compose(spec: str, stamp: int, tau: float, classes: list[int]) -> dict[str, Any]:
    return compose_report(_load_run(spec, stamp).model, _torch_masks(spec, stamp, tau), sorted(classes),
                          _dataset(spec, stamp).test, full_logits=_full_logits(spec, stamp))


def compose(spec: str, tau: float, classes: list[int]) -> dict[str, Any]:
    """``moda_core.metrics.compose_report`` for these classes (parameters, FLOPs, accuracy vs full model)."""
    return _compose(spec, weights_stamp(spec), tau, classes)


@st.cache_data(show_spinner=False, max_entries=32)
def _export_bytes(spec: str, stamp: int, tau: float, classes: list[int]) -> bytes:
    run = _load_run(spec, stamp)
    module = compose_module(run.model, _torch_masks(spec, stamp, tau), sorted(classes))
    with tempfile.TemporaryDirectory() as folder:
        path = export_module(module, Path(folder) / "module.pt2", run.model.input_shape)
        return path.read_bytes()


def export_bytes(spec: str, tau: float, classes: list[int]) -> bytes:
    """The composed module exported with ``moda_core.export`` as ``.pt2`` file contents."""
    return _export_bytes(spec, weights_stamp(spec), tau, classes)


@st.cache_data(show_spinner=False, max_entries=256)
def _image_activations(spec: str, stamp: int, index: int) -> dict[str, Any]:
    run = _load_run(spec, stamp)
    test = _dataset(spec, stamp).test
    x, y = test.batch(slice(int(index), int(index) + 1))
    with torch.no_grad():
        logits, cache = run_with_cache(run.model, x)
    fired = {p: units_firing(a)[0].numpy() for p, a in cache.items()}
    raw = test.images[int(index)].float().div(255.0).permute(1, 2, 0).numpy()
    return {"image": raw if raw.shape[2] == 3 else raw[:, :, 0], "label": int(y[0]),
            "predicted": int(logits.argmax(1)[0]), "fired": fired}


def image_activations(spec: str, index: int) -> dict[str, Any]:
    """For one test image: the pixels, true and predicted label, and per point which units fire
    (``moda_core.activations.run_with_cache``; a conv unit fires when any of its positions is non-zero)."""
    return _image_activations(spec, weights_stamp(spec), index)


SWAP_RESULTS = 32  # finished swaps kept (the oldest goes first)


@st.cache_resource(show_spinner=False)
def _swap_results() -> tuple[threading.Lock, dict[tuple, dict[str, Any]]]:
    # Not a st.cache_data function around the repair: the repair reports its stages to a progress bar the
    # page drew, and an element drawn from inside a cached function is replayed (and fails) on a cache hit.
    return threading.Lock(), {}


def swap(weak: str, strong: str, weak_class_id: int, strong_class_id: int, strategy: str, epochs: int = 5,
         tau: float = DEFAULT_TAU, progress: Stage | None = None) -> dict[str, Any]:
    """``moda_core.replace.repair`` of the weak run's class with the strong run's module; its report
    (per-class accuracy before/after keyed by original class id, target gain, largest other change).
    Class arguments are original class ids. ``progress(text, done)`` hears of each stage of a repair that
    runs (``repair``'s ``stage``); a repair already made for the same weights and settings is answered from
    memory without a word."""
    key = (weak, weights_stamp(weak), strong, weights_stamp(strong), int(weak_class_id), int(strong_class_id),
           strategy, int(epochs), round(float(tau), 6))
    lock, results = _swap_results()
    with lock:
        report = results.get(key)
    if report is None:
        weak_run, strong_run = _load_run(weak, key[1]), _load_run(strong, key[3])
        report = repair(weak_run, strong_run, class_index(weak_run, weak_class_id),
                        class_index(strong_run, strong_class_id), strategy=strategy, epochs=int(epochs),
                        tau=float(tau), save_decomposition=writable(strong_run), stage=progress).report
        with lock:
            results[key] = report
            while len(results) > SWAP_RESULTS:
                del results[next(iter(results))]
    return copy.deepcopy(report)


# ----- the Compare page's files (formats and readers: moda_core.comparison) ----------------------

def _file_stamp(path: Path) -> tuple[int, int]:
    try:
        info = path.stat()
        return info.st_mtime_ns, info.st_size
    except OSError:
        return 0, 0


@st.cache_data(show_spinner=False, max_entries=8)
def _compare_table(path: str, stamp: tuple[int, int]) -> pd.DataFrame:
    return read_compare_table(Path(path))


@st.cache_data(show_spinner=False, max_entries=8)
def _train_overhead(path: str, stamp: tuple[int, int]) -> tuple[str | None, dict[str, dict[str, float]]]:
    return read_train_overhead(Path(path))


def compare_table(path: Path | None = None) -> pd.DataFrame:
    """The comparison table (cached until the file changes); raises ``CompareFileError``."""
    path = Path(path or compare_csv_path())
    return _compare_table(str(path), _file_stamp(path))


def train_overhead(path: Path | None = None) -> tuple[str | None, dict[str, dict[str, float]]] | None:
    """(device, per-model step-time ratios) from ``train_overhead.json`` next to the comparison table, None
    when there is no such file; raises ``CompareFileError`` when it does not parse."""
    path = Path(path or overhead_json_path())
    if not path.exists():
        return None
    return _train_overhead(str(path), _file_stamp(path))


def compare_budgets(table: pd.DataFrame) -> dict[str, Any]:
    """Seeds and epoch budgets in the table, and the (model, width) rows whose methods did not share both."""
    grouped = table.groupby(["model", "width"], sort=False, dropna=False)
    uneven = [{"model": model, "width": width} for (model, width), group in grouped
              if group["seed"].nunique(dropna=False) > 1 or group["epochs"].nunique(dropna=False) > 1]
    return {"seeds": sorted(table["seed"].dropna().unique().tolist()),
            "epochs": sorted(table["epochs"].dropna().unique().tolist()), "uneven": uneven}


# ----- how τ changes the modules, and what no mask can drop (the Activations page) ------------------

@st.cache_data(show_spinner=False, max_entries=32)
def _kept_share_by_tau(spec: str, stamp: int) -> dict[str, np.ndarray]:
    from moda_core.decompose import TAU_RANGE, kept_share_by_tau

    return {p: np.asarray(s) for p, s in kept_share_by_tau(_decomposition(spec, stamp).rates, TAU_RANGE).items()}


def kept_share_by_tau(spec: str) -> dict[str, np.ndarray]:
    """Per point: the mean share of its units a class module keeps at each τ of ``moda_core.decompose.TAU_RANGE``
    (0.50 … 1.00; ``moda_core.decompose.kept_share_by_tau``)."""
    return _kept_share_by_tau(spec, weights_stamp(spec))


@st.cache_data(show_spinner=False, max_entries=64)
def _tau_sensitive_point(spec: str, stamp: int) -> str:
    from moda_core.decompose import TAU_RANGE
    from moda_core.decompose import tau_sensitive_point as find_point

    return find_point(_decomposition(spec, stamp).rates, TAU_RANGE)


def tau_sensitive_point(spec: str) -> str:
    """The activation point whose modules τ changes most (``moda_core.decompose.tau_sensitive_point``): where
    the Activations page opens."""
    return _tau_sensitive_point(spec, weights_stamp(spec))


@st.cache_data(show_spinner=False, max_entries=64)
def _module_floor(spec: str, stamp: int) -> float:
    from moda_core.summary import module_floor as floor

    return floor(_load_run(spec, stamp).model)


def module_floor(spec: str) -> float:
    """The share of the model's parameters every single-class module keeps whatever its masks (a ViT's
    attention, norms and embeddings; ``moda_core.summary.module_floor``): the floor of every module size."""
    return _module_floor(spec, weights_stamp(spec))


# ----- the module map: weights between consecutive points, what fires a unit (the Module map page) ----------

MAP_IMAGES = 1000  # the module map ranks a unit's activation over at most this many test images (the first ones)
@st.cache_resource(show_spinner=False, max_entries=8)
def _map_links(spec: str, stamp: int) -> dict[str, tuple[np.ndarray, int]]:
    return weight_links(_load_run(spec, stamp).model)


def map_links(spec: str) -> dict[str, tuple[np.ndarray, int]]:
    """``moda_core.links.weight_links`` of a run's model (shared, not copied: do not change the arrays)."""
    return _map_links(spec, weights_stamp(spec))


@st.cache_resource(show_spinner=False, max_entries=4)
def _map_activations(spec: str, stamp: int) -> dict[str, np.ndarray]:
    run = _load_run(spec, stamp)
    test = _dataset(spec, stamp).test
    count = min(MAP_IMAGES, len(test))
    parts: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for start in range(0, count, 250):
            x, _ = test.batch(slice(start, min(count, start + 250)))
            _, cache = run_with_cache(run.model, x)
            for point, activation in cache.items():
                per_image = activation.flatten(2).mean(2) if activation.dim() > 2 else activation
                parts.setdefault(point, []).append(per_image.float().cpu())
    return {point: torch.cat(chunks).numpy() for point, chunks in parts.items()}


def map_activations(spec: str, point: str) -> np.ndarray:
    """Images × units: each unit's activation at ``point`` on the first ``MAP_IMAGES`` test images (a conv
    channel's or a token unit's mean over its positions), computed once per run (shared, not copied)."""
    return _map_activations(spec, weights_stamp(spec))[point]


def map_images(spec: str, indices: list[int]) -> list[tuple[np.ndarray, int]]:
    """(pixels, label as a logit index) of these test images: uint8, H×W for one channel, else H×W×C."""
    test = dataset(spec).test
    shown = []
    for index in indices:
        image = test.images[int(index)].cpu().numpy()
        shown.append((image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0), int(test.labels[int(index)])))
    return shown
