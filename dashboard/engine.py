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
MAP_HOPS = 2  # weight layers a connection between two consecutive points may cross, at most
_MAP_STEPS = 20_000  # graph steps one walk may take (a bound for graphs with many residual paths)


def _unit_weights(module: torch.nn.Module) -> torch.Tensor | None:
    """A conv's or linear's |weights| as an outputs × inputs matrix (a conv's summed over its kernel, a grouped
    conv's zero between groups); None for any other module."""
    from torch import nn

    if isinstance(module, nn.Linear):
        return module.weight.detach().abs().float().cpu()
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        weight = module.weight.detach().abs().float().cpu()
        per_group = weight.flatten(2).sum(2)  # out × in/groups
        groups, out = module.groups, weight.shape[0]
        if groups == 1:
            return per_group
        full = torch.zeros(out, module.in_channels)
        rows, cols = out // groups, module.in_channels // groups
        for g in range(groups):
            full[g * rows:(g + 1) * rows, g * cols:(g + 1) * cols] = per_group[g * rows:(g + 1) * rows]
        return full
    return None


def _fold(matrix: torch.Tensor, units: int) -> torch.Tensor | None:
    """``matrix``'s columns summed down to ``units`` (a flatten spreads each channel over consecutive positions);
    None when they do not divide."""
    columns = matrix.shape[1]
    if columns == units:
        return matrix
    if columns % units:
        return None
    return matrix.view(matrix.shape[0], units, columns // units).sum(2)


def _map_graph(model: torch.nn.Module, points: list[str]) -> tuple[Any, dict[str, str]]:
    """The model's fx graph and its points' nodes (node name → point): a tapped model is its own graph (its taps
    are the points), a zoo model is traced by torch.fx (its points are ReLU module calls). Raises when fx cannot
    trace it."""
    from torch import fx

    from moda_core.tapped import taps_of

    taps = taps_of(model)
    if taps:
        by_tap = {id(tap): name for name, tap in taps.items()}
        graph_module = model
    else:
        graph_module = fx.symbolic_trace(model)
        by_tap = {id(graph_module.get_submodule(p)): p for p in points}
    sites = {node.name: by_tap[id(graph_module.get_submodule(node.target))] for node in graph_module.graph.nodes
             if node.op == "call_module" and id(graph_module.get_submodule(node.target)) in by_tap}
    return graph_module, sites


def _walk_stops(node: Any) -> bool:
    """Whether a walk back along the graph stops at an fx node: one that computes a size or a shape, not a
    tensor (``x.size(0)``, ``x.shape``), or a concatenation (its units come from several tensors)."""
    import builtins

    return (node.op == "call_method" and node.target in ("size", "dim", "numel")) or \
        (node.op == "call_function" and node.target in (builtins.getattr, torch.cat, torch.stack))


def _walk_links(graph_module: Any, sites: dict[str, str], units: dict[str, int], before: str, point: str,
                max_hops: int) -> tuple[np.ndarray, int] | None:
    """The connections from ``before``'s units to ``point``'s, walking the graph back from ``point`` (see
    ``weight_links``); None when no path crosses 1 … ``max_hops`` weight layers."""
    from torch import fx

    start = next(node for node in graph_module.graph.nodes if sites.get(node.name) == point)
    stack: list[tuple[Any, torch.Tensor, int]] = [(arg, torch.eye(units[point]), 0)
                                                  for arg in start.all_input_nodes[:1]]
    reached: dict[int, torch.Tensor] = {}
    steps = 0
    while stack and steps < _MAP_STEPS:
        steps += 1
        node, matrix, hops = stack.pop()
        if not isinstance(node, fx.Node) or node.op in ("placeholder", "get_attr", "output") or _walk_stops(node):
            continue
        name = sites.get(node.name)
        if name is not None:  # a point: the one before, or another one that a path may not cross
            folded = _fold(matrix, units[before]) if name == before and hops else None
            if folded is not None:
                reached[hops] = reached[hops] + folded if hops in reached else folded
            continue
        weights = _unit_weights(graph_module.get_submodule(node.target)) if node.op == "call_module" else None
        if weights is not None:
            folded = _fold(matrix, weights.shape[0]) if hops < max_hops else None
            if folded is not None and node.all_input_nodes:
                stack.append((node.all_input_nodes[0], folded @ weights, hops + 1))
            continue
        stack += [(arg, matrix, hops) for arg in node.all_input_nodes]
    if not reached:
        return None
    hops = min(reached)
    return reached[hops].numpy().astype(np.float32), hops


def _plan_links(model: torch.nn.Module, units: dict[str, int]) -> dict[str, tuple[np.ndarray, int]]:
    """A zoo model that fx cannot trace (MwT's gates): from its layer plan, each point's own conv or linear
    reading the point before it."""
    from moda_core.compose import layer_plan

    links: dict[str, tuple[np.ndarray, int]] = {}
    for step in layer_plan(model):
        before = step.feed.point
        for point in step.point_names().values():
            if before is not None:
                for module in step.module.modules():
                    weights = _unit_weights(module)
                    if weights is not None and weights.shape[0] == units[point]:
                        folded = _fold(weights, units[before])
                        if folded is not None:
                            links[point] = (folded.numpy().astype(np.float32), 1)
                        break
            before = point
    return links


def weight_links(model: torch.nn.Module, max_hops: int = MAP_HOPS) -> dict[str, tuple[np.ndarray, int]]:
    """For each activation point after the first: how strongly each unit of the point before it feeds each of its
    units, through the weights between them on the model's fx graph: (its units × the previous point's units,
    ≥ 0; the number of weight layers crossed). One conv or linear: its |weights| (a conv's summed over its kernel;
    through a flatten, a channel's positions summed); several (a ViT's fc2, then across the residual stream the
    next block's fc1): the product of their |weight| matrices, with norms, attention and pools passed over. Only
    the paths that cross the fewest weight layers (at least one, at most ``max_hops``) count: a skip connection
    alone is no weight. A zoo model fx cannot trace gets its blocks' own weights; points with no such path, and
    every point of any other model fx cannot trace, are left out."""
    from moda_core.activations import modular_points
    from moda_core.compose import point_units
    from moda_core.models.base import ZooNet

    points = modular_points(model)
    units = point_units(model)
    try:
        graph_module, sites = _map_graph(model, points)
    except Exception:  # noqa: BLE001 - fx cannot trace it: a zoo model still has its layer plan
        return _plan_links(model, units) if isinstance(model, ZooNet) else {}
    links: dict[str, tuple[np.ndarray, int]] = {}
    with torch.no_grad():
        for before, point in zip(points[:-1], points[1:], strict=True):
            if before in sites.values() and point in sites.values():
                found = _walk_links(graph_module, sites, units, before, point, max_hops)
                if found is not None:
                    links[point] = found
    return links


@st.cache_resource(show_spinner=False, max_entries=8)
def _map_links(spec: str, stamp: int) -> dict[str, tuple[np.ndarray, int]]:
    return weight_links(_load_run(spec, stamp).model)


def map_links(spec: str) -> dict[str, tuple[np.ndarray, int]]:
    """``weight_links`` of a run's model (shared, not copied: do not change the arrays)."""
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
