"""The new views' figures (modules over training, the τ trade-off, the union of masks) on hand-made data:
the exact traces, axes and legends they draw."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dashboard.figures.compose import UNION_CELLS, UNION_GRID_COLOURS, union_cells, union_figure
from dashboard.figures.style import METHOD_COLOURS
from dashboard.figures.training import EVOLUTION_PANELS, evolution_figure, integer_dtick, tau_figure


def evolution_frames():
    moda = pd.DataFrame({"epoch": [5, 10, 15], "mean_module_size": [0.6, 0.3, 0.1],
                         "mean_overlap": [0.5, 0.2, 0.05], "test_accuracy": [0.9, 0.95, 0.98]})
    standard = pd.DataFrame({"epoch": [5, 10, 15], "mean_module_size": [0.8, 0.8, 0.79],
                             "mean_overlap": [0.7, 0.69, 0.68], "test_accuracy": [0.93, 0.97, 0.99]})
    return {"MODA (demo/m)": moda.to_dict("list"), "standard training (demo/s)": standard.to_dict("list")}


def test_evolution_figure_three_panels_one_line_per_run_and_method_colours():
    series = evolution_frames()
    fig = evolution_figure(series, {"MODA (demo/m)": "moda", "standard training (demo/s)": "standard"})
    assert len(fig.data) == 6  # 2 runs × 3 panels
    by_panel = {}
    for trace in fig.data:
        by_panel.setdefault(trace.yaxis, []).append(trace)
    assert sorted(by_panel) == ["y", "y2", "y3"]
    moda_size = next(t for t in by_panel["y"] if t.name == "MODA (demo/m)")
    assert list(moda_size.x) == [5, 10, 15] and list(moda_size.y) == [0.6, 0.3, 0.1]
    standard_acc = next(t for t in by_panel["y3"] if t.name.startswith("standard"))
    assert list(standard_acc.y) == [0.93, 0.97, 0.99]
    # one legend entry per run, the same colour in every panel, colour by method
    assert [t.name for t in fig.data if t.showlegend] == list(series)
    for name in series:
        colours = {t.line.color for t in fig.data if t.name == name}
        assert len(colours) == 1
    assert {t.line.color for t in fig.data if t.name.startswith("MODA")} == {METHOD_COLOURS["moda"]}
    assert {t.line.color for t in fig.data if t.name.startswith("standard")} == {METHOD_COLOURS["standard"]}
    # shared, whole-number epoch axis with its title under the last panel; percentages on y
    assert fig.layout.xaxis.matches == "x3" or fig.layout.xaxis2.matches == "x"
    assert fig.layout.xaxis3.title.text == "epoch" and not fig.layout.xaxis.title.text
    assert fig.layout.xaxis.dtick == 2 and fig.layout.xaxis.tickmode == "linear"
    assert fig.layout.yaxis.tickformat == ".0%" and fig.layout.yaxis2.tickformat == ".0%"
    titles = [a.text for a in fig.layout.annotations]
    assert titles == [title for _, title in EVOLUTION_PANELS]
    # sizes and overlaps from 0; accuracy on whole-percent ticks over at least 5 points (accuracy_axis); the
    # legend below the panels, clear of the title
    assert fig.layout.yaxis.rangemode == "tozero" and fig.layout.yaxis2.rangemode == "tozero"
    assert fig.layout.yaxis3.tickformat == ".0%" and fig.layout.yaxis3.range[1] - fig.layout.yaxis3.range[0] >= 0.05
    assert fig.layout.legend.y < 0 and fig.layout.legend.yanchor == "top"


@pytest.mark.parametrize("last, step", [(1, 1), (10, 1), (11, 2), (20, 2), (40, 5), (100, 10), (150, 20),
                                        (240, 25), (5000, 500)])
def test_integer_dtick(last, step):
    assert integer_dtick(last) == step


def test_tau_figure_grid_ticks_and_the_chosen_tau():
    grid = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0]
    series = {"MODA": {"tau": grid, "mean_module_size": [0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2],
                       "mean_overlap": [0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1],
                       "pair_accuracy": [0.99, 0.99, 0.99, 0.99, 0.99, 0.98, 0.97]},
              "standard": {"tau": grid, "mean_module_size": [0.9] * 7, "mean_overlap": [0.8] * 7,
                           "pair_accuracy": [0.995] * 7}}
    fig = tau_figure(series, {"MODA": "moda", "standard": "standard"}, tau=0.85)
    assert len(fig.data) == 7  # 2 runs × 3 panels, and the legend's entry of the dotted line
    accuracy = [t for t in fig.data if t.yaxis == "y3"]
    assert [list(t.y) for t in accuracy] == [series["MODA"]["pair_accuracy"], series["standard"]["pair_accuracy"]]
    assert list(fig.layout.xaxis3.tickvals) == grid and list(fig.layout.xaxis3.ticktext)[-2:] == ["0.95", "1"]
    lines = [s for s in fig.layout.shapes if s.line.dash == "dot"]
    assert len(lines) == 3 and {s.x0 for s in lines} == {0.85}
    assert [t.name for t in fig.data if t.line.dash == "dot"] == ["τ = 0.85 (the pages' τ)"]
    without = tau_figure(series)
    assert not [s for s in without.layout.shapes if s.line.dash == "dot"]
    assert not [t for t in without.data if t.line.dash == "dot"]


def test_union_cells_keep_the_cross_terms():
    cells = union_cells([1, 1, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0])
    assert cells.tolist() == [[1, 1, 4, 0], [1, 3, 2, 0], [4, 2, 2, 0], [0, 0, 0, 0]]
    counts = {code: int((cells == code).sum()) for code in UNION_CELLS}
    size_a, size_b, overlap = counts[1] + counts[3], counts[2] + counts[3], counts[3]
    assert (size_a, size_b, overlap) == (4, 4, 1)
    assert int((cells > 0).sum()) == 9 > size_a + size_b - overlap
    # a layer whose two modules share no input: the union's cross terms are all of the rest
    apart = union_cells([1, 0], [1, 0], [0, 1], [0, 1])
    assert apart.tolist() == [[1, 4], [4, 2]]


def test_union_figure_draws_the_grid_and_a_legend_of_every_kind():
    cells = np.array([[1, 4], [3, 2]])
    fig = union_figure(cells)
    heat = fig.data[0]
    assert [list(r) for r in heat.z] == [[1, 4], [3, 2]]
    assert list(heat.x) == ["in 1", "in 2"] and list(heat.y) == ["out 1", "out 2"]
    assert heat.customdata[0][1] == UNION_CELLS[4]
    assert [t.name for t in fig.data[1:]] == list(UNION_CELLS.values())
    assert [t.marker.color for t in fig.data[1:]] == list(UNION_GRID_COLOURS)
    # each code's colour band: code k is drawn with UNION_GRID_COLOURS[k]
    n = len(UNION_CELLS)
    for k, colour in enumerate(UNION_GRID_COLOURS):
        value = (k + 0.5 - heat.zmin) / (heat.zmax - heat.zmin)
        assert heat.colorscale[2 * k][0] == pytest.approx(k / n) and heat.colorscale[2 * k][1] == colour
        assert k / n <= value <= (k + 1) / n
