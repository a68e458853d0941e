"""The dashboard's plotly figures: given arrays, the right data, titles and colour scales."""
from __future__ import annotations

import numpy as np
import plotly.colors
import pytest

from dashboard.figures.activations import (
    SHARED_GROUP,
    UNKEPT_GROUP,
    firing_figure,
    image_module_match,
    kept_outline_path,
    rate_heatmap,
    unit_groups,
    units_by_class_order,
)
from dashboard.figures.compare import (
    accuracy_axis_range,
    compare_accuracy,
    compare_cost,
    compare_module_size,
    compare_overlap,
    model_label,
    overhead_ratios,
)
from dashboard.figures.compose import compose_bars
from dashboard.figures.modules import module_size_bars, overlap_by_layer, overlap_by_layer_pair, overlap_heatmap
from dashboard.figures.style import OKABE_ITO, OUTLINE_COLOUR, REFERENCE_COLOUR, method_colours
from dashboard.figures.swap import swap_bars
from dashboard.figures.training import accuracy_figure, history_figure

NAMES = ["zero", "one", "two"]


def _scale_name(trace) -> list:
    return [c for _, c in trace.colorscale]


def test_rate_heatmap_data_titles_and_scale():
    rates = np.array([[0.1, 0.95, 0.5], [1.0, 0.0, 0.92], [0.3, 0.3, 0.3]])
    masks = rates >= 0.9
    fig = rate_heatmap(rates, NAMES, "features.3.relu", unit_order=[2, 0, 1], tau=0.9, masks=masks)
    heat, kept = fig.data
    np.testing.assert_allclose(np.asarray(heat.z), rates[:, [2, 0, 1]])
    assert list(heat.x) == ["2", "0", "1"] and list(heat.y) == NAMES
    assert (heat.zmin, heat.zmax) == (0.0, 1.0)
    assert _scale_name(heat) == [c for _, c in plotly.colors.get_colorscale("Viridis")]
    assert "features.3.relu" in fig.layout.title.text
    assert fig.layout.xaxis.title.text.startswith("unit") and fig.layout.yaxis.title.text == "class"
    # outlined cells: exactly the kept (class, unit) pairs, in the hover and boxed by the outline (shown order)
    in_module = {(NAMES[r], heat.x[c]) for r in range(3) for c in range(3)
                 if "(in its module)" in heat.customdata[r][c]}
    assert in_module == {("zero", "1"), ("one", "0"), ("one", "2")}
    (outline,) = fig.layout.shapes
    assert outline.path == kept_outline_path(masks[:, [2, 0, 1]])
    assert "0.90" in kept.name


def test_units_by_class_order_groups_by_first_owner_then_rate():
    rates = np.array([[0.2, 0.95, 0.0, 0.99], [0.91, 0.0, 0.5, 0.0]])
    masks = rates >= 0.9
    # class 0 keeps units 3 (0.99) and 1 (0.95); class 1 keeps unit 0; unit 2 is nobody's
    assert units_by_class_order(rates, masks) == [3, 1, 0, 2]


def test_overlap_heatmap_values_text_and_colour_scale():
    overlap = np.array([[0.05, 0.01], [0.01, 0.04]])
    fig = overlap_heatmap(overlap, ["a", "b"], zmax=0.1)
    heat = fig.data[0]
    np.testing.assert_allclose(np.asarray(heat.z), overlap)
    assert heat.zmax == 0.1 and heat.zmin == 0.0
    assert _scale_name(heat) == [c for _, c in plotly.colors.get_colorscale("Cividis")]
    assert heat.text[0][1] == "1.0%"
    assert fig.layout.title.text == "Weight overlap between classes"
    assert fig.layout.xaxis.title.text == "class" == fig.layout.yaxis.title.text


def test_module_size_and_layer_bars():
    fig = module_size_bars({"MODA": [0.1, 0.2, 0.3], "standard": [0.8, 0.9, 0.7]}, NAMES)
    assert [t.name for t in fig.data] == ["MODA", "standard"]
    assert list(fig.data[1].y) == [0.8, 0.9, 0.7] and list(fig.data[0].x) == NAMES
    assert fig.layout.barmode == "group" and fig.layout.yaxis.title.text == "module size"
    layers = overlap_by_layer_pair({"A": {"l1": 0.01, "l2": 0.02}, "B": {"l1": 0.3, "l2": 0.1}})
    assert list(layers.data[0].x) == ["l1", "l2"] and list(layers.data[1].y) == [0.3, 0.1]
    single = overlap_by_layer({"l1": 0.5})
    assert list(single.data[0].y) == [0.5] and single.layout.xaxis.title.text == "layer"


def test_firing_and_match_figures_count_units():
    fired = {"p1": np.array([True, True, False, True]), "p2": np.array([False, True])}
    masks = {"p1": np.array([[True, False, False, True], [False, True, True, False]]),
             "p2": np.array([[False, False], [True, True]])}
    fig = firing_figure(fired, masks, 0, "zero")
    inside, outside = fig.data
    assert list(inside.y) == [2, 0] and list(outside.y) == [1, 1]
    assert "zero" in fig.layout.title.text
    match = image_module_match(fired, masks, ["zero", "one"])
    np.testing.assert_allclose(np.asarray(match.data[0].z), [[2 / 3, 0.0], [1 / 3, 1.0]])


def test_history_accuracy_compose_and_swap_figures():
    history = [{"epoch": 1, "ce": 1.0, "affinity": float("nan"), "dispersion": 0.5, "compactness": 0.2,
                "train_accuracy": 0.5, "test_accuracy": 0.4},
               {"epoch": 2, "ce": 0.5, "affinity": float("nan"), "dispersion": 0.4, "compactness": 0.1,
                "train_accuracy": 0.8, "test_accuracy": 0.7}]
    losses = history_figure(history)
    assert [t.name for t in losses.data] == ["ce", "dispersion", "compactness"]  # all-NaN terms are left out
    assert list(losses.data[0].y) == [1.0, 0.5] and losses.layout.xaxis.title.text == "epoch"
    acc = accuracy_figure(history)
    assert list(acc.data[1].y) == [0.4, 0.7]
    report = {"params_fraction": 0.2, "flops_fraction": 0.3, "accuracy": 0.99, "full_accuracy": 0.98}
    comp = compose_bars(report)
    assert list(comp.data[1].y) == [0.2, 0.3, 0.99] and list(comp.data[0].y) == [1.0, 1.0, 0.98]
    swap = swap_bars(["2", "5"], [0.3, 0.9], {"calibrate": [0.8, 0.9]}, target="2")
    assert list(swap.data[0].y) == [0.3, 0.9] and list(swap.data[1].y) == [0.8, 0.9]
    assert swap.layout.annotations[0].text.startswith("target") and swap.layout.yaxis.title.text == "accuracy"


@pytest.mark.parametrize("target", ["3", "7", "9", "cat"])
def test_swap_arrow_marks_the_target_category(target):
    """Numeric-looking class names on a category axis: the arrow must stand over the target."""
    names = ["3", "5", "6", "7", "8", "9"] if target != "cat" else ["dog", "cat", "ship"]
    before = [0.1 * (k + 1) for k in range(len(names))]
    afters = {"calibrate": [0.9] * len(names), "normalize": [0.5] * len(names), "affine": [0.95] * len(names)}
    fig = swap_bars(names, before, afters, target=target)
    assert [t.name for t in fig.data] == ["before (weak model)", "after: calibrate", "after: normalize",
                                          "after: affine"]
    assert fig.layout.xaxis.type == "category" and list(fig.layout.xaxis.categoryarray) == names
    arrow = fig.layout.annotations[0]
    # plotly reads an annotation's x on a category axis as the category's serial number
    assert isinstance(arrow.x, int) and names[arrow.x] == target
    assert arrow.y == max(before[names.index(target)], 0.95)
    assert len({t.marker.color for t in fig.data}) == 4
    assert not swap_bars(names, before, afters, target="42").layout.annotations


def _compare_rows() -> list[dict]:
    """Two models × three methods, as bench/compare.py writes them (MwT has no row for the VGG's pairs)."""
    def row(model, width, method, acc, ratio, size, overlap, pair, pair_std):
        return {"model": model, "width": width, "method": method, "epochs": 15, "seed": 0, "test_accuracy": acc,
                "seconds_per_epoch": 0.5 * ratio, "time_ratio_vs_standard": ratio, "mean_module_size": size,
                "mean_overlap": overlap, "pair_params_fraction": 0.1, "pair_composed_accuracy": pair,
                "pair_standard_accuracy": pair_std}
    return [row("lenet5", 1.0, "standard", 0.97, 1.0, 0.6, 0.5, 0.99, 0.995),
            row("lenet5", 1.0, "moda", 0.98, 1.3, 0.1, 0.04, 0.996, 0.995),
            row("lenet5", 1.0, "mwt", 0.96, 1.1, 0.3, 0.2, 0.98, 0.995),
            row("vgg11", 0.25, "mwt", 0.95, 1.2, 0.35, 0.25, float("nan"), float("nan")),
            row("vgg11", 0.25, "moda", 0.986, 7.9, 0.37, 0.23, 0.996, 0.997),
            row("vgg11", 0.25, "standard", 0.988, 1.0, 0.81, 0.71, 0.997, 0.997)]


def test_compare_bars_one_colour_per_method_on_every_figure():
    rows = _compare_rows()
    sizes = compare_module_size(rows)
    # methods in a fixed order (standard, MODA, MwT) whatever the row order; models in order of appearance
    assert [t.name for t in sizes.data] == ["standard training", "MODA", "MwT"]
    assert list(sizes.data[0].x) == ["lenet5", "vgg11 ×0.25"]
    assert list(sizes.data[1].y) == [0.1, 0.37] and list(sizes.data[2].y) == [0.3, 0.35]
    assert sizes.data[1].text[0] == "10.0%" and sizes.layout.barmode == "group"
    assert "lower is better" in sizes.layout.title.text and "module size" in sizes.layout.yaxis.title.text
    assert sizes.layout.xaxis.title.text == "model"
    overlap = compare_overlap(rows)
    assert list(overlap.data[0].y) == [0.5, 0.71] and "overlap" in overlap.layout.yaxis.title.text
    colours = {"standard training": "#E69F00", "MODA": "#0072B2", "MwT": "#009E73"}  # Okabe–Ito
    for fig in (sizes, overlap, compare_accuracy(rows), compare_cost(rows)):
        for trace in fig.data:
            if trace.name in colours:
                assert trace.marker.color == colours[trace.name], (fig.layout.title.text, trace.name)
    assert set(colours.values()) <= set(OKABE_ITO)
    # an unknown method gets a spare Okabe–Ito colour, not one of the three
    extra = method_colours(["standard", "moda", "mwt", "cnnsplitter"])
    assert extra["cnnsplitter"] in OKABE_ITO and extra["cnnsplitter"] not in colours.values()


def test_compare_accuracy_panels_and_reference():
    fig = compare_accuracy(_compare_rows())
    full = [t for t in fig.data if t.xaxis == "x"]
    pairs = [t for t in fig.data if t.xaxis == "x2"]
    assert [t.name for t in full] == ["standard training", "MODA", "MwT"]
    assert list(full[1].y) == [0.98, 0.986]
    assert [t.name for t in pairs] == ["standard training", "MODA", "MwT", "standard model, same pairs"]
    assert list(pairs[1].y) == [0.996, 0.996]
    assert pairs[2].y[0] == 0.98 and np.isnan(pairs[2].y[1]) and pairs[2].text[1] == ""  # no pairs: no bar
    assert list(pairs[3].y) == [0.995, 0.997] and pairs[3].marker.color == REFERENCE_COLOUR
    assert [t.showlegend for t in pairs[:3]] == [False] * 3  # one legend entry per method
    assert fig.layout.yaxis.title.text.startswith("test accuracy") and fig.layout.yaxis.tickformat == ".0%"
    assert "Test accuracy" in fig.layout.title.text
    assert [a.text for a in fig.layout.annotations] == ["Whole model, all classes",
                                                        "Two-class modules, mean over class pairs"]


def test_compare_cost_ratios_reference_line_and_step_panel():
    rows = _compare_rows()
    fig = compare_cost(rows)
    # standard training is the dashed line at 1 (with its own legend entry), not a bar
    assert [t.name for t in fig.data] == ["MODA", "MwT", "standard training (= 1)"]
    assert list(fig.data[0].y) == [1.3, 7.9] and fig.data[0].text[1] == "×7.90"
    line = fig.layout.shapes[0]
    assert (line.y0, line.y1, line.line.dash) == (1.0, 1.0, "dash") and fig.data[2].line.dash == "dash"
    assert "standard training" in fig.layout.yaxis.title.text and fig.layout.xaxis.title.text == "model"
    assert [a.text for a in fig.layout.annotations] == ["Seconds per epoch"]
    overhead = {"lenet5": {"moda_ratio": 1.4, "mwt_ratio": 1.2}, "resnet18": {"moda_ratio": 2.0, "mwt_ratio": 1.5}}
    both = compare_cost(rows, overhead, device="cuda H100")
    steps = [t for t in both.data if t.xaxis == "x2" and t.type == "bar"]
    assert [(t.name, list(t.x), list(t.y)) for t in steps] == [("MODA", ["lenet5", "resnet18"], [1.4, 2.0]),
                                                                 ("MwT", ["lenet5", "resnet18"], [1.2, 1.5])]
    assert steps[0].marker.color == "#0072B2" and not any(t.showlegend for t in steps)
    assert len(both.layout.shapes) == 2 and all(s.y0 == 1.0 for s in both.layout.shapes)
    assert any("cuda H100" in a.text for a in both.layout.annotations)
    assert both.layout.yaxis2.title.text == both.layout.yaxis.title.text
    assert overhead_ratios({"m": {"moda_ratio": 2.0, "batch": 128}}) == {"moda": {"m": 2.0}}


def test_model_label_marks_width():
    assert model_label({"model": "vgg11", "width": 0.25}) == "vgg11 ×0.25"
    assert model_label({"model": "lenet5", "width": 1.0}) == "lenet5"
    assert model_label({"model": "mlp", "width": float("nan")}) == "mlp"


# --- visual and teaching fixes --------------------------------------------------------------------------


def test_rate_heatmap_outlines_are_visible_on_the_legend_and_on_kept_cells():
    rates = np.array([[0.99, 0.1], [0.95, 0.97]])
    fig = rate_heatmap(rates, ["a", "b"], "p", tau=0.9, masks=rates >= 0.9)
    marker = fig.data[1].marker
    # white outlines vanished on the white legend and on yellow cells; kept cells are teal to yellow
    assert marker.color.lower() not in ("white", "#fff", "#ffffff") and marker.color == OUTLINE_COLOUR
    assert marker.line.width >= 2


def test_units_by_class_order_puts_shared_units_in_their_own_group():
    rates = np.array([[0.95, 0.92, 0.1, 0.2], [0.0, 0.96, 0.93, 0.1]])
    masks = rates >= 0.9
    # unit 0: class a only; unit 2: class b only; unit 1: both (shared, not filed under a); unit 3: none
    assert units_by_class_order(rates, masks) == [0, 2, 1, 3]
    groups = unit_groups(masks, ["a", "b"])
    assert groups == ["a", SHARED_GROUP, "b", UNKEPT_GROUP]
    fig = rate_heatmap(rates, ["a", "b"], "p", unit_order=[0, 2, 1, 3], tau=0.9, masks=masks, groups=groups)
    assert [a.text for a in fig.layout.annotations] == ["a", "b", SHARED_GROUP, UNKEPT_GROUP]
    lines = [s.x0 for s in fig.layout.shapes if s.type == "line"]
    assert sorted(lines) == [0.5, 1.5, 2.5]  # a line between neighbouring groups


def test_epoch_axes_show_whole_epochs_only():
    history = [{"epoch": e, "ce": 1.0 / e, "train_accuracy": 0.9, "test_accuracy": 0.8} for e in (1, 2, 3)]
    for fig in (history_figure(history), accuracy_figure(history)):
        assert fig.layout.xaxis.dtick == 1 and fig.layout.xaxis.tick0 == 1 and fig.layout.xaxis.tickmode == "linear"
    long = [{"epoch": e, "ce": 1.0} for e in range(1, 41)]
    axis = history_figure(long).layout.xaxis
    assert axis.dtick == 5 and float(axis.dtick).is_integer()


def test_loss_terms_that_were_not_trained_say_so():
    history = [{"epoch": 1, "ce": 1.0, "affinity": 0.3, "dispersion": 0.5, "compactness": 0.2}]
    fig = history_figure(history, trained={"ce": True, "affinity": False, "dispersion": False,
                                           "compactness": False})
    assert [t.name for t in fig.data] == ["ce", "affinity", "dispersion", "compactness"]
    assert [t.legendgrouptitle.text for t in fig.data] == ["trained"] + ["measured, not trained"] * 3
    assert fig.data[0].line.dash is None and fig.data[1].line.dash == "dash"
    assert "not trained" in fig.data[1].hovertemplate and "not trained" not in fig.data[0].hovertemplate
    plain = history_figure(history)
    assert not any(t.legendgrouptitle.text for t in plain.data) and not any(t.line.dash for t in plain.data)


def test_two_module_size_charts_differ_in_title_colour_and_have_a_legend():
    a = module_size_bars({"A: demo/moda": [0.1, 0.2]}, ["x", "y"], title="Module size per class, run A")
    b = module_size_bars({"B: demo/standard": [0.8, 0.9]}, ["x", "y"], title="Module size per class, run B",
                         first_colour=1)
    assert a.layout.title.text != b.layout.title.text
    assert a.data[0].marker.color != b.data[0].marker.color
    assert a.data[0].showlegend and b.data[0].showlegend  # a single trace still names its run


def test_overlap_heatmap_keeps_its_x_labels_against_the_cells():
    fig = overlap_heatmap(np.eye(3) * 0.1, ["a", "b", "c"])
    # square cells by shrinking the domain, not by padding the range (which left labels floating below)
    assert fig.layout.xaxis.constrain == "domain" and fig.layout.yaxis.constrain == "domain"


def test_compare_labels_do_not_collide_and_the_accuracy_axis_is_zoomed():
    rows = _compare_rows()
    for fig in (compare_module_size(rows), compare_accuracy(rows)):
        assert all(t.textangle == -90 for t in fig.data if t.type == "bar")
    fig = compare_accuracy(rows)
    low, high = fig.layout.yaxis.range
    assert 0.5 <= low <= min(min(t.y) for t in fig.data if t.y is not None and not np.isnan(min(t.y))) - 0.01
    assert high > 1.0 and f"{low:.0%}" in fig.layout.yaxis.title.text and "zoomed" in fig.layout.title.text
    assert max(fig.layout.yaxis.tickvals) <= 1.0  # no "102%" tick
    assert accuracy_axis_range([[0.3, 0.9]])[0] == 0.0  # a low accuracy: the axis starts at 0


def test_share_axes_have_no_tick_above_100_percent():
    rows = _compare_rows()
    rows[5]["mean_module_size"] = 0.98  # a bar near 100%: the axis runs past 1 to leave room for its label
    fig = compare_module_size(rows)
    assert fig.layout.yaxis.range[1] > 1.0 and max(fig.layout.yaxis.tickvals) == pytest.approx(1.0)
    assert compare_module_size(_compare_rows()).layout.yaxis.tickvals is None  # low bars: plotly's ticks


def test_compare_cost_title_has_no_nested_parentheses():
    fig = compare_cost(_compare_rows(), {"lenet5": {"moda_ratio": 1.4}}, device="cpu (2 threads)")
    titles = [a.text for a in fig.layout.annotations]
    assert "Time per training step, on cpu (2 threads)" in titles and not any("((" in t or "))" in t for t in titles)


def test_percentages_in_hover_texts_use_one_decimal():
    rates = np.array([[0.95, 0.1]])
    figs = [rate_heatmap(rates, ["a"], "p", masks=rates >= 0.9), overlap_heatmap(np.eye(2), ["a", "b"]),
            overlap_by_layer({"l": 0.1}), overlap_by_layer_pair({"A": {"l": 0.1}}),
            image_module_match({"p": np.array([True, False])}, {"p": np.array([[True, False]])}, ["a"])]
    for fig in figs:
        for trace in fig.data:
            template = trace.hovertemplate or ""
            assert ":.0%" not in template and ":.2%" not in template, template


def test_figure_method_names_and_the_pages_tau_are_the_engine_s():
    from dashboard.figures import style
    from dashboard.ui import DEFAULT_TAU as PAGE_TAU
    from moda_core.decompose import DEFAULT_TAU
    from moda_core.methods import METHODS

    assert style.METHOD_LABELS == {name: method.label for name, method in METHODS.items()}
    assert PAGE_TAU == DEFAULT_TAU
    from dashboard.folders import RUN_CONFIG
    from moda_core.runs import CONFIG

    assert RUN_CONFIG == CONFIG


@pytest.mark.slow
def test_the_landing_page_and_the_sidebar_load_without_torch():
    import subprocess
    import sys

    code = ("import sys\nimport dashboard.ui, dashboard.folders, dashboard.figures.compose\n"
            "dashboard.folders.apply_model_policy(); dashboard.folders.folder_choices()\n"
            "dashboard.folders.runs_dir_problems()\n"
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr[-2000:]
