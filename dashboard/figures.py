"""Plotly figures of the dashboard, as pure functions of arrays (no Streamlit, no moda_core calls).

Every figure gets axis titles a teacher can read aloud, and colour scales that stay ordered in
greyscale and for colour-blind viewers (viridis for rates and counts, cividis for overlaps and
masks). Tests call these functions directly with hand-made arrays.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

RATE_SCALE = "Viridis"
OVERLAP_SCALE = "Cividis"
# two colours that differ in lightness as well as hue (Okabe–Ito blue and orange)
PAIR_COLOURS = ("#0072B2", "#E69F00")
HISTORY_TERMS = ("ce", "affinity", "dispersion", "compactness")
# Okabe–Ito: a categorical palette that colour-blind viewers can tell apart
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def _layout(fig: go.Figure, title: str, x_title: str, y_title: str, height: int | None = None) -> go.Figure:
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, margin=dict(l=60, r=20, t=60, b=50),
                      template="plotly_white", colorway=list(OKABE_ITO))
    if height:
        fig.update_layout(height=height)
    return fig


def rate_heatmap(rates: np.ndarray, class_names: Sequence[str], point: str,
                 unit_order: Sequence[int] | None = None, tau: float | None = None,
                 masks: np.ndarray | None = None) -> go.Figure:
    """Class×unit heatmap of activation rates at one point.

    ``unit_order`` reorders the columns (the x labels keep the original unit index). With ``masks``
    (class×unit bool, same shape) an outlined-square marker trace shows which cells each class
    module keeps.
    """
    rates = np.asarray(rates, dtype=float)
    order = np.arange(rates.shape[1]) if unit_order is None else np.asarray(unit_order)
    shown = rates[:, order]
    units = [str(u) for u in order]
    fig = go.Figure(go.Heatmap(z=shown, x=units, y=list(class_names), colorscale=RATE_SCALE, zmin=0.0, zmax=1.0,
                               colorbar=dict(title="rate"),
                               hovertemplate="class %{y}, unit %{x}: fires on %{z:.0%} of its samples"
                                             "<extra></extra>"))
    if masks is not None:
        kept = np.asarray(masks, dtype=bool)[:, order]
        rows, cols = np.nonzero(kept)
        fig.add_trace(go.Scatter(x=[units[c] for c in cols], y=[class_names[r] for r in rows], mode="markers",
                                 marker=dict(symbol="square-open", size=7, color="white", line=dict(width=1)),
                                 name=f"in module (rate ≥ τ={tau:.2f})" if tau is not None else "in module",
                                 hoverinfo="skip", showlegend=True))
        fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0))
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category", autorange="reversed")
    title = f"Activation rate per class and unit at {point}"
    return _layout(fig, title, "unit (channel or neuron)", "class", height=140 + 28 * len(class_names))


def units_by_class_order(rates: np.ndarray, masks: np.ndarray) -> list[int]:
    """Units sorted by the class they serve: grouped by the first class whose module keeps them
    (units no module keeps go last), and within a group by falling rate for that class."""
    rates = np.asarray(rates, dtype=float)
    masks = np.asarray(masks, dtype=bool)
    num_classes = rates.shape[0]
    owner = np.where(masks.any(0), masks.argmax(0), num_classes)
    own_rate = np.where(owner < num_classes, rates[np.minimum(owner, num_classes - 1), np.arange(rates.shape[1])],
                        rates.max(0))
    return sorted(range(rates.shape[1]), key=lambda u: (owner[u], -own_rate[u], u))


def firing_figure(fired: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray], class_index: int,
                  class_name: str) -> go.Figure:
    """For one test image: per point, how many units fire, and how many of them lie in the module of
    ``class_index`` (e.g. the predicted class). ``fired`` maps point → bool units; ``masks`` point →
    class×unit bool."""
    points = list(fired)
    inside = [int((np.asarray(fired[p], bool) & np.asarray(masks[p], bool)[class_index]).sum()) for p in points]
    total = [int(np.asarray(fired[p], bool).sum()) for p in points]
    outside = [t - i for t, i in zip(total, inside)]
    fig = go.Figure([
        go.Bar(x=points, y=inside, name=f"fires, in module of {class_name}", marker_color=PAIR_COLOURS[0]),
        go.Bar(x=points, y=outside, name="fires, outside that module", marker_color=PAIR_COLOURS[1]),
    ])
    fig.update_layout(barmode="stack", legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0))
    return _layout(fig, f"Units that fire for this image, against the module of class {class_name}",
                   "activation point", "units firing")


def image_module_match(fired: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray],
                       class_names: Sequence[str]) -> go.Figure:
    """Heatmap class × point: fraction of the units firing for one image that lie in each class module."""
    points = list(fired)
    z = np.zeros((len(class_names), len(points)))
    for j, p in enumerate(points):
        f = np.asarray(fired[p], bool)
        n = max(1, int(f.sum()))
        z[:, j] = (np.asarray(masks[p], bool) & f[None, :]).sum(1) / n
    fig = go.Figure(go.Heatmap(z=z, x=points, y=list(class_names), colorscale=RATE_SCALE, zmin=0.0, zmax=1.0,
                               colorbar=dict(title="share"),
                               hovertemplate="class %{y} at %{x}: %{z:.0%} of the firing units are in its module"
                                             "<extra></extra>"))
    fig.update_yaxes(type="category", autorange="reversed")
    return _layout(fig, "Share of this image's firing units that each class module keeps", "activation point",
                   "class module", height=140 + 28 * len(class_names))


def module_size_bars(sizes: Mapping[str, Sequence[float]], class_names: Sequence[str]) -> go.Figure:
    """Grouped bars of module size (fraction of the full model's parameters) per class, one group per run."""
    fig = go.Figure([go.Bar(x=list(class_names), y=list(values), name=label,
                            marker_color=PAIR_COLOURS[i % len(PAIR_COLOURS)],
                            hovertemplate="class %{x}: %{y:.1%} of the weights<extra>" + label + "</extra>")
                     for i, (label, values) in enumerate(sizes.items())])
    fig.update_layout(barmode="group", yaxis_tickformat=".0%", legend=dict(orientation="h", yanchor="bottom", y=1.0))
    return _layout(fig, "Module size per class (share of the full model's parameters)", "class",
                   "module size")


def overlap_heatmap(overlap: np.ndarray, class_names: Sequence[str], title: str = "Weight overlap between classes",
                    zmax: float | None = None) -> go.Figure:
    """Class×class weight-overlap matrix (fractions of full-model parameters) as a heatmap."""
    overlap = np.asarray(overlap, dtype=float)
    names = list(class_names)
    fig = go.Figure(go.Heatmap(z=overlap, x=names, y=names, colorscale=OVERLAP_SCALE, zmin=0.0,
                               zmax=float(overlap.max()) if zmax is None else zmax,
                               colorbar=dict(title="share", tickformat=".0%"),
                               text=[[f"{v:.1%}" for v in row] for row in overlap], texttemplate="%{text}",
                               hovertemplate="classes %{y} and %{x} share %{z:.2%} of the weights<extra></extra>"))
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category", autorange="reversed", scaleanchor="x")
    return _layout(fig, title, "class", "class", height=480)


def overlap_by_layer(layers: Mapping[str, float], title: str = "Where the overlap lives") -> go.Figure:
    """Bars: mean pairwise overlap contributed by each layer (fraction of full-model parameters)."""
    fig = go.Figure(go.Bar(x=list(layers), y=list(layers.values()), marker_color=PAIR_COLOURS[0],
                           hovertemplate="%{x}: %{y:.2%} of all weights<extra></extra>"))
    fig.update_layout(yaxis_tickformat=".1%")
    return _layout(fig, title, "layer", "mean pairwise overlap")


def overlap_by_layer_pair(layers: Mapping[str, Mapping[str, float]]) -> go.Figure:
    """Grouped bars: per layer, the mean pairwise overlap of each run (``{run label: {layer: value}}``)."""
    fig = go.Figure([go.Bar(x=list(values), y=list(values.values()), name=label,
                            marker_color=PAIR_COLOURS[i % len(PAIR_COLOURS)],
                            hovertemplate="%{x}: %{y:.2%} of all weights<extra>" + label + "</extra>")
                     for i, (label, values) in enumerate(layers.items())])
    fig.update_layout(barmode="group", yaxis_tickformat=".1%", legend=dict(orientation="h", yanchor="bottom", y=1.0))
    return _layout(fig, "Where the overlap lives: mean pairwise overlap per layer", "layer",
                   "mean pairwise overlap")


def history_figure(history: Sequence[Mapping[str, float]], terms: Sequence[str] = HISTORY_TERMS,
                   title: str = "Training losses per epoch") -> go.Figure:
    """Lines of loss terms per epoch (one trace per term present in the history)."""
    epochs = [row["epoch"] for row in history]
    fig = go.Figure()
    for term in terms:
        values = [row.get(term, float("nan")) for row in history]
        if values and not all(np.isnan(values)):
            fig.add_trace(go.Scatter(x=epochs, y=values, mode="lines+markers", name=term))
    return _layout(fig, title, "epoch", "loss term")


def accuracy_figure(history: Sequence[Mapping[str, float]], title: str = "Accuracy per epoch") -> go.Figure:
    epochs = [row["epoch"] for row in history]
    fig = go.Figure([go.Scatter(x=epochs, y=[row.get(k, float("nan")) for row in history], mode="lines+markers",
                                name=k.replace("_", " "), line=dict(color=c))
                     for k, c in (("train_accuracy", PAIR_COLOURS[0]), ("test_accuracy", PAIR_COLOURS[1]))])
    fig.update_layout(yaxis_tickformat=".0%")
    return _layout(fig, title, "epoch", "accuracy")


def compose_bars(report: Mapping[str, float]) -> go.Figure:
    """Composed module next to the full model: parameters, FLOPs (as shares of the full model) and accuracy."""
    labels = ["parameters", "FLOPs", "accuracy"]
    composed = [report["params_fraction"], report["flops_fraction"], report["accuracy"]]
    full = [1.0, 1.0, report["full_accuracy"]]
    fig = go.Figure([
        go.Bar(x=labels, y=full, name="full model", marker_color=PAIR_COLOURS[1],
               text=[f"{v:.1%}" for v in full], textposition="outside"),
        go.Bar(x=labels, y=composed, name="composed module", marker_color=PAIR_COLOURS[0],
               text=[f"{v:.1%}" for v in composed], textposition="outside"),
    ])
    fig.update_layout(barmode="group", yaxis_tickformat=".0%", yaxis_range=[0, 1.15],
                      legend=dict(orientation="h", yanchor="bottom", y=1.0))
    return _layout(fig, "Composed module vs full model (parameters and FLOPs as a share of the full model)",
                   "measure", "share / accuracy")


def swap_bars(class_names: Sequence[str], before: Sequence[float], after: Sequence[float],
              target: str | None = None) -> go.Figure:
    """Per-class accuracy before and after a module swap, as grouped bars (the target class annotated)."""
    names = list(class_names)
    fig = go.Figure([
        go.Bar(x=names, y=list(before), name="before (weak model)", marker_color=PAIR_COLOURS[1],
               hovertemplate="class %{x}: %{y:.1%}<extra>before</extra>"),
        go.Bar(x=names, y=list(after), name="after the swap", marker_color=PAIR_COLOURS[0],
               hovertemplate="class %{x}: %{y:.1%}<extra>after</extra>"),
    ])
    if target is not None and target in names:
        fig.add_annotation(x=target, y=max(before[names.index(target)], after[names.index(target)]), text="target",
                           showarrow=True, arrowhead=2, ay=-30)
    fig.update_layout(barmode="group", yaxis_tickformat=".0%", yaxis_range=[0, 1.1],
                      legend=dict(orientation="h", yanchor="bottom", y=1.0))
    fig.update_xaxes(type="category")
    return _layout(fig, "Per-class test accuracy before and after the swap", "class", "accuracy")
