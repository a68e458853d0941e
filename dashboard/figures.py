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
# outlines of the cells a class module keeps on the rate heatmap
OUTLINE_COLOUR = "#000000"


def _layout(fig: go.Figure, title: str, x_title: str, y_title: str, height: int | None = None) -> go.Figure:
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, margin=dict(l=60, r=20, t=60, b=50),
                      template="plotly_white", colorway=list(OKABE_ITO))
    if height:
        fig.update_layout(height=height)
    return fig


def rate_heatmap(rates: np.ndarray, class_names: Sequence[str], point: str,
                 unit_order: Sequence[int] | None = None, tau: float | None = None,
                 masks: np.ndarray | None = None, groups: Sequence[str] | None = None) -> go.Figure:
    """Class×unit heatmap of activation rates at one point.

    ``unit_order`` reorders the columns (the x labels keep the original unit index). With ``masks``
    (class×unit bool, same shape) an outlined-square marker trace shows which cells each class
    module keeps: black outlines, which stand out on the cells a module keeps (rate ≥ τ ≥ 0.5, so
    teal to yellow on viridis) and on the white legend. With ``groups`` (one label per unit, original
    index; see ``unit_groups``) runs of equal labels in the shown order are separated by lines and
    labelled above the heatmap.
    """
    rates = np.asarray(rates, dtype=float)
    order = np.arange(rates.shape[1]) if unit_order is None else np.asarray(unit_order)
    shown = rates[:, order]
    units = [str(u) for u in order]
    fig = go.Figure(go.Heatmap(z=shown, x=units, y=list(class_names), colorscale=RATE_SCALE, zmin=0.0, zmax=1.0,
                               colorbar=dict(title="rate"),
                               hovertemplate="class %{y}, unit %{x}: fires on %{z:.1%} of its samples"
                                             "<extra></extra>"))
    if masks is not None:
        kept = np.asarray(masks, dtype=bool)[:, order]
        rows, cols = np.nonzero(kept)
        fig.add_trace(go.Scatter(x=[units[c] for c in cols], y=[class_names[r] for r in rows], mode="markers",
                                 marker=dict(symbol="square-open", color=OUTLINE_COLOUR, line=dict(width=2),
                                             size=int(np.clip(480 / max(1, len(units)), 5, 10))),
                                 name=f"in module (rate ≥ τ={tau:.2f})" if tau is not None else "in module",
                                 hoverinfo="skip", showlegend=True))
        fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0))
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category", autorange="reversed")
    title = f"Activation rate per class and unit at {point}"
    _layout(fig, title, "unit (channel or neuron)", "class", height=140 + 28 * len(class_names))
    if groups is not None:
        _label_unit_groups(fig, [str(groups[u]) for u in order])
    return fig


def _label_unit_groups(fig: go.Figure, shown_groups: Sequence[str]) -> None:
    """Separator lines between runs of equal group labels (columns in shown order) and each run's label
    above the heatmap; the legend moves above the labels."""
    starts = [i for i, g in enumerate(shown_groups) if i == 0 or g != shown_groups[i - 1]]
    ends = starts[1:] + [len(shown_groups)]
    for start, end in zip(starts, ends):
        if start:
            fig.add_shape(type="line", x0=start - 0.5, x1=start - 0.5, y0=0, y1=1, yref="paper",
                          line=dict(color="#444444", width=1.5))
        fig.add_annotation(x=(start + end - 1) / 2, y=1.0, yref="paper", yanchor="bottom", showarrow=False,
                           text=shown_groups[start], font=dict(size=11))
    # title, then the legend, then the group labels, top down (legend placed in pixels above the plot area)
    top, bottom = 110, fig.layout.margin.b or 50
    plot_height = max(60, (fig.layout.height or 450) - top - bottom)
    fig.update_layout(margin=dict(t=top), title=dict(y=1.0, yref="container", yanchor="top", pad=dict(t=12)),
                      legend=dict(orientation="h", x=0, y=1.0 + 22 / plot_height, yanchor="bottom"))


SHARED_GROUP = "shared"
UNKEPT_GROUP = "in no module"


def units_by_class_order(rates: np.ndarray, masks: np.ndarray) -> list[int]:
    """Units sorted by the class they serve: first the units exactly one class module keeps, grouped by
    that class (in class order); then the units two or more modules keep ("shared"); then the units no
    module keeps. Within a group, by falling rate (the owner's rate; the highest rate for the others)."""
    rates = np.asarray(rates, dtype=float)
    masks = np.asarray(masks, dtype=bool)
    keepers = masks.sum(0)
    group = _unit_owner(masks)
    own_rate = np.where(keepers == 1, rates[masks.argmax(0), np.arange(rates.shape[1])], rates.max(0))
    return sorted(range(rates.shape[1]), key=lambda u: (group[u], -own_rate[u], u))


def _unit_owner(masks: np.ndarray) -> np.ndarray:
    """Per unit: the index of the one class whose module keeps it; C (the class count) when several modules
    keep it ("shared"), C + 1 when none does. The groups of ``units_by_class_order`` and ``unit_groups``."""
    keepers = masks.sum(0)
    classes = masks.shape[0]
    return np.where(keepers == 1, masks.argmax(0), np.where(keepers > 1, classes, classes + 1))


def kept_units_text(kept: Sequence[int], units: int) -> str:
    """How many of a point's ``units`` the class modules keep (``kept``: one count per class), in words:
    "each class module keeps all 16 units", "… keeps 4 of 16 units", "… keeps 3–9 of 16 units (mean 5.2)"."""
    kept = np.asarray(kept, dtype=int)
    low, high = int(kept.min()), int(kept.max())
    if low == high:
        return f"each class module keeps {'all' if low == units else f'{low} of'} {units} units."
    return f"each class module keeps {low}–{high} of {units} units (mean {kept.mean():.1f})."


def unit_groups(masks: np.ndarray, class_names: Sequence[str]) -> list[str]:
    """Per unit (original index): the class whose module alone keeps it, ``SHARED_GROUP`` when several
    modules keep it, ``UNKEPT_GROUP`` when none does (the groups of ``units_by_class_order``)."""
    masks = np.asarray(masks, dtype=bool)
    names = [str(name) for name in class_names] + [SHARED_GROUP, UNKEPT_GROUP]
    return [names[owner] for owner in _unit_owner(masks)]


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
                               hovertemplate="class %{y} at %{x}: %{z:.1%} of the firing units are in its module"
                                             "<extra></extra>"))
    fig.update_yaxes(type="category", autorange="reversed")
    return _layout(fig, "Share of this image's firing units that each class module keeps", "activation point",
                   "class module", height=140 + 28 * len(class_names))


def module_size_bars(sizes: Mapping[str, Sequence[float]], class_names: Sequence[str],
                     title: str = "Module size per class (share of the full model's parameters)",
                     first_colour: int = 0) -> go.Figure:
    """Grouped bars of module size (fraction of the full model's parameters) per class, one group per run,
    always with a legend naming the run; ``first_colour`` picks the first run's colour (so two charts of
    one run each keep the runs' colours apart)."""
    fig = go.Figure([go.Bar(x=list(class_names), y=list(values), name=label, showlegend=True,
                            marker_color=PAIR_COLOURS[(first_colour + i) % len(PAIR_COLOURS)],
                            hovertemplate="class %{x}: %{y:.1%} of the weights<extra>" + label + "</extra>")
                     for i, (label, values) in enumerate(sizes.items())])
    fig.update_layout(barmode="group", yaxis_tickformat=".0%", legend=dict(orientation="h", yanchor="bottom", y=1.0))
    fig.update_xaxes(type="category")
    return _layout(fig, title, "class", "module size")


def overlap_heatmap(overlap: np.ndarray, class_names: Sequence[str], title: str = "Weight overlap between classes",
                    zmax: float | None = None) -> go.Figure:
    """Class×class weight-overlap matrix (fractions of full-model parameters) as a heatmap."""
    overlap = np.asarray(overlap, dtype=float)
    names = list(class_names)
    fig = go.Figure(go.Heatmap(z=overlap, x=names, y=names, colorscale=OVERLAP_SCALE, zmin=0.0,
                               zmax=float(overlap.max()) if zmax is None else zmax,
                               colorbar=dict(title="share", tickformat=".0%"),
                               text=[[f"{v:.1%}" for v in row] for row in overlap], texttemplate="%{text}",
                               hovertemplate="classes %{y} and %{x} share %{z:.1%} of the weights<extra></extra>"))
    # square cells by shrinking the plot area (constrain="domain"), not by widening the axis range, which
    # would leave an empty band between the heatmap and its x labels
    fig.update_xaxes(type="category", constrain="domain")
    fig.update_yaxes(type="category", autorange="reversed", scaleanchor="x", constrain="domain")
    return _layout(fig, title, "class", "class", height=480)


def overlap_by_layer(layers: Mapping[str, float], title: str = "Where the overlap lives",
                     colour: str = PAIR_COLOURS[0]) -> go.Figure:
    """Bars: mean pairwise overlap contributed by each layer (fraction of full-model parameters)."""
    fig = go.Figure(go.Bar(x=list(layers), y=list(layers.values()), marker_color=colour,
                           hovertemplate="%{x}: %{y:.1%} of all weights<extra></extra>"))
    fig.update_layout(yaxis_tickformat=".1%")
    return _layout(fig, title, "layer", "mean pairwise overlap")


def overlap_by_layer_pair(layers: Mapping[str, Mapping[str, float]]) -> go.Figure:
    """Grouped bars: per layer, the mean pairwise overlap of each run (``{run label: {layer: value}}``)."""
    fig = go.Figure([go.Bar(x=list(values), y=list(values.values()), name=label,
                            marker_color=PAIR_COLOURS[i % len(PAIR_COLOURS)],
                            hovertemplate="%{x}: %{y:.1%} of all weights<extra>" + label + "</extra>")
                     for i, (label, values) in enumerate(layers.items())])
    fig.update_layout(barmode="group", yaxis_tickformat=".1%", legend=dict(orientation="h", yanchor="bottom", y=1.0))
    return _layout(fig, "Where the overlap lives: mean pairwise overlap per layer", "layer",
                   "mean pairwise overlap")


NOT_TRAINED = "measured, not trained"


def _line_mode(epochs: Sequence[float]) -> str:
    """Markers on short histories only: on a long one they hide the lines (and the dashes)."""
    return "lines+markers" if len(epochs) <= 30 else "lines"


def _epoch_ticks(fig: go.Figure, epochs: Sequence[float]) -> None:
    """Whole epochs only on the x axis (never 1.5, 2.5)."""
    last = max([int(e) for e in epochs], default=1)
    if last <= 12:
        fig.update_xaxes(tickmode="linear", tick0=1, dtick=1)
    elif last <= 60:
        fig.update_xaxes(tickmode="linear", tick0=0, dtick=2 if last <= 24 else 5)
    else:
        fig.update_xaxes(tickformat="d")  # plotly's own steps are whole numbers at this range


def history_figure(history: Sequence[Mapping[str, float]], terms: Sequence[str] = HISTORY_TERMS,
                   title: str = "Training losses per epoch",
                   trained: Mapping[str, bool] | None = None) -> go.Figure:
    """Lines of loss terms per epoch (one trace per term present in the history). ``trained`` says which
    terms were part of the training loss (weight > 0); the others (e.g. the modular terms of a standard
    run, only measured) are dashed and listed in the legend under "measured, not trained"."""
    epochs = [row["epoch"] for row in history]
    fig = go.Figure()
    shown = [t for t in terms if any(not np.isnan(row.get(t, float("nan"))) for row in history)]
    measured = {t for t in shown if trained is not None and not trained.get(t, True)}
    for term in shown:
        values = [row.get(term, float("nan")) for row in history]
        group = NOT_TRAINED if term in measured else "trained"
        fig.add_trace(go.Scatter(x=epochs, y=values, mode=_line_mode(epochs), name=term,
                                 line=dict(dash="dash") if term in measured else None,
                                 legendgroup=group if measured else None,
                                 legendgrouptitle_text=group if measured else None,
                                 hovertemplate=f"{term}{f' ({NOT_TRAINED})' if term in measured else ''}, "
                                               "epoch %{x}: %{y:.4g}<extra></extra>"))
    _epoch_ticks(fig, epochs)
    return _layout(fig, title, "epoch", "loss term")


def accuracy_figure(history: Sequence[Mapping[str, float]], title: str = "Accuracy per epoch") -> go.Figure:
    epochs = [row["epoch"] for row in history]
    fig = go.Figure([go.Scatter(x=epochs, y=[row.get(k, float("nan")) for row in history], mode=_line_mode(epochs),
                                name=k.replace("_", " "), line=dict(color=c))
                     for k, c in (("train_accuracy", PAIR_COLOURS[0]), ("test_accuracy", PAIR_COLOURS[1]))])
    fig.update_layout(yaxis_tickformat=".0%")
    _epoch_ticks(fig, epochs)
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


# the Swap page: the weak model's accuracy, then one "after" series per repair strategy (Okabe–Ito, so the
# three strategies keep one colour each and stay apart from the orange "before")
SWAP_BEFORE_COLOUR = OKABE_ITO[1]
SWAP_COLOURS = {"calibrate": OKABE_ITO[0], "normalize": OKABE_ITO[3], "affine": OKABE_ITO[2]}


def swap_bars(class_names: Sequence[str], before: Sequence[float], afters: Mapping[str, Sequence[float]],
              target: str | None = None) -> go.Figure:
    """Per-class test accuracy before a module swap and after it, one "after" series per strategy
    (``afters``: strategy → accuracies in ``class_names`` order), as grouped bars; an arrow marks the
    target class.

    The x axis is categorical in the given order (class names such as "3" must never be read as
    positions), and the arrow's x is the target's position on that axis: plotly places annotations on
    a category axis by serial number, so the name "3" would point at the fourth category."""
    names = [str(n) for n in class_names]
    fig = go.Figure([go.Bar(x=names, y=list(before), name="before (weak model)", marker_color=SWAP_BEFORE_COLOUR,
                            hovertemplate="class %{x}: %{y:.1%}<extra>before</extra>")])
    for k, (strategy, after) in enumerate(afters.items()):
        fig.add_trace(go.Bar(x=names, y=list(after), name=f"after: {strategy}",
                             marker_color=SWAP_COLOURS.get(strategy, OKABE_ITO[4 + k % 4]),
                             hovertemplate=f"class %{{x}}: %{{y:.1%}}<extra>{strategy}</extra>"))
    if target is not None and str(target) in names:
        position = names.index(str(target))
        top = max([before[position], *(after[position] for after in afters.values())])
        fig.add_annotation(x=position, y=top, yshift=4, text=f"target (class {target})", showarrow=True,
                           arrowhead=2, ay=-30)
    fig.update_layout(barmode="group", yaxis_tickformat=".0%", yaxis_range=[0, 1.15],
                      legend=dict(orientation="h", yanchor="bottom", y=1.0))
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=names)
    return _layout(fig, "Per-class test accuracy before and after the swap, per strategy", "class", "accuracy")


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
                            text=_text(v, "{:.1%}"), textposition="outside", cliponaxis=False, textangle=-90,
                            hovertemplate="%{x}: %{y:.1%}<extra>" + method_label(m) + "</extra>")
                     for m, v in values.items()])
    fig.update_layout(barmode="group", yaxis_tickformat=".0%")
    top = max([v for series in values.values() for v in series if not np.isnan(v)], default=1.0)
    high = top * 1.22 if top > 0 else 1.0
    fig.update_yaxes(range=[0, high])  # room above the tallest bar for its label
    if high > 1.0:  # a share never passes 100%: no "120%" tick in the label room
        fig.update_yaxes(tickmode="array", tickvals=ticks_to_100(0.0))
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
                                 cliponaxis=False, textangle=-90,
                                 hovertemplate="%{x}: %{y:.1%}<extra>" + f"{method_label(m)}, {what}</extra>"),
                          row=1, col=col)
    reference = _reference(rows, models, "pair_standard_accuracy")
    fig.add_trace(go.Bar(x=models, y=reference, name="standard model, same pairs", marker_color=REFERENCE_COLOUR,
                         legendgroup="reference", text=_text(reference, "{:.1%}"), textposition="outside",
                         cliponaxis=False, textangle=-90,
                         hovertemplate="%{x}: %{y:.1%}<extra>standard model on the same pairs</extra>"),
                  row=1, col=2)
    fig.update_layout(barmode="group", yaxis_tickformat=".0%")
    low, high = accuracy_axis_range([*full.values(), *pairs.values(), reference])
    fig.update_yaxes(range=[low, high], tickmode="array", tickvals=ticks_to_100(low))
    fig.update_xaxes(type="category", title_text="model")
    y_title = "test accuracy" if low == 0 else f"test accuracy (axis starts at {low:.0%})"
    _layout(fig, "Test accuracy: whole model, and modules composed for two classes"
            + ("" if low == 0 else f" (axis zoomed to {low:.0%}–100%)"), "model", y_title, height=480)
    _legend_on_top(fig, above_panel_titles=True)
    return fig


def ticks_to_100(low: float) -> list[float]:
    """Tick values for a share or accuracy axis from ``low`` up to 100% only: the axis may run higher to
    leave room for the bars' value labels, but no share is over 100%."""
    span = 1.0 - low
    step = 0.02 if span <= 0.12 else 0.05 if span <= 0.3 else 0.1 if span <= 0.5 else 0.2
    return [round(float(v), 4) for v in np.arange(low, 1.0 + 1e-9, step)]


def accuracy_axis_range(values: Sequence[Sequence[float]]) -> tuple[float, float]:
    """Y range for accuracy bars: zoomed to the data (from 5 points below the lowest value, rounded down to
    5 points) so that 1–3-point differences show, with room above 100% for vertical value labels; from 0
    when some accuracy is below 50% (then the differences are large anyway)."""
    flat = [float(v) for series in values for v in series if not np.isnan(_value(v))]
    lowest = min(flat, default=0.0)
    low = 0.0 if lowest < 0.5 else float(np.floor((lowest - 0.05) * 20) / 20)
    return max(0.0, low), 1.0 + (1.0 - max(0.0, low)) * 0.2


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
        panels.append((step_values, step_models, "Time per training step" + (f", on {device}" if device else "")))
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


# ----- the new views: modules forming over training, the τ trade-off, how a union of masks grows -------

EVOLUTION_PANELS = (("mean_module_size", "Mean module size (share of the weights)"),
                    ("mean_overlap", "Mean pairwise overlap (share of the weights)"),
                    ("test_accuracy", "Test accuracy"))
TAU_PANELS = (("mean_module_size", "Mean module size (share of the weights)"),
              ("mean_overlap", "Mean pairwise overlap (share of the weights)"),
              ("pair_accuracy", "Composed two-class modules: accuracy"))


def integer_dtick(last: float, ticks: int = 10) -> int:
    """A whole-number tick step (1, 2, 5, 10, 20, 25, 50, …) that gives at most about ``ticks`` ticks up to
    ``last``: epoch axes never show 1.5."""
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000):
        if last / step <= ticks:
            return step
    return int(10 ** np.ceil(np.log10(max(last, 1) / ticks)))


def _stacked_lines(series: Mapping[str, Mapping[str, Sequence[float]]], methods: Mapping[str, str] | None,
                   x_column: str, panels: Sequence[tuple[str, str]], hover_x: str):
    """Stacked panels sharing one x axis; one line per series (label → columns), the same colour in every
    panel and one legend entry (legend groups), colour by method where ``methods`` names one."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.07,
                        subplot_titles=[title for _, title in panels])
    methods = dict(methods or {})
    colours = method_colours(list(dict.fromkeys(methods.get(label, label) for label in series)))
    for k, (label, columns) in enumerate(series.items()):
        colour = colours[methods.get(label, label)] if label in methods else OKABE_ITO[k % len(OKABE_ITO)]
        for row, (column, title) in enumerate(panels, start=1):
            fig.add_trace(go.Scatter(x=[float(v) for v in columns[x_column]], y=[float(v) for v in columns[column]],
                                     mode="lines+markers", name=label, legendgroup=label, showlegend=row == 1,
                                     line=dict(color=colour),
                                     hovertemplate=f"{hover_x} %{{x}}: %{{y:.1%}}<extra>{label}</extra>"),
                          row=row, col=1)
            # shares of the weights from 0; accuracies zoomed in, so that a 1-point difference shows
            accuracy = "accuracy" in column
            fig.update_yaxes(tickformat=".1%" if accuracy else ".0%", rangemode="normal" if accuracy else "tozero",
                             row=row, col=1)
    # the legend under the last panel: above the panels it would collide with the title
    fig.update_layout(template="plotly_white", height=260 * len(panels) + 140, margin=dict(l=60, r=20, t=70, b=110),
                      legend=dict(orientation="h", yanchor="top", y=-0.08, x=0))
    return fig


def evolution_figure(series: Mapping[str, Mapping[str, Sequence[float]]],
                     methods: Mapping[str, str] | None = None) -> go.Figure:
    """Modules forming over training: mean module size, mean overlap and test accuracy per epoch (three
    stacked panels sharing the epoch axis, whole-epoch ticks), one line per run (``series``: run label →
    columns ``epoch``, ``mean_module_size``, ``mean_overlap``, ``test_accuracy``, as fractions), coloured
    by training method (``methods``: label → moda / standard / mwt)."""
    fig = _stacked_lines(series, methods, "epoch", EVOLUTION_PANELS, "epoch")
    last = max((float(e) for columns in series.values() for e in columns["epoch"]), default=1.0)
    fig.update_xaxes(tickmode="linear", tick0=0, dtick=integer_dtick(last), tickformat="d")
    fig.update_xaxes(title_text="epoch", row=len(EVOLUTION_PANELS), col=1)
    fig.update_layout(title="Modules forming over training")
    return fig


def tau_figure(series: Mapping[str, Mapping[str, Sequence[float]]], methods: Mapping[str, str] | None = None,
               tau: float | None = None) -> go.Figure:
    """The τ trade-off: mean module size, mean overlap and composed-pair accuracy as τ grows (stacked panels
    sharing the τ axis), one line per run (``series``: label → columns ``tau``, ``mean_module_size``,
    ``mean_overlap``, ``pair_accuracy``); a dotted line marks the τ chosen on the pages (``tau``)."""
    fig = _stacked_lines(series, methods, "tau", TAU_PANELS, "τ =")
    grid = sorted({round(float(t), 4) for columns in series.values() for t in columns["tau"]})
    fig.update_xaxes(tickmode="array", tickvals=grid, ticktext=[f"{t:g}" for t in grid])
    fig.update_xaxes(title_text="threshold τ (a unit joins a module when it fires on ≥ τ of the class)",
                     row=len(TAU_PANELS), col=1)
    if tau is not None:
        fig.add_vline(x=float(tau), line_dash="dot", line_color=REFERENCE_LINE, row="all", col=1)
        fig.add_annotation(x=float(tau), y=1.0, yref="y domain", text=f"τ = {float(tau):.2f} (the pages' τ)",
                           showarrow=False, yanchor="bottom", font=dict(size=11, color=REFERENCE_LINE))
    fig.update_layout(title="The τ trade-off: higher τ keeps fewer units")
    return fig


UNION_CELLS = {0: "kept by neither", 1: "only module A", 2: "only module B", 3: "both modules (overlap)",
               4: "only the union (A's inputs × B's outputs, or B's × A's)"}
UNION_COLOURS = ("#F2F2F2", OKABE_ITO[0], OKABE_ITO[1], "#000000", OKABE_ITO[5])


def union_cells(inputs_a: Sequence[bool], outputs_a: Sequence[bool], inputs_b: Sequence[bool],
                outputs_b: Sequence[bool]) -> np.ndarray:
    """For one fully-connected layer (rows: output units, columns: input units), which module keeps each
    weight (codes of ``UNION_CELLS``): a module keeps the weights between its kept inputs and kept outputs,
    the union module keeps those between the union's inputs and outputs."""
    ia, oa, ib, ob = (np.asarray(v, dtype=bool) for v in (inputs_a, outputs_a, inputs_b, outputs_b))
    in_a, in_b = np.outer(oa, ia), np.outer(ob, ib)
    union = np.outer(oa | ob, ia | ib)
    cells = np.zeros(union.shape, dtype=int)
    cells[union] = 4
    cells[in_a & ~in_b] = 1
    cells[in_b & ~in_a] = 2
    cells[in_a & in_b] = 3
    return cells


def union_figure(cells: np.ndarray) -> go.Figure:
    """The weight grid of ``union_cells``: one square per weight, coloured by which module keeps it."""
    codes = list(UNION_CELLS)
    n = len(codes)
    # a discrete colour scale: code k fills the band [k/n, (k+1)/n]
    scale = [[edge, UNION_COLOURS[k]] for k in range(n) for edge in (k / n, (k + 1) / n)]
    rows, cols = cells.shape
    fig = go.Figure(go.Heatmap(z=cells.tolist(), zmin=-0.5, zmax=n - 0.5, colorscale=scale, showscale=False,
                               xgap=2, ygap=2,
                               x=[f"in {j + 1}" for j in range(cols)], y=[f"out {i + 1}" for i in range(rows)],
                               customdata=[[UNION_CELLS[int(c)] for c in row] for row in cells],
                               hovertemplate="%{y} ← %{x}: %{customdata}<extra></extra>"))
    for code in codes:  # legend entries (traces with no points)
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=UNION_CELLS[code], hoverinfo="skip",
                                 marker=dict(symbol="square", size=14, color=UNION_COLOURS[code],
                                             line=dict(color="#666666", width=1))))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category", side="top")
    fig.update_layout(legend=dict(orientation="v", x=1.02, y=1), plot_bgcolor="white")
    return _layout(fig, "One layer's weights: who keeps which", "input unit", "output unit", height=360)
