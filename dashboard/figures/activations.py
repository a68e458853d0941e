"""The Activations page's figures: activation rates per class and unit, and one test image's firing units
against the class modules."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from dashboard.figures.style import (
    OUTLINE_COLOUR,
    PAIR_COLOURS,
    RATE_SCALE,
    SEPARATOR_COLOUR,
    class_rows_height,
    layout,
    legend_above,
)
from dashboard.plain_text import html_escape

SHARED_GROUP = "shared"
UNKEPT_GROUP = "in no module"


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
    names = [html_escape(name) for name in class_names]  # plotly would render HTML in a name
    fig = go.Figure(go.Heatmap(z=shown, x=units, y=names, colorscale=RATE_SCALE, zmin=0.0, zmax=1.0,
                               colorbar=dict(title="rate"),
                               hovertemplate="class %{y}, unit %{x}: fires on %{z:.1%} of its samples"
                                             "<extra></extra>"))
    if masks is not None:
        kept = np.asarray(masks, dtype=bool)[:, order]
        rows, cols = np.nonzero(kept)
        fig.add_trace(go.Scatter(x=[units[c] for c in cols], y=[names[r] for r in rows], mode="markers",
                                 marker=dict(symbol="square-open", color=OUTLINE_COLOUR, line=dict(width=2),
                                             size=int(np.clip(480 / max(1, len(units)), 5, 10))),
                                 name=f"in module (rate ≥ τ={tau:.2f})" if tau is not None else "in module",
                                 hoverinfo="skip", showlegend=True))
        legend_above(fig)
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category", autorange="reversed")
    title = f"Activation rate per class and unit at {html_escape(point)}"
    layout(fig, title, "unit (channel or neuron)", "class", height=class_rows_height(len(class_names)))
    if groups is not None:
        _label_unit_groups(fig, [str(groups[u]) for u in order])
    return fig


def _label_unit_groups(fig: go.Figure, shown_groups: Sequence[str]) -> None:
    """Separator lines between runs of equal group labels (columns in shown order) and each run's label
    above the heatmap; the legend moves above the labels."""
    starts = [i for i, g in enumerate(shown_groups) if i == 0 or g != shown_groups[i - 1]]
    ends = starts[1:] + [len(shown_groups)]
    for start, end in zip(starts, ends, strict=True):
        if start:
            fig.add_shape(type="line", x0=start - 0.5, x1=start - 0.5, y0=0, y1=1, yref="paper",
                          line=dict(color=SEPARATOR_COLOUR, width=1.5))
        fig.add_annotation(x=(start + end - 1) / 2, y=1.0, yref="paper", yanchor="bottom", showarrow=False,
                           text=html_escape(shown_groups[start]), font=dict(size=11))
    # title, then the legend, then the group labels, top down (legend placed in pixels above the plot area)
    top, bottom = 110, fig.layout.margin.b or 50
    plot_height = max(60, (fig.layout.height or 450) - top - bottom)
    fig.update_layout(margin=dict(t=top), title=dict(y=1.0, yref="container", yanchor="top", pad=dict(t=12)))
    legend_above(fig, 1.0 + 22 / plot_height)


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
    outside = [t - i for t, i in zip(total, inside, strict=True)]
    fig = go.Figure([
        go.Bar(x=points, y=inside, name=f"fires, in module of {html_escape(class_name)}", marker_color=PAIR_COLOURS[0]),
        go.Bar(x=points, y=outside, name="fires, outside that module", marker_color=PAIR_COLOURS[1]),
    ])
    fig.update_layout(barmode="stack")
    legend_above(fig)
    return layout(fig, f"Units that fire for this image, against the module of class {html_escape(class_name)}",
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
    names = [html_escape(name) for name in class_names]  # plotly would render HTML in a name
    fig = go.Figure(go.Heatmap(z=z, x=points, y=names, colorscale=RATE_SCALE, zmin=0.0, zmax=1.0,
                               colorbar=dict(title="share"),
                               hovertemplate="class %{y} at %{x}: %{z:.1%} of the firing units are in its module"
                                             "<extra></extra>"))
    fig.update_yaxes(type="category", autorange="reversed")
    return layout(fig, "Share of this image's firing units that each class module keeps", "activation point",
                  "class module", height=class_rows_height(len(class_names)))
