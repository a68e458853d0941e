"""The Activations page's figures: activation rates per class and unit, how many units the modules keep
at each τ, module sizes with the floor no module goes below (``add_floor_line``, for any module-size chart),
and one test image's firing units against the class modules."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.colors
import plotly.graph_objects as go

from dashboard.figures.style import (
    LEGEND_MARKER_LINE,
    OUTLINE_COLOUR,
    PAIR_COLOURS,
    RATE_SCALE,
    REFERENCE_COLOUR,
    REFERENCE_LINE,
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
    """Class×unit heatmap of activation rates at one point (colour bar in percent, like the captions).

    ``unit_order`` reorders the columns (the x labels keep the original unit index). With ``masks``
    (class×unit bool, same shape) the cells each class module keeps are outlined in black: one box around
    every run of neighbouring kept cells in a row (``kept_outline_path``), drawn in data coordinates so it
    stays as wide as the cells at 128 units, where markers of a fixed size blurred into a dotted strip; the
    legend names it and each cell's hover says whether its module keeps it. With ``groups`` (one label per
    unit, original index; see ``unit_groups``) runs of equal labels in the shown order are separated by
    lines and labelled above the heatmap where a label fits (``group_label_rows``); the hover names every
    unit's group.
    """
    rates = np.asarray(rates, dtype=float)
    order = np.arange(rates.shape[1]) if unit_order is None else np.asarray(unit_order)
    shown = rates[:, order]
    units = [str(u) for u in order]
    names = [html_escape(name) for name in class_names]  # plotly would render HTML in a name
    kept = None if masks is None else np.asarray(masks, dtype=bool)[:, order]
    shown_groups = None if groups is None else [html_escape(str(groups[u])) for u in order]
    notes = [[_cell_note(kept, shown_groups, r, c) for c in range(len(units))] for r in range(len(names))]
    fig = go.Figure(go.Heatmap(z=shown, x=units, y=names, colorscale=RATE_SCALE, zmin=0.0, zmax=1.0,
                               colorbar=dict(title="fires on", tickformat=".0%"), customdata=notes,
                               hovertemplate="class %{y}, unit %{x}: fires on %{z:.1%} of its samples"
                                             "%{customdata}<extra></extra>"))
    if kept is not None:
        fig.add_shape(type="path", path=kept_outline_path(kept), line=dict(color=OUTLINE_COLOUR, width=2),
                      layer="above")
        # the legend's entry for the outlines (a trace with no points: the outlines are the shape above)
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers",
                                 marker=dict(symbol="square-open", color=OUTLINE_COLOUR, size=14, line=dict(width=2)),
                                 name=f"in module (rate ≥ τ={tau:.2f})" if tau is not None else "in module",
                                 hoverinfo="skip", showlegend=True))
        legend_above(fig)
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category", autorange="reversed")
    title = f"Activation rate per class and unit at {html_escape(point)}"
    layout(fig, title, "unit (channel or neuron)", "class", height=class_rows_height(len(class_names)))
    if shown_groups is not None:
        _label_unit_groups(fig, shown_groups)
    return fig


def _cell_note(kept: np.ndarray | None, groups: Sequence[str] | None, row: int, column: int) -> str:
    """The hover's words after a cell's rate: whether the class's module keeps the unit, and the unit's group."""
    note = "" if kept is None else (" (in its module)" if kept[row, column] else " (not in its module)")
    return note + ("" if groups is None else f"<br>unit group: {groups[column]}")


def kept_outline_path(kept: np.ndarray, inset: float = 0.06) -> str:
    """An SVG path (plotly shape coordinates: on category axes, column and row numbers) with one box around
    every run of neighbouring kept cells in each row of the class×unit bool ``kept`` (columns in shown
    order), ``inset`` of a cell inside the run's edges so boxes of neighbouring rows stay apart."""
    kept = np.asarray(kept, dtype=bool)
    boxes = []
    for row, cells in enumerate(kept):
        padded = np.concatenate([[False], cells, [False]]).astype(int)
        edges = np.flatnonzero(np.diff(padded))
        for start, end in zip(edges[::2], edges[1::2], strict=True):  # kept cells start … end - 1
            x0, x1 = start - 0.5 + inset, end - 0.5 - inset
            y0, y1 = row - 0.5 + 2 * inset, row + 0.5 - 2 * inset
            boxes.append(f"M{x0:g},{y0:g}H{x1:g}V{y1:g}H{x0:g}Z")
    return "".join(boxes) or "M0,0"


GROUP_LABEL_SIZE = 12  # px: the group labels above the rate heatmap
PLOT_WIDTH = 700  # px: the narrowest plot area the labels are laid out for (a 1280-px screen with the sidebar)
LABEL_GAP = 8  # px between two labels on one row


def group_label_rows(shown_groups: Sequence[str], plot_width: float = PLOT_WIDTH,
                     font_size: float = GROUP_LABEL_SIZE) -> list[tuple[int, int, int]]:
    """Where the group labels above the rate heatmap go: (first column, end column, label row 0 or 1) for the
    labels drawn. Labels alternate between two rows; a label that would touch its row's previous label at a
    plot ``plot_width`` pixels wide is left out (its units' hover still names the group), so narrow groups of
    a 128-unit layer never run together ("4567")."""
    starts = [i for i, g in enumerate(shown_groups) if i == 0 or g != shown_groups[i - 1]]
    ends = starts[1:] + [len(shown_groups)]
    cell = plot_width / max(1, len(shown_groups))
    right_edge = [-np.inf, -np.inf]  # per label row: where its last label ends (px)
    placed = []
    for start, end in zip(starts, ends, strict=True):
        half = _label_width(shown_groups[start], font_size) / 2
        centre = (start + end) / 2 * cell
        row = next((r for r in (0, 1) if centre - half >= right_edge[r] + LABEL_GAP), None)
        if row is not None:
            right_edge[row] = centre + half
            placed.append((start, end, row))
    return placed


def _label_width(text: str, font_size: float) -> float:
    """A generous estimate of a label's width in pixels (0.65 em per character)."""
    return 0.65 * font_size * len(text)


def _label_unit_groups(fig: go.Figure, shown_groups: Sequence[str]) -> None:
    """Separator lines between runs of equal group labels (columns in shown order) and the labels that fit
    above the heatmap, on two rows (``group_label_rows``); the legend moves above the labels."""
    starts = [i for i, g in enumerate(shown_groups) if i == 0 or g != shown_groups[i - 1]]
    lines = [dict(type="line", x0=start - 0.5, x1=start - 0.5, y0=0, y1=1, yref="paper",
                  line=dict(color=SEPARATOR_COLOUR, width=1.5)) for start in starts[1:]]
    row_height = GROUP_LABEL_SIZE + 6
    labels = [dict(x=(start + end - 1) / 2, y=1.0, yref="paper", yanchor="bottom", showarrow=False,
                   yshift=row * row_height, text=shown_groups[start], font=dict(size=GROUP_LABEL_SIZE))
              for start, end, row in group_label_rows(shown_groups)]
    # title, then the legend, then the two rows of group labels, top down (legend placed in pixels above them);
    # shapes and labels added in one update (plotly checks every shape again on each add_shape)
    top, bottom = 130, fig.layout.margin.b or 50
    plot_height = max(60, (fig.layout.height or 450) - top - bottom)
    fig.update_layout(margin=dict(t=top), title=dict(y=1.0, yref="container", yanchor="top", pad=dict(t=12)),
                      shapes=[*fig.layout.shapes, *lines], annotations=[*fig.layout.annotations, *labels])
    legend_above(fig, 1.0 + (2 * row_height + 6) / plot_height)


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
                               colorbar=dict(title="share", tickformat=".0%"),
                               hovertemplate="class %{y} at %{x}: %{z:.1%} of the firing units are in its module"
                                             "<extra></extra>"))
    fig.update_yaxes(type="category", autorange="reversed")
    return layout(fig, "Share of this image's firing units that each class module keeps", "activation point",
                  "class module", height=class_rows_height(len(class_names)))


def kept_by_tau_figure(taus: Sequence[float], shares: Mapping[str, Mapping[str, Sequence[float]]],
                       units: Mapping[str, int], tau: float, point: str | None = None) -> go.Figure:
    """"Units kept per layer vs τ": for every activation point (one distinct colour each, in the legend's order
    from early to late layers), the mean share of its units a class module keeps at each τ of ``taus``.
    ``shares`` maps a run's label → point → shares: the first run solid, a second (its standard-trained twin)
    dashed in the same colours, and the points it lacks left out. ``point`` (the heatmap's) is drawn thick, with
    a dot at the current ``tau``, which a dotted line marks. Labels are text, never HTML."""
    taus = [float(t) for t in taus]
    runs = list(shares)
    points = list(shares[runs[0]]) if runs else []
    # one distinct colour per layer (a sequential scale made neighbouring layers look alike), in the legend's order
    palette = plotly.colors.qualitative.T10 if len(points) <= 10 else plotly.colors.qualitative.Dark24
    colours = [palette[j % len(palette)] for j in range(len(points))]
    dashes = ["solid", "dash", "dot"]
    fig = go.Figure()
    for i, run in enumerate(runs):  # the legend's key to the line styles: which run is solid, which dashed
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=html_escape(run), hoverinfo="skip",
                                 line=dict(color=LEGEND_MARKER_LINE, width=2, dash=dashes[i % len(dashes)])))
    at = int(np.argmin(np.abs(np.asarray(taus) - float(tau)))) if taus else 0
    for i, run in enumerate(runs):
        for j, name in enumerate(points):
            if name not in shares[run]:
                continue
            values = [float(v) for v in shares[run][name]]
            chosen = name == point
            label = html_escape(name)
            fig.add_trace(go.Scatter(
                x=taus, y=values, mode="lines", name=label, legendgroup=label, showlegend=i == 0,
                line=dict(color=colours[j], width=4 if chosen else 1.8, dash=dashes[i % len(dashes)]),
                hovertemplate=f"{label}, {html_escape(run)}: at τ = %{{x:.2f}} a module keeps %{{y:.1%}} of "
                              f"{units.get(name, '?')} units<extra></extra>"))
            if chosen and taus:
                fig.add_trace(go.Scatter(x=[taus[at]], y=[values[at]], mode="markers", legendgroup=label,
                                         showlegend=False, hoverinfo="skip",
                                         marker=dict(color=colours[j], size=11, line=dict(color=OUTLINE_COLOUR,
                                                                                          width=1.5))))
    fig.add_vline(x=float(tau), line=dict(color=REFERENCE_LINE, width=1.5, dash="dot"))
    fig.update_xaxes(range=[min(taus, default=0.5) - 0.005, max(taus, default=1.0) + 0.005], dtick=0.1,
                     tickformat=".1f")
    fig.update_yaxes(range=[0.0, 1.04], tickformat=".0%")
    names = [html_escape(run) for run in runs] + [html_escape(p) for p in points]
    top = _legend_above_title(fig, names)
    title = f"Units kept per layer vs τ (dotted: τ = {float(tau):.2f}" + (f"; thick: {html_escape(point)})" if point
                                                                       else ")")
    return layout(fig, title, "threshold τ",
                  "share of the layer's units a module keeps", height=340 + top, t=top)


def _legend_above_title(fig: go.Figure, names: Sequence[str], plot_width: float = PLOT_WIDTH) -> int:
    """A horizontal legend between the title (at the top of the figure) and the plot area, for a legend of
    ``names`` that may wrap onto several rows at a plot ``plot_width`` pixels wide; returns the top margin
    that holds both."""
    entry = [40 + _label_width(name, 12) for name in names]
    rows, used = 1, 0.0
    for width in entry:
        if used and used + width > plot_width:
            rows, used = rows + 1, 0.0
        used += width
    top = 56 + 22 * rows
    fig.update_layout(title=dict(y=1.0, yref="container", yanchor="top", pad=dict(t=12)),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, yref="paper", x=0, title_text=""))
    return top


FLOOR_SHOWN = 0.005  # a floor below half a percent of the parameters (a CNN's logit bias) is not drawn
FLOOR_NAME = "floor: kept by every module"


def floor_text(floor: float) -> str:
    """One sentence explaining a module-size floor (``moda_core.summary.module_floor``) under a chart."""
    return (f"The floor ({floor:.1%} of the parameters): every module keeps the parameters no unit mask can drop "
            "(a ViT's attention, norms and embeddings), so no module is smaller at any τ, and modules just above "
            "it are as small as this model allows, not modules that failed to separate.")


def add_floor_line(fig: go.Figure, floor: float | None, axis: str = "y", row: int | str | None = None,
                   col: int | str | None = None, label: bool = True) -> go.Figure:
    """Draw a module-size floor (a share of the parameters, ``moda_core.summary.module_floor``) as a dashed
    line across a chart whose ``axis`` ("y", or "x" for horizontal bars) is module size, labelled on the side
    no module size reaches (below it, or left of it); nothing when ``floor`` is None or under
    ``FLOOR_SHOWN``. ``row``/``col`` pick a subplot. Put ``floor_text`` in the chart's caption."""
    if floor is None or not floor >= FLOOR_SHOWN:
        return fig
    text = f"floor {floor:.1%}: kept by every module" if label else None
    draw = fig.add_hline if axis == "y" else fig.add_vline
    position = "bottom right" if axis == "y" else "top left"
    where = {} if row is None and col is None else {"row": row or "all", "col": col or "all"}
    draw(floor, line=dict(color=REFERENCE_LINE, width=2, dash="dash"), annotation_text=text,
         annotation_position=position, **where)
    return fig


def module_size_figure(sizes: Sequence[float], class_names: Sequence[str], tau: float,
                       floor: float | None = None) -> go.Figure:
    """Each class module's size at ``tau`` (a share of the model's parameters) as bars on a 0–100% axis. With a
    ``floor`` of at least ``FLOOR_SHOWN`` each bar is split into the floor every module keeps (grey) and the
    part above it, with the floor's dashed line (``add_floor_line``). Names are text, never HTML."""
    names = [html_escape(name) for name in class_names]
    sizes = [float(s) for s in sizes]
    text = [f"{s:.1%}" for s in sizes]
    hover = "class %{x}: its module keeps %{customdata:.1%} of the parameters<extra></extra>"
    if floor is not None and floor >= FLOOR_SHOWN:
        bars = [go.Bar(x=names, y=[floor] * len(sizes), name=FLOOR_NAME, marker_color=REFERENCE_COLOUR,
                       customdata=sizes, hovertemplate=hover),
                go.Bar(x=names, y=[max(0.0, s - floor) for s in sizes], name="above the floor",
                       marker_color=PAIR_COLOURS[0], text=text, textposition="outside", customdata=sizes,
                       hovertemplate=hover)]
    else:
        bars = [go.Bar(x=names, y=sizes, name="module size", marker_color=PAIR_COLOURS[0], text=text,
                       textposition="outside", customdata=sizes, hovertemplate=hover)]
    fig = go.Figure(bars)
    fig.update_layout(barmode="stack", showlegend=len(bars) > 1)
    fig.update_xaxes(type="category")
    fig.update_yaxes(range=[0.0, 1.1], tickvals=[0, 0.25, 0.5, 0.75, 1.0], tickformat=".0%")
    add_floor_line(fig, floor, label=False)
    legend_above(fig)
    return layout(fig, f"Module size per class at τ = {float(tau):.2f} (share of the model's parameters)", "class",
                  "module size", height=320)
