"""Figures of a run over its training and over τ: the loss terms and accuracies per epoch (Runs & training),
modules forming over the checkpoints (Modules over training) and the τ trade-off."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from dashboard.figures.style import (
    OKABE_ITO,
    PAIR_COLOURS,
    REFERENCE_LINE,
    layout,
    legend_below,
    method_colours,
)
from dashboard.plain_text import html_escape

HISTORY_TERMS = ("ce", "affinity", "dispersion", "compactness")
NOT_TRAINED = "measured, not trained"
EVOLUTION_PANELS = (("mean_module_size", "Mean module size (share of the weights)"),
                    ("mean_overlap", "Mean pairwise overlap (share of the weights)"),
                    ("test_accuracy", "Test accuracy"))
TAU_PANELS = (("mean_module_size", "Mean module size (share of the weights)"),
              ("mean_overlap", "Mean pairwise overlap (share of the weights)"),
              ("pair_accuracy", "Composed two-class modules: accuracy"))


# the least span of an accuracy axis: a wobble of a few tenths of a point must look small, not like a dip
ACCURACY_SPAN = 0.05
# tick steps of an accuracy axis (each divides 100%, so the top tick can be 100%), and the most intervals shown
ACCURACY_STEPS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.25)
ACCURACY_TICKS = 8


def accuracy_axis(values: Sequence[float], span: float = ACCURACY_SPAN) -> dict[str, Any]:
    """Properties of an accuracy y axis (``fig.update_yaxes(**accuracy_axis(values))``) that does not
    exaggerate: a span of at least ``span`` (5 points) within 0–100%, whole-percent ticks that never repeat a
    label, a tick at or above the highest value (no point above the top tick) and one at or below the lowest."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    low = max(0.0, min(low, high - span))
    high = max(high, low + span)
    step = next((s for s in ACCURACY_STEPS if (high - low) / s <= ACCURACY_TICKS), ACCURACY_STEPS[-1])
    bottom = max(0.0, math.floor(round(low / step, 6)) * step)
    top = math.ceil(round(high / step, 6)) * step
    if top > 1.0 >= high:  # accuracies end at 100%
        top = 1.0
    pad = 0.03 * (top - bottom)  # markers on the first and last tick are drawn whole
    return dict(range=[bottom - pad, top + pad], tickmode="linear", tick0=0.0, dtick=step, tickformat=".0%",
                rangemode="normal")


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
    return layout(fig, title, "epoch", "loss term")


def accuracy_figure(history: Sequence[Mapping[str, float]], title: str = "Accuracy per epoch",
                    epochs_planned: int | None = None) -> go.Figure:
    """Train and test accuracy per epoch; ``epochs_planned`` (a training under way): the epoch axis spans all of
    them from the start, as the live module chart beside it does, so the curve grows into it."""
    epochs = [row["epoch"] for row in history]
    fig = go.Figure([go.Scatter(x=epochs, y=[row.get(k, float("nan")) for row in history], mode=_line_mode(epochs),
                                name=k.replace("_", " "), line=dict(color=c))
                     for k, c in (("train_accuracy", PAIR_COLOURS[0]), ("test_accuracy", PAIR_COLOURS[1]))])
    fig.update_yaxes(**accuracy_axis([row.get(k, float("nan")) for row in history
                                      for k in ("train_accuracy", "test_accuracy")]))
    if epochs_planned:
        span = max([int(epochs_planned), *[int(e) for e in epochs]])
        fig.update_xaxes(tickmode="linear", tick0=0, dtick=integer_dtick(span), tickformat="d",
                         range=[0.5, span + 0.5])
    else:
        _epoch_ticks(fig, epochs)
    return layout(fig, title, "epoch", "accuracy")


def runs_overlay_figure(histories: Mapping[str, Sequence[Mapping[str, float]]], column: str = "test_accuracy",
                        title: str = "Test accuracy per epoch", y_title: str = "test accuracy") -> go.Figure:
    """Several runs' curves of one history column on one chart (``histories``: run label → its history rows),
    one colour per run, as TensorBoard overlays runs. An accuracy column gets ``accuracy_axis``."""
    fig = go.Figure()
    epochs: list[float] = []
    values: list[float] = []
    number = ".1%" if "accuracy" in column else ".4g"
    for k, (label, history) in enumerate(histories.items()):
        xs = [row["epoch"] for row in history]
        ys = [row.get(column, float("nan")) for row in history]
        epochs += xs
        values += ys
        shown = html_escape(label)  # a run's label is text, never HTML
        fig.add_trace(go.Scatter(x=xs, y=ys, mode=_line_mode(xs), name=shown, showlegend=True,
                                 line=dict(color=OKABE_ITO[k % len(OKABE_ITO)]),
                                 hovertemplate=f"epoch %{{x}}: %{{y:{number}}}<extra>{shown}</extra>"))
    if "accuracy" in column:
        fig.update_yaxes(**accuracy_axis(values))
    _epoch_ticks(fig, epochs)
    legend_below(fig)
    return layout(fig, title, "epoch", y_title, b=110)


def integer_dtick(last: float, ticks: int = 10) -> int:
    """A whole-number tick step (1, 2, 5, 10, 20, 25, 50, …) that gives at most about ``ticks`` ticks up to
    ``last``: epoch axes never show 1.5."""
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000):
        if last / step <= ticks:
            return step
    return int(10 ** np.ceil(np.log10(max(last, 1) / ticks)))


def _stacked_lines(series: Mapping[str, Mapping[str, Sequence[float]]], methods: Mapping[str, str] | None,
                   x_column: str, panels: Sequence[tuple[str, str]], hover_x: str, across: bool = False) -> go.Figure:
    """Panels sharing one x axis, stacked (``across``: side by side, each with its own x axis and the panel's
    short name, for a projector's wide and low screen); one line per series (label → columns), the same colour in
    every panel and one legend entry (legend groups), colour by method where ``methods`` names one."""
    from plotly.subplots import make_subplots

    titles = [title.split(" (")[0] if across else title for _, title in panels]
    fig = make_subplots(rows=1, cols=len(panels), horizontal_spacing=0.07, subplot_titles=titles) if across else \
        make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.07, subplot_titles=titles)
    places = [(1, i) if across else (i, 1) for i in range(1, len(panels) + 1)]
    methods = dict(methods or {})
    colours = method_colours(list(dict.fromkeys(methods.get(label, label) for label in series)))
    for k, (label, columns) in enumerate(series.items()):
        colour = colours[methods.get(label, label)] if label in methods else OKABE_ITO[k % len(OKABE_ITO)]
        shown = html_escape(label)  # a run's label is text, never HTML
        for (row, col), (column, _title) in zip(places, panels, strict=True):
            fig.add_trace(go.Scatter(x=[float(v) for v in columns[x_column]], y=[float(v) for v in columns[column]],
                                     mode="lines+markers", name=shown, legendgroup=label, showlegend=(row, col) ==
                                     places[0], line=dict(color=colour),
                                     hovertemplate=f"{hover_x} %{{x}}: %{{y:.1%}}<extra>{shown}</extra>"),
                          row=row, col=col)
    # shares of the weights from 0; accuracies on at least a 5-point span, so a small wobble looks small
    for (row, col), (column, _title) in zip(places, panels, strict=True):
        if "accuracy" in column:
            fig.update_yaxes(**accuracy_axis([v for columns in series.values() for v in columns[column]]),
                             row=row, col=col)
        else:
            fig.update_yaxes(tickformat=".0%", rangemode="tozero", row=row, col=col)
    if across:
        layout(fig, height=400, t=70, b=80)
    else:  # the legend under the last panel: above the panels it would collide with the title
        layout(fig, height=260 * len(panels) + 140, t=70, b=110)
    legend_below(fig)
    return fig


def _x_titles(fig: go.Figure, title: str, panels: int, across: bool) -> None:
    """The x axis's title under the last panel (stacked) or under every panel (side by side)."""
    for i in range(1, panels + 1) if across else (panels,):
        fig.update_xaxes(title_text=title, row=1 if across else i, col=i if across else 1)


def evolution_figure(series: Mapping[str, Mapping[str, Sequence[float]]],
                     methods: Mapping[str, str] | None = None, across: bool = False) -> go.Figure:
    """Modules forming over training: mean module size, mean overlap and test accuracy per epoch (three
    stacked panels sharing the epoch axis, whole-epoch ticks), one line per run (``series``: run label →
    columns ``epoch``, ``mean_module_size``, ``mean_overlap``, ``test_accuracy``, as fractions), coloured
    by training method (``methods``: label → moda / standard / mwt); ``across``: the panels side by side."""
    fig = _stacked_lines(series, methods, "epoch", EVOLUTION_PANELS, "epoch", across)
    last = max((float(e) for columns in series.values() for e in columns["epoch"]), default=1.0)
    fig.update_xaxes(tickmode="linear", tick0=0, dtick=integer_dtick(last, 5 if across else 10), tickformat="d")
    _x_titles(fig, "epoch", len(EVOLUTION_PANELS), across)
    fig.update_layout(title="Modules over training")
    return fig


def tau_figure(series: Mapping[str, Mapping[str, Sequence[float]]], methods: Mapping[str, str] | None = None,
               tau: float | None = None, across: bool = False) -> go.Figure:
    """The τ trade-off: mean module size, mean overlap and composed-pair accuracy as τ grows (stacked panels
    sharing the τ axis), one line per run (``series``: label → columns ``tau``, ``mean_module_size``,
    ``mean_overlap``, ``pair_accuracy``); a dotted line marks the τ chosen on the pages (``tau``); ``across``:
    the panels side by side."""
    fig = _stacked_lines(series, methods, "tau", TAU_PANELS, "τ =", across)
    grid = sorted({round(float(t), 4) for columns in series.values() for t in columns["tau"]})
    shown = grid[::2] if across and len(grid) > 6 else grid  # a narrow panel: every other τ named
    fig.update_xaxes(tickmode="array", tickvals=shown, ticktext=[f"{t:g}" for t in shown])
    _x_titles(fig, "threshold τ" if across else "threshold τ (a unit joins a module when it fires on ≥ τ of the "
              "class)", len(TAU_PANELS), across)
    if tau is not None:  # the dotted line is named in the legend, clear of the panels' titles
        fig.add_vline(x=float(tau), line_dash="dot", line_color=REFERENCE_LINE, row="all", col="all")
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=f"τ = {float(tau):.2f} (the pages' τ)",
                                 line=dict(color=REFERENCE_LINE, dash="dot"), showlegend=True, hoverinfo="skip"),
                      row=1, col=1)
    fig.update_layout(title="The τ trade-off: higher τ keeps fewer units")
    return fig


LIVE_PANELS = EVOLUTION_PANELS[:2]  # module size and overlap (the live view tests no accuracy of the modules)


def live_modules_figure(series: Mapping[str, Mapping[str, Sequence[float]]], methods: Mapping[str, str] | None = None,
                        tau: float | None = None, epochs: int | None = None,
                        levels: Sequence[str] = ()) -> go.Figure:
    """A training's modules as it trains: mean module size and mean pairwise overlap at τ per saved epoch (two
    stacked panels), one line per run (``series``: label → columns ``epoch``, ``mean_module_size``,
    ``mean_overlap``), coloured by method; the epoch axis spans the training's ``epochs`` from the start, so
    the curve grows into it. A series named in ``levels`` that has one state (a twin that kept only its final
    weights) is drawn as a flat reference line over that span."""
    span = max([int(epochs or 1), *[int(e) for columns in series.values() for e in columns["epoch"]]])
    drawn = {}
    for label, columns in series.items():
        if label in levels and len(columns["epoch"]) == 1:  # a level to compare with
            drawn[label] = {column: [values[0], values[0]] if column != "epoch" else [1, span]
                            for column, values in columns.items()}
        else:
            drawn[label] = columns
    fig = _stacked_lines(drawn, methods, "epoch", LIVE_PANELS, "epoch")
    fig.update_xaxes(tickmode="linear", tick0=0, dtick=integer_dtick(span), tickformat="d", range=[0.5, span + 0.5])
    fig.update_xaxes(title_text="epoch", row=len(LIVE_PANELS), col=1)
    title = "Modules as it trains" + (f" (τ = {float(tau):.2f})" if tau is not None else "")
    fig.update_layout(title=title)
    return fig
