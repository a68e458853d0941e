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


# --- Compare page: standard training vs MODA vs MwT, one row per model × method -------------------------------

# Plotting order, labels and one colour per method on every Compare figure: standard training orange and
# MODA blue (as "standard" / "MODA" on the other pages), MwT bluish green (Okabe–Ito). Methods outside
# this list get the remaining Okabe–Ito colours in order of appearance.
METHODS = ("standard", "moda", "mwt")
METHOD_LABELS = {"standard": "standard training", "moda": "MODA", "mwt": "MwT"}
METHOD_COLOURS = {"standard": OKABE_ITO[1], "moda": OKABE_ITO[0], "mwt": OKABE_ITO[2]}
# the standard model restricted to the same class pairs: a neutral grey, lighter than every method colour
REFERENCE_COLOUR = "#999999"
REFERENCE_LINE = "#555555"


def model_label(row: Mapping) -> str:
    """``vgg11 ×0.25`` for a narrowed model, the plain model name at width 1 (or without a width)."""
    width = row.get("width")
    try:
        width = float(width)
    except (TypeError, ValueError):
        width = float("nan")
    return str(row["model"]) if np.isnan(width) or width == 1.0 else f"{row['model']} ×{width:g}"


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def _methods(rows: Sequence[Mapping]) -> list[str]:
    present = list(dict.fromkeys(str(r["method"]) for r in rows))
    return [m for m in METHODS if m in present] + [m for m in present if m not in METHODS]


def method_colours(methods: Sequence[str]) -> dict[str, str]:
    """Colour of each method: fixed for the known ones, the unused Okabe–Ito colours for the rest."""
    spare = iter(c for c in OKABE_ITO if c not in METHOD_COLOURS.values())
    return {m: METHOD_COLOURS.get(m) or next(spare, OKABE_ITO[-1]) for m in methods}


def _models(rows: Sequence[Mapping]) -> list[str]:
    return list(dict.fromkeys(model_label(r) for r in rows))


def _value(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _by_model(rows: Sequence[Mapping], column: str) -> tuple[list[str], dict[str, list[float]]]:
    """Model labels (in order of first appearance) and, per method, the column's value per model (NaN where
    a model has no row for the method; of duplicate rows the last wins)."""
    models = _models(rows)
    values = {m: [float("nan")] * len(models) for m in _methods(rows)}
    for r in rows:
        values[str(r["method"])][models.index(model_label(r))] = _value(r.get(column))
    return models, values


def _text(values: Sequence[float], fmt: str) -> list[str]:
    return ["" if np.isnan(v) else fmt.format(v) for v in values]


def _legend_on_top(fig: go.Figure, above_panel_titles: bool = False) -> None:
    fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.12 if above_panel_titles else 1.02, x=0,
                                  title_text=""))
    if above_panel_titles:
        fig.update_layout(margin=dict(t=120))


def _method_bars(rows: Sequence[Mapping], column: str, title: str, y_title: str) -> go.Figure:
    models, values = _by_model(rows, column)
    colours = method_colours(list(values))
    fig = go.Figure([go.Bar(x=models, y=v, name=method_label(m), marker_color=colours[m],
                            text=_text(v, "{:.1%}"), textposition="outside", cliponaxis=False,
                            hovertemplate="%{x}: %{y:.1%}<extra>" + method_label(m) + "</extra>")
                     for m, v in values.items()])
    fig.update_layout(barmode="group", yaxis_tickformat=".0%")
    fig.update_yaxes(rangemode="tozero")
    fig.update_xaxes(type="category")
    _legend_on_top(fig)
    return _layout(fig, title, "model", y_title, height=420)


def compare_module_size(rows: Sequence[Mapping]) -> go.Figure:
    """Grouped bars: mean module size (share of the model's weights a one-class module keeps) per model,
    one bar per method. Lower is better."""
    return _method_bars(rows, "mean_module_size", "Mean module size per model (lower is better)",
                        "mean module size (share of the weights)")


def compare_overlap(rows: Sequence[Mapping]) -> go.Figure:
    """Grouped bars: mean weight overlap of two class modules per model, one bar per method. Lower is better."""
    return _method_bars(rows, "mean_overlap", "Weight shared by two class modules (lower is better)",
                        "mean pairwise overlap (share of the weights)")


def _reference(rows: Sequence[Mapping], models: Sequence[str], column: str) -> list[float]:
    """Per model, the column's value on the standard-training row, else the first row that has one."""
    found = {}
    for r in sorted(rows, key=lambda r: str(r["method"]) != "standard"):
        v = _value(r.get(column))
        if not np.isnan(v):
            found.setdefault(model_label(r), v)
    return [found.get(m, float("nan")) for m in models]


def compare_accuracy(rows: Sequence[Mapping]) -> go.Figure:
    """Two panels of grouped bars: left, each method's full test accuracy per model; right, the mean test
    accuracy of the composed two-class modules over the class pairs, next to the standard model
    restricted to the same pairs (grey)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=("Whole model, all classes", "Two-class modules, mean over class pairs"))
    models, full = _by_model(rows, "test_accuracy")
    _, pairs = _by_model(rows, "pair_composed_accuracy")
    colours = method_colours(list(full))
    for col, values, what in ((1, full, "whole model"), (2, pairs, "composed pair")):
        for m, v in values.items():
            fig.add_trace(go.Bar(x=models, y=v, name=method_label(m), marker_color=colours[m], legendgroup=m,
                                 showlegend=col == 1, text=_text(v, "{:.1%}"), textposition="outside",
                                 cliponaxis=False,
                                 hovertemplate="%{x}: %{y:.1%}<extra>" + f"{method_label(m)}, {what}</extra>"),
                          row=1, col=col)
    reference = _reference(rows, models, "pair_standard_accuracy")
    fig.add_trace(go.Bar(x=models, y=reference, name="standard model, same pairs", marker_color=REFERENCE_COLOUR,
                         legendgroup="reference", text=_text(reference, "{:.1%}"), textposition="outside",
                         cliponaxis=False,
                         hovertemplate="%{x}: %{y:.1%}<extra>standard model on the same pairs</extra>"),
                  row=1, col=2)
    fig.update_layout(barmode="group", yaxis_tickformat=".0%")
    fig.update_yaxes(range=[0, 1.12])
    fig.update_xaxes(type="category", title_text="model")
    _layout(fig, "Test accuracy: whole model, and modules composed for two classes", "model", "test accuracy",
            height=480)
    _legend_on_top(fig, above_panel_titles=True)
    return fig


def overhead_ratios(overhead: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """``{model: {"moda_ratio": r, ...}}`` (train_overhead.json without "device") → ``{method: {model: r}}``."""
    ratios: dict[str, dict[str, float]] = {}
    for model, values in overhead.items():
        for key, ratio in values.items():
            if key.endswith("_ratio"):
                ratios.setdefault(key[:-len("_ratio")], {})[model] = _value(ratio)
    return ratios


def compare_cost(rows: Sequence[Mapping], overhead: Mapping[str, Mapping[str, float]] | None = None,
                 device: str | None = None) -> go.Figure:
    """Training cost as a ratio to standard training, which is the dashed line at 1 (so standard training has
    no bars): seconds per epoch per model and method; with ``overhead`` (train_overhead.json's ``{model:
    {"moda_ratio": r, "mwt_ratio": r}}``) a second panel of time per training step."""
    from plotly.subplots import make_subplots

    models, epoch = _by_model(rows, "time_ratio_vs_standard")
    steps = overhead_ratios(overhead) if overhead else {}
    methods = [m for m in dict.fromkeys([*epoch, *(m for m in METHODS if m in steps), *steps]) if m != "standard"]
    colours = method_colours(methods)
    panels = [({m: v for m, v in epoch.items() if m != "standard"}, models, "Seconds per epoch")]
    if steps:
        step_models = list(dict.fromkeys(model for values in steps.values() for model in values))
        step_values = {m: [steps[m].get(model, float("nan")) for model in step_models]
                       for m in methods if m in steps}
        panels.append((step_values, step_models, "Time per training step" + (f" ({device})" if device else "")))
    fig = make_subplots(rows=1, cols=len(panels), horizontal_spacing=0.08,
                        subplot_titles=[title for _, _, title in panels])
    shown = set()
    for col, (values, x, what) in enumerate(panels, start=1):
        for m, v in values.items():
            fig.add_trace(go.Bar(x=x, y=v, name=method_label(m), marker_color=colours[m], legendgroup=m,
                                 showlegend=m not in shown, text=_text(v, "×{:.2f}"), textposition="outside",
                                 cliponaxis=False,
                                 hovertemplate="%{x}: ×%{y:.2f}<extra>"
                                               + f"{method_label(m)}, {what.lower()}</extra>"),
                          row=1, col=col)
            shown.add(m)
        fig.update_yaxes(title_text="time ÷ standard training's time", rangemode="tozero", row=1, col=col)
        fig.update_xaxes(title_text="model", type="category", row=1, col=col)
    fig.add_hline(y=1.0, line_dash="dash", line_color=REFERENCE_LINE, layer="above", row="all", col="all")
    # the line's legend entry (a trace with no points)
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name="standard training (= 1)", hoverinfo="skip",
                             line=dict(color=REFERENCE_LINE, dash="dash")))
    fig.update_layout(barmode="group")
    _layout(fig, "Training time compared with standard training (lower is cheaper)", "model",
            "time ÷ standard training's time", height=460)
    _legend_on_top(fig, above_panel_titles=True)
    return fig
