"""The Compare page's figures: standard training vs MODA vs MwT, one table row per model × method (as
``bench/compare.py`` writes it), drawn as grouped bars per model."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from dashboard.figures.style import (
    METHODS,
    REFERENCE_COLOUR,
    REFERENCE_LINE,
    layout,
    legend_above,
    legend_above_panel_titles,
    method_colours,
    method_label,
)


def model_label(row: Mapping) -> str:
    """``vgg11 ×0.25`` for a narrowed model, the plain model name at width 1 (or without a width)."""
    width = _value(row.get("width"))
    return str(row["model"]) if np.isnan(width) or width == 1.0 else f"{row['model']} ×{width:g}"


def _methods(rows: Sequence[Mapping]) -> list[str]:
    present = list(dict.fromkeys(str(r["method"]) for r in rows))
    return [m for m in METHODS if m in present] + [m for m in present if m not in METHODS]


def _models(rows: Sequence[Mapping]) -> list[str]:
    return list(dict.fromkeys(model_label(r) for r in rows))


def _value(value: Any) -> float:
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
    legend_above(fig, 1.02)
    return layout(fig, title, "model", y_title, height=420)


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
    layout(fig, "Test accuracy: whole model, and modules composed for two classes"
           + ("" if low == 0 else f" (axis zoomed to {low:.0%}–100%)"), "model", y_title, height=480)
    legend_above_panel_titles(fig)
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
        other = not set(step_models) <= set(models)  # bench/train_overhead times its own models: say so
        panels.append((step_values, step_models, "Time per training step" + (", other models" if other else "")
                       + (f", on {device}" if device else "")))
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
    layout(fig, "Training time compared with standard training (lower is cheaper)", "model",
           "time ÷ standard training's time", height=460)
    legend_above_panel_titles(fig)
    return fig
