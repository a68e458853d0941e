"""Cached calls into ``moda_core`` for the dashboard pages. Every number shown comes from ``moda_core``;
this module only caches and converts (tensors → numpy for the figures). Which runs exist and how they are
named is ``dashboard.folders``' business.

Functions that take a run take its *spec* (``RUN`` or ``RUN@EPOCH``) as a string. Each public function is a
thin, uncached wrapper: it looks up the run's weights-file modification time (``weights_stamp``) and calls a
cached function that takes that stamp as an argument, so a run trained again is loaded again instead of served
stale. Heavy work (loading a run and its data, the test-set logits, a decomposition, a composition's report, an
export, the Module map's recording, a repair) runs on the server's board (``dashboard.jobs``: one pool, the same
work once for every visitor, words while one waits); light work (masks at τ, module sizes and overlap, one
image's activations, figures' numbers) is ``st.cache_data`` and runs at once. Public functions make sure of the
heavy results they need first, in the visitor's own thread, so that a wait is explained where the page is.

Everything cached here is shared by every visitor and read-only (docs/design.md, "What may be cached for
everyone"): models are used in eval mode through pure calls, arrays handed out shared are not writeable, and what
a page may change (reports, tables) is handed out as a copy.
"""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import torch

from dashboard import folders
from dashboard.folders import compare_csv_path, overhead_json_path, public, writable
from dashboard.jobs import heavy
from dashboard.plain_text import code
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
from moda_core.replace import class_index, repair
from moda_core.replace import run_classes as classes_of
from moda_core.store.names import CONFIG, MODEL, RunRef, checkpoint_path
from moda_core.store.summary import RunStatus, RunSummary
from moda_core.summary import module_summary
from moda_core.train import TrainConfig


def weights_stamp(spec: str) -> int:
    """Modification time (ns) of the weights file a spec loads (the final weights or the checkpoint); 0
    when it is missing. Every cached call takes it as an argument."""
    ref = RunRef.parse(spec)
    weights = ref.path / MODEL if ref.epoch is None else checkpoint_path(ref.path, ref.epoch)
    try:
        return weights.stat().st_mtime_ns
    except OSError:
        return 0


def _named(spec: str) -> str:
    return code(folders.run_label(spec))


def read_only(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arrays`` made read-only (shared by every visitor: writing into one raises)."""
    for array in arrays.values():
        array.flags.writeable = False
    return arrays


# ----- the run and what it is made of ---------------------------------------------------------------

@heavy("run", lambda spec, stamp: f"Loading run {_named(spec)}", keep=16)
def _load_run(spec: str, stamp: int) -> run_store.Run:
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    run = run_store.load_run(spec)
    run.model.eval().requires_grad_(False)  # shared: nothing trains or records into it
    return run


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
    stamp = weights_stamp(spec)
    _load_run(spec, stamp)
    return _composition_blocker(spec, stamp)


@st.cache_data(show_spinner=False, max_entries=64)
def _composition_blocker(spec: str, stamp: int) -> str | None:
    from moda_core.compose import composition_blocker as blocker

    reason = blocker(_load_run(spec, stamp).model)
    return None if reason is None else public(reason)


def graph_limits(spec: str) -> dict[str, Any]:
    """What composition keeps whole for a run's model and which points reach the logits directly (empty when it
    cannot compose at all: ``composition_blocker`` says why)."""
    stamp = weights_stamp(spec)
    _load_run(spec, stamp)
    return _graph_limits(spec, stamp)


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


@heavy("data", lambda spec, stamp: f"Loading the data set of {_named(spec)}", keep=8)
def _dataset(spec: str, stamp: int) -> Dataset:
    return run_store.run_dataset(_load_run(spec, stamp))


def dataset(spec: str) -> Dataset:
    """The run's data set (same classes, fraction and seed as training)."""
    return _dataset(spec, weights_stamp(spec))


@heavy("logits", lambda spec, stamp: f"Evaluating {_named(spec)} on its test set", keep=8)
def _full_logits(spec: str, stamp: int) -> torch.Tensor:
    return predict_logits(_load_run(spec, stamp).model, _dataset(spec, stamp).test)


# ----- modules at τ ---------------------------------------------------------------------------------

@heavy("modules", lambda spec, stamp: f"Finding the modules of {_named(spec)} (activation rates on its test set)",
       keep=16, progress=True)
def _decomposition(spec: str, stamp: int, progress: Any = None) -> Decomposition:
    # Rates do not depend on τ: computed (or read) once, masks are derived per τ below.
    run = _load_run(spec, stamp)
    return decompose(run, DEFAULT_TAU, save=writable(run), progress=progress, data=_dataset(spec, stamp))


def _loaded(spec: str) -> int:
    """The run's stamp, once the run and its data set are loaded (here, with words, if they were not)."""
    stamp = weights_stamp(spec)
    _load_run(spec, stamp)
    _dataset(spec, stamp)
    return stamp


def _decomposed(spec: str) -> int:
    """The run's stamp, once its decomposition is known (computed here, with words, if it was not)."""
    stamp = _loaded(spec)
    _decomposition(spec, stamp)
    return stamp


def rates(spec: str) -> dict[str, torch.Tensor]:
    """Per-point class×unit activation rates (read from the run folder, or computed)."""
    return {p: r.clone() for p, r in _decomposition(spec, _loaded(spec)).rates.items()}  # the visitor's own copy


@st.cache_data(show_spinner=False, max_entries=64)
def _masks(spec: str, stamp: int, tau: float) -> dict[str, np.ndarray]:
    return {p: m.numpy() for p, m in _torch_masks(spec, stamp, tau).items()}


def masks(spec: str, tau: float) -> dict[str, np.ndarray]:
    """Per-point class×unit module masks at τ (``moda_core.decompose.masks_from_rates``)."""
    return _masks(spec, _decomposed(spec), tau)


def _torch_masks(spec: str, stamp: int, tau: float) -> dict[str, torch.Tensor]:
    """Masks at τ: the stored ones at the decomposition's own τ, else counted from the rates (milliseconds; no
    Streamlit cache, so that heavy work on the board may call it)."""
    stored = _decomposition(spec, stamp)
    return stored.masks if abs(float(tau) - stored.tau) < 1e-9 else masks_from_rates(stored.rates, float(tau))


@st.cache_data(show_spinner=False, max_entries=64)
def _module_metrics(spec: str, stamp: int, tau: float) -> dict[str, Any]:
    summary = module_summary(_load_run(spec, stamp).model, _torch_masks(spec, stamp, tau))
    return {"sizes": summary.sizes, "mean_size": summary.mean_size, "overlap": summary.overlap.numpy(),
            "mean_overlap": summary.mean_overlap, "by_layer": summary.mean_overlap_by_layer,
            "params": summary.params}


def module_metrics(spec: str, tau: float) -> dict[str, Any]:
    """``moda_core.summary.module_summary`` at τ: module sizes and their mean, the overlap matrix (numpy),
    the mean pairwise overlap, its per-layer breakdown and the model's parameter count."""
    return _module_metrics(spec, _decomposed(spec), tau)


@st.cache_data(show_spinner=False, max_entries=64)
def _modular_points(spec: str, stamp: int) -> list[str]:
    from moda_core.activations import modular_points as points

    return points(_load_run(spec, stamp).model)


def modular_points(spec: str) -> list[str]:
    """The run's modular points (the activations whose units make up modules), in forward order
    (``moda_core.activations.modular_points``)."""
    stamp = weights_stamp(spec)
    _load_run(spec, stamp)
    return _modular_points(spec, stamp)


@st.cache_data(show_spinner=False, max_entries=16)
def tau_pairs(num_classes: int) -> list[list[int]]:
    """The class pairs (logit positions) the τ trade-off composes for a run of ``num_classes`` classes: its study's
    default, a seeded sample of a few pairs (``moda_core.studies.default_pairs``)."""
    from moda_core.studies import default_pairs

    return default_pairs(int(num_classes))


# ----- composing, exporting, one image, swapping -----------------------------------------------------

def _classes_text(classes: tuple[int, ...]) -> str:
    return ", ".join(str(c) for c in classes)


@heavy("compose", lambda spec, stamp, tau, classes: f"Composing classes {_classes_text(classes)} of "
       f"{_named(spec)} at τ = {tau:.2f} and measuring it on the test set", keep=64)
def _compose(spec: str, stamp: int, tau: float, classes: tuple[int, ...]) -> dict[str, Any]:
    return compose_report(_load_run(spec, stamp).model, _torch_masks(spec, stamp, tau), list(classes),
                          _dataset(spec, stamp).test, full_logits=_full_logits(spec, stamp))


def compose(spec: str, tau: float, classes: list[int]) -> dict[str, Any]:
    """``moda_core.metrics.compose_report`` for these classes (parameters, FLOPs, accuracy vs full model)."""
    stamp = _decomposed(spec)
    return copy.deepcopy(_compose(spec, stamp, round(float(tau), 6), tuple(sorted(int(c) for c in classes))))


@heavy("export", lambda spec, stamp, tau, classes: f"Exporting the module of classes {_classes_text(classes)} "
       f"of {_named(spec)} (torch.export)", keep=4)
def _export_bytes(spec: str, stamp: int, tau: float, classes: tuple[int, ...]) -> bytes:
    run = _load_run(spec, stamp)
    module = compose_module(run.model, _torch_masks(spec, stamp, tau), list(classes))
    with tempfile.TemporaryDirectory() as folder:
        path = export_module(module, Path(folder) / "module.pt2", run.model.input_shape)
        return path.read_bytes()


def export_bytes(spec: str, tau: float, classes: list[int]) -> bytes:
    """The composed module exported with ``moda_core.export`` as ``.pt2`` file contents."""
    stamp = _decomposed(spec)
    return _export_bytes(spec, stamp, round(float(tau), 6), tuple(sorted(int(c) for c in classes)))


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
    return _image_activations(spec, _loaded(spec), index)


SWAP_RESULTS = 32  # finished swaps kept (the least recently used goes first)


def _swap_label(weak: str, weak_stamp: int, strong: str, strong_stamp: int, weak_class_id: int,
                strong_class_id: int, strategy: str, epochs: int, tau: float) -> str:
    return (f"Repairing class {weak_class_id} of {_named(weak)} with the module of {_named(strong)} "
            f"({strategy}, τ = {tau:.2f})")


@heavy("swap", _swap_label, keep=SWAP_RESULTS, progress=True)
def _swap(weak: str, weak_stamp: int, strong: str, strong_stamp: int, weak_class_id: int, strong_class_id: int,
          strategy: str, epochs: int, tau: float, progress: Any = None) -> dict[str, Any]:
    weak_run, strong_run = _load_run(weak, weak_stamp), _load_run(strong, strong_stamp)

    def stage(text: str, done: float) -> None:  # the repair's stages as a share of 100 steps, with their words
        if progress is not None:
            progress(round(100 * min(max(done, 0.0), 1.0)), 100, text)

    return repair(weak_run, strong_run, class_index(weak_run, weak_class_id), class_index(strong_run, strong_class_id),
                  strategy=strategy, epochs=epochs, tau=tau, save_decomposition=writable(strong_run),
                  stage=stage).report


def swap(weak: str, strong: str, weak_class_id: int, strong_class_id: int, strategy: str, epochs: int = 5,
         tau: float = DEFAULT_TAU) -> dict[str, Any]:
    """``moda_core.replace.repair`` of the weak run's class with the strong run's module; its report (per-class
    accuracy before/after keyed by original class id, target gain, largest other change), a copy. Class arguments
    are original class ids. A repair runs on the server's board, its stages shown to whoever waits for it; one
    already made for the same weights and settings is answered at once."""
    weak_stamp, strong_stamp = weights_stamp(weak), weights_stamp(strong)
    _load_run(weak, weak_stamp)
    _load_run(strong, strong_stamp)
    report = _swap(weak, weak_stamp, strong, strong_stamp, int(weak_class_id), int(strong_class_id), str(strategy),
                   int(epochs), round(float(tau), 6))
    return copy.deepcopy(report)


# ----- the Runs page: what a run's config.json says, its loss terms, its name and its removal ----------------

@st.cache_data(show_spinner=False, max_entries=1024)
def _run_facts(path: str, stamp: tuple[int, int]) -> dict[str, Any]:
    from moda_core.data import DATASETS

    try:
        config = run_store.read_config(path)
    except ModaError:
        return {}
    train, data, arch = config.get("train") or {}, config.get("data") or {}, config.get("arch") or {}
    classes = data.get("classes") or train.get("classes")
    fraction = data.get("train_fraction", train.get("train_fraction"))
    info = DATASETS.get(str(data.get("name") or train.get("dataset")))
    every = not classes or (info is not None and sorted(classes) == list(range(info.num_classes)))
    return {"width": arch.get("width", train.get("width")),
            "classes": (f"all {info.num_classes}" if info else "all") if every else ", ".join(str(c) for c in classes),
            "data fraction": None if fraction is None else 100 * float(fraction)}


def run_facts(path: str | Path) -> dict[str, Any]:
    """Width, class subset ("all 10", or the classes) and training-data fraction (percent) of a run, from its
    config.json ({} when it does not read); read again only when the file changes."""
    return _run_facts(str(path), _file_stamp(Path(path) / CONFIG))


def run_method(summary: RunSummary) -> tuple[str | None, str | None]:
    """A listed run's method as the runs table shows it — its label, "MODA", with its loss weights by their own names
    in brackets when they are not the method's defaults ("MODA (affinity 2, dispersion 1, compactness 0.3)": a
    sweep's runs differ there) — and its weights ("affinity 1, dispersion 1, compactness 0.3"; empty for standard
    training); (None, None) for a broken run or an unknown method."""
    from moda_core.methods import METHODS, weights_text

    if summary.method not in METHODS or summary.status is RunStatus.BROKEN:
        return None, None
    label = METHODS[summary.method].label
    weights = weights_text(summary.method, {"alpha": summary.alpha, "beta": summary.beta, "gamma": summary.gamma})
    return (label if weights == weights_text(summary.method, {}) else f"{label} ({weights})"), weights


@st.cache_data(show_spinner=False, max_entries=64)
def _loss_terms(spec: str, stamp: int) -> dict[str, bool]:
    from moda_core.methods import method_of, settings_of

    config = _load_run(spec, stamp).config
    return method_of(config).terms(settings_of(config))


def loss_terms(spec: str) -> dict[str, bool]:
    """The loss terms a run's history records, in order: name → whether it was trained (False: measured only, e.g.
    a standard run's modular terms)."""
    stamp = weights_stamp(spec)
    _load_run(spec, stamp)
    return _loss_terms(spec, stamp)


def stored_training(path: str | Path) -> TrainConfig:
    """An interrupted run's stored training settings, as a ``TrainConfig`` of the visitor's own; a ``ModaError``
    when its config.json does not read, a ``ValueError`` or ``TypeError`` when its settings do not make one."""
    record = run_store.read_config(path).get("train")
    return TrainConfig.from_record(record if isinstance(record, dict) else {})


def check_run_name(name: str) -> None:
    """The run store's rule for a run's name (``moda_core.store.names.check_run_name``): a ``ModaError`` says why
    ``name`` cannot be used."""
    run_store.check_run_name(name)


def discard_run(path: str | Path) -> None:
    """Delete a run that nothing trains into (``moda_core.store.lifecycle.discard_run``; a ``ModaError`` while a
    process trains into it)."""
    run_store.discard_run(path)


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


@st.cache_data(max_entries=16, show_spinner=False)
def fully_connected_share(model: str, width: float) -> tuple[int, int] | None:
    """(parameters in fully connected layers, all parameters) of the zoo model ``model`` at ``width`` (ten classes,
    28×28 digits, as the comparison table trains it); None for a model that is not the zoo's
    (``moda_core.summary.fully_connected_share``)."""
    from moda_core.summary import fully_connected_share as share

    return share(model, float(width))


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
    return _kept_share_by_tau(spec, _decomposed(spec))


@st.cache_data(show_spinner=False, max_entries=64)
def _class_specific_point(spec: str, stamp: int) -> str:
    from moda_core.decompose import most_class_specific_point

    return most_class_specific_point(_decomposition(spec, stamp).rates)


def class_specific_point(spec: str) -> str:
    """The activation point whose units are most class-specific (``moda_core.decompose.most_class_specific_point``):
    where the rates' heatmap shows the modules as blocks; Activations opens there."""
    return _class_specific_point(spec, _decomposed(spec))


@st.cache_data(show_spinner=False, max_entries=64)
def _module_floor(spec: str, stamp: int) -> float:
    from moda_core.summary import module_floor as floor

    return floor(_load_run(spec, stamp).model)


def module_floor(spec: str) -> float:
    """The share of the model's parameters every single-class module keeps whatever its masks (a ViT's
    attention, norms and embeddings; ``moda_core.summary.module_floor``): the floor of every module size."""
    stamp = weights_stamp(spec)
    _load_run(spec, stamp)
    return _module_floor(spec, stamp)


# ----- the module map: weights between consecutive points, what fires a unit (the Module map page) ----------

MAP_IMAGES = 1000  # the module map ranks a unit's activation over at most this many test images (the first ones)
@heavy("links", lambda spec, stamp: f"Reading the weights between the layers of {_named(spec)}", keep=8)
def _map_links(spec: str, stamp: int) -> dict[str, tuple[np.ndarray, int]]:
    links = weight_links(_load_run(spec, stamp).model)
    read_only({point: array for point, (array, _) in links.items()})
    return links


def map_links(spec: str) -> dict[str, tuple[np.ndarray, int]]:
    """``moda_core.links.weight_links`` of a run's model (shared, not copied: the arrays are read-only)."""
    stamp = weights_stamp(spec)
    _load_run(spec, stamp)
    return _map_links(spec, stamp)


@heavy("map", lambda spec, stamp: f"Recording the units of {_named(spec)} on its first {MAP_IMAGES:,} test images",
       keep=4)
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
    return read_only({point: torch.cat(chunks).numpy() for point, chunks in parts.items()})


def map_activations(spec: str, point: str) -> np.ndarray:
    """Images × units: each unit's activation at ``point`` on the first ``MAP_IMAGES`` test images (a conv
    channel's or a token unit's mean over its positions), computed once per run (shared, not copied)."""
    return _map_activations(spec, _loaded(spec))[point]


def map_images(spec: str, indices: list[int]) -> list[tuple[np.ndarray, int]]:
    """(pixels, label as a logit index) of these test images: uint8, H×W for one channel, else H×W×C."""
    test = dataset(spec).test
    shown = []
    for index in indices:
        image = test.images[int(index)].cpu().numpy()
        shown.append((image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0), int(test.labels[int(index)])))
    return shown


# ----- the server's warm-up --------------------------------------------------------------------------------------

def warm_up_runs() -> None:
    """Run once per server, in the background, once the first page is out (``dashboard.app``): read every
    configured runs folder (``moda_core.store.listing`` keeps what it read of a settled folder, so later listings read
    nothing again), then do the heavy work the pages start with for the run they open by default
    (``ui.default_index``: the bundled MODA demo, else the first complete modular run) and its twins: the run, its
    data set, its modules, its test-set logits, and for the default run the Module map's recording. The work goes
    through the board like a visitor's, so a visitor who asks for the same meanwhile waits for it rather than doing
    it again."""
    from dashboard import ui
    from dashboard.study_jobs import twins

    runs = [s for s in folders.list_runs(every_folder=True) if folders.openable(s)]
    if not runs:
        return
    first = str(runs[ui.default_index(runs, ui.modular_demo_first, ui.is_modular)].ref)
    specs = list(dict.fromkeys([first, *twins(runs, first).values()]))
    for spec in specs:
        stamp = weights_stamp(spec)
        _decomposition(spec, stamp)
        _full_logits(spec, stamp)
        if spec == specs[0]:
            _map_links(spec, stamp)
            _map_activations(spec, stamp)
