"""The dashboard's plotly figures: given arrays, the right data, titles and colour scales."""
from __future__ import annotations

import numpy as np
import plotly.colors

from dashboard import figures

NAMES = ["zero", "one", "two"]


def _scale_name(trace) -> list:
    return [c for _, c in trace.colorscale]


def test_rate_heatmap_data_titles_and_scale():
    rates = np.array([[0.1, 0.95, 0.5], [1.0, 0.0, 0.92], [0.3, 0.3, 0.3]])
    masks = rates >= 0.9
    fig = figures.rate_heatmap(rates, NAMES, "features.3.relu", unit_order=[2, 0, 1], tau=0.9, masks=masks)
    heat, kept = fig.data
    np.testing.assert_allclose(np.asarray(heat.z), rates[:, [2, 0, 1]])
    assert list(heat.x) == ["2", "0", "1"] and list(heat.y) == NAMES
    assert (heat.zmin, heat.zmax) == (0.0, 1.0)
    assert _scale_name(heat) == [c for _, c in plotly.colors.get_colorscale("Viridis")]
    assert "features.3.relu" in fig.layout.title.text
    assert fig.layout.xaxis.title.text.startswith("unit") and fig.layout.yaxis.title.text == "class"
    # outlined cells: exactly the kept (class, unit) pairs
    assert sorted(zip(kept.y, kept.x)) == sorted([("zero", "1"), ("one", "0"), ("one", "2")])
    assert "0.90" in kept.name


def test_units_by_class_order_groups_by_first_owner_then_rate():
    rates = np.array([[0.2, 0.95, 0.0, 0.99], [0.91, 0.0, 0.5, 0.0]])
    masks = rates >= 0.9
    # class 0 keeps units 3 (0.99) and 1 (0.95); class 1 keeps unit 0; unit 2 is nobody's
    assert figures.units_by_class_order(rates, masks) == [3, 1, 0, 2]


def test_overlap_heatmap_values_text_and_colour_scale():
    overlap = np.array([[0.05, 0.01], [0.01, 0.04]])
    fig = figures.overlap_heatmap(overlap, ["a", "b"], zmax=0.1)
    heat = fig.data[0]
    np.testing.assert_allclose(np.asarray(heat.z), overlap)
    assert heat.zmax == 0.1 and heat.zmin == 0.0
    assert _scale_name(heat) == [c for _, c in plotly.colors.get_colorscale("Cividis")]
    assert heat.text[0][1] == "1.0%"
    assert fig.layout.title.text == "Weight overlap between classes"
    assert fig.layout.xaxis.title.text == "class" == fig.layout.yaxis.title.text


def test_module_size_and_layer_bars():
    fig = figures.module_size_bars({"MODA": [0.1, 0.2, 0.3], "standard": [0.8, 0.9, 0.7]}, NAMES)
    assert [t.name for t in fig.data] == ["MODA", "standard"]
    assert list(fig.data[1].y) == [0.8, 0.9, 0.7] and list(fig.data[0].x) == NAMES
    assert fig.layout.barmode == "group" and fig.layout.yaxis.title.text == "module size"
    layers = figures.overlap_by_layer_pair({"A": {"l1": 0.01, "l2": 0.02}, "B": {"l1": 0.3, "l2": 0.1}})
    assert list(layers.data[0].x) == ["l1", "l2"] and list(layers.data[1].y) == [0.3, 0.1]
    single = figures.overlap_by_layer({"l1": 0.5})
    assert list(single.data[0].y) == [0.5] and single.layout.xaxis.title.text == "layer"


def test_firing_and_match_figures_count_units():
    fired = {"p1": np.array([True, True, False, True]), "p2": np.array([False, True])}
    masks = {"p1": np.array([[True, False, False, True], [False, True, True, False]]),
             "p2": np.array([[False, False], [True, True]])}
    fig = figures.firing_figure(fired, masks, 0, "zero")
    inside, outside = fig.data
    assert list(inside.y) == [2, 0] and list(outside.y) == [1, 1]
    assert "zero" in fig.layout.title.text
    match = figures.image_module_match(fired, masks, ["zero", "one"])
    np.testing.assert_allclose(np.asarray(match.data[0].z), [[2 / 3, 0.0], [1 / 3, 1.0]])


def test_history_accuracy_compose_and_swap_figures():
    history = [{"epoch": 1, "ce": 1.0, "affinity": float("nan"), "dispersion": 0.5, "compactness": 0.2,
                "train_accuracy": 0.5, "test_accuracy": 0.4},
               {"epoch": 2, "ce": 0.5, "affinity": float("nan"), "dispersion": 0.4, "compactness": 0.1,
                "train_accuracy": 0.8, "test_accuracy": 0.7}]
    losses = figures.history_figure(history)
    assert [t.name for t in losses.data] == ["ce", "dispersion", "compactness"]  # all-NaN terms are left out
    assert list(losses.data[0].y) == [1.0, 0.5] and losses.layout.xaxis.title.text == "epoch"
    acc = figures.accuracy_figure(history)
    assert list(acc.data[1].y) == [0.4, 0.7]
    report = {"params_fraction": 0.2, "flops_fraction": 0.3, "accuracy": 0.99, "full_accuracy": 0.98}
    comp = figures.compose_bars(report)
    assert list(comp.data[1].y) == [0.2, 0.3, 0.99] and list(comp.data[0].y) == [1.0, 1.0, 0.98]
    swap = figures.swap_bars(["2", "5"], [0.3, 0.9], [0.8, 0.9], target="2")
    assert list(swap.data[0].y) == [0.3, 0.9] and list(swap.data[1].y) == [0.8, 0.9]
    assert swap.layout.annotations[0].text == "target" and swap.layout.yaxis.title.text == "accuracy"
