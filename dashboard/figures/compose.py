"""Figures of composition: a composed module next to the full model (Compose), and how the union of two
modules' masks keeps one layer's weights (How MODA works)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from dashboard.figures.style import (
    OKABE_ITO,
    PAIR_COLOURS,
    UNION_COLOURS,
    layout,
    legend_above,
    legend_right,
    square_marker,
)

UNION_CELLS = {0: "kept by neither", 1: "only module A", 2: "only module B", 3: "both modules (overlap)",
               4: "only the union (A's inputs × B's outputs, or B's × A's)"}


def compose_bars(report: Mapping[str, float]) -> go.Figure:
    """Composed module next to the full model: parameters, FLOPs (as shares of the full model) and accuracy.

    A module of one class has one output, always the argmax, so its accuracy (100%) says nothing: when the
    report has ``one_vs_rest_auc`` (``moda_core.metrics.compose_report`` gives it for one class) the third
    pair of bars is that AUC on all test images, next to the full model's for its logit of the class."""
    one_class = "one_vs_rest_auc" in report
    if one_class:
        labels = ["parameters", "FLOPs", "one-vs-rest AUC"]
        composed = [report["params_fraction"], report["flops_fraction"], report["one_vs_rest_auc"]]
        full = [1.0, 1.0, report["full_one_vs_rest_auc"]]
    else:
        labels = ["parameters", "FLOPs", "accuracy"]
        composed = [report["params_fraction"], report["flops_fraction"], report["accuracy"]]
        full = [1.0, 1.0, report["full_accuracy"]]

    def texts(values: list[float]) -> list[str]:
        shares = [f"{v:.1%}" for v in values]
        return [*shares[:2], f"{values[2]:.3f}"] if one_class else shares

    fig = go.Figure([
        go.Bar(x=labels, y=full, name="full model", marker_color=PAIR_COLOURS[1],
               text=texts(full), textposition="outside"),
        go.Bar(x=labels, y=composed, name="composed module", marker_color=PAIR_COLOURS[0],
               text=texts(composed), textposition="outside"),
    ])
    fig.update_layout(barmode="group", yaxis_tickformat=".0%", yaxis_range=[0, 1.15])
    legend_above(fig)
    return layout(fig, "Composed module vs full model (parameters and FLOPs as a share of the full model)",
                  "measure", "share / AUC" if one_class else "share / accuracy")


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


# How MODA works' grid: ``style.UNION_COLOURS`` with the union's own cells in Okabe–Ito bluish green, since its
# vermillion, next to module B's orange, looked the same on a projector and to red–green colour-blind viewers;
# each colour's name for the captions, and a mark in every cell so the grid reads without colour too
UNION_GRID_COLOURS = (*UNION_COLOURS[:4], OKABE_ITO[2])
UNION_COLOUR_NAMES = {0: "light grey", 1: "blue", 2: "orange", 3: "black", 4: "green"}
UNION_MARKS = {0: "", 1: "A", 2: "B", 3: "both", 4: "union"}


def union_figure(cells: np.ndarray) -> go.Figure:
    """The weight grid of ``union_cells``: one square per weight, coloured by which module keeps it
    (``UNION_GRID_COLOURS``, named in ``UNION_COLOUR_NAMES``) and marked in words (``UNION_MARKS``). The input
    units run along the bottom, clear of the title."""
    codes = list(UNION_CELLS)
    n = len(codes)
    # a discrete colour scale: code k fills the band [k/n, (k+1)/n]
    scale = [[edge, UNION_GRID_COLOURS[k]] for k in range(n) for edge in (k / n, (k + 1) / n)]
    rows, cols = cells.shape
    fig = go.Figure(go.Heatmap(z=cells.tolist(), zmin=-0.5, zmax=n - 0.5, colorscale=scale, showscale=False,
                               xgap=2, ygap=2,
                               x=[f"in {j + 1}" for j in range(cols)], y=[f"out {i + 1}" for i in range(rows)],
                               text=[[UNION_MARKS[int(c)] for c in row] for row in cells], texttemplate="%{text}",
                               textfont=dict(size=16),
                               customdata=[[UNION_CELLS[int(c)] for c in row] for row in cells],
                               hovertemplate="%{y} ← %{x}: %{customdata}<extra></extra>"))
    for code in codes:  # legend entries (traces with no points)
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", hoverinfo="skip",
                                 name=UNION_CELLS[code],
                                 marker=square_marker(UNION_GRID_COLOURS[code])))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category", side="bottom")
    fig.update_layout(plot_bgcolor="white")
    legend_right(fig)
    return layout(fig, "One layer's weights: who keeps which", "input unit", "output unit", height=380)
