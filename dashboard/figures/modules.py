"""The Modules page's figures: module sizes per class, the class×class weight overlap, and the layers the
overlap lives in."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from dashboard.figures.style import OVERLAP_SCALE, PAIR_COLOURS, layout, legend_above
from dashboard.plain_text import html_escape


def module_size_bars(sizes: Mapping[str, Sequence[float]], class_names: Sequence[str],
                     title: str = "Module size per class (share of the full model's parameters)",
                     first_colour: int = 0) -> go.Figure:
    """Grouped bars of module size (fraction of the full model's parameters) per class, one group per run,
    always with a legend naming the run; ``first_colour`` picks the first run's colour (so two charts of
    one run each keep the runs' colours apart). Names, labels and the title are text, never HTML."""
    names = [html_escape(name) for name in class_names]
    fig = go.Figure([go.Bar(x=names, y=list(values), name=html_escape(label), showlegend=True,
                            marker_color=PAIR_COLOURS[(first_colour + i) % len(PAIR_COLOURS)],
                            hovertemplate=f"class %{{x}}: %{{y:.1%}} of the weights<extra>{html_escape(label)}</extra>")
                     for i, (label, values) in enumerate(sizes.items())])
    fig.update_layout(barmode="group", yaxis_tickformat=".0%")
    legend_above(fig)
    fig.update_xaxes(type="category")
    return layout(fig, html_escape(title), "class", "module size")


def overlap_heatmap(overlap: np.ndarray, class_names: Sequence[str], title: str = "Weight overlap between classes",
                    zmax: float | None = None, height: int = 480) -> go.Figure:
    """Class×class weight-overlap matrix (fractions of full-model parameters) as a heatmap, ``height`` px tall. Its
    colour scale runs from 0 to ``zmax`` (a scale shared with another heatmap), else to its own largest value, so
    that a matrix of small overlaps still shows its structure; the colour bar's title states the range and which."""
    overlap = np.asarray(overlap, dtype=float)
    names = [html_escape(name) for name in class_names]  # plotly would render HTML in a name
    top = float(overlap.max()) if zmax is None else float(zmax)
    scale = "own scale" if zmax is None else "shared scale"
    fig = go.Figure(go.Heatmap(z=overlap, x=names, y=names, colorscale=OVERLAP_SCALE, zmin=0.0, zmax=top,
                               colorbar=dict(title=f"share<br>0–{top:.1%}<br>{scale}",
                                             tickformat=".0%" if top >= 0.05 else ".1%"),
                               text=[[f"{v:.1%}" for v in row] for row in overlap], texttemplate="%{text}",
                               hovertemplate="classes %{y} and %{x} share %{z:.1%} of the weights<extra></extra>"))
    # square cells by shrinking the plot area (constrain="domain"), not by widening the axis range, which
    # would leave an empty band between the heatmap and its x labels
    fig.update_xaxes(type="category", constrain="domain")
    fig.update_yaxes(type="category", autorange="reversed", scaleanchor="x", constrain="domain")
    return layout(fig, html_escape(title), "class", "class", height=height)


def overlap_by_layer(layers: Mapping[str, float], title: str = "Where the overlap lives",
                     colour: str = PAIR_COLOURS[0]) -> go.Figure:
    """Bars: mean pairwise overlap contributed by each layer (fraction of full-model parameters)."""
    fig = go.Figure(go.Bar(x=[html_escape(layer) for layer in layers], y=list(layers.values()), marker_color=colour,
                           hovertemplate="%{x}: %{y:.1%} of all weights<extra></extra>"))
    fig.update_layout(yaxis_tickformat=".1%")
    return layout(fig, html_escape(title), "layer", "mean pairwise overlap")


def overlap_by_layer_pair(layers: Mapping[str, Mapping[str, float]]) -> go.Figure:
    """Grouped bars: per layer, the mean pairwise overlap of each run (``{run label: {layer: value}}``)."""
    fig = go.Figure([go.Bar(x=[html_escape(layer) for layer in values], y=list(values.values()),
                            name=html_escape(label), marker_color=PAIR_COLOURS[i % len(PAIR_COLOURS)],
                            hovertemplate="%{x}: %{y:.1%} of all weights<extra>" + html_escape(label) + "</extra>")
                     for i, (label, values) in enumerate(layers.items())])
    fig.update_layout(barmode="group", yaxis_tickformat=".1%")
    legend_above(fig)
    return layout(fig, "Where the overlap lives: mean pairwise overlap per layer", "layer",
                  "mean pairwise overlap")
