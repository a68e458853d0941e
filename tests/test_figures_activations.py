"""The Activations page as a τ demo (it opens on the run's most class-specific layer and keeps it across runs, with
the standard twin's heatmap beside it on request and units kept per layer vs τ for the run and its twin), a
kept-unit outline that reads at 128 units, group labels that never run together, a ViT's module-size floor, and
How MODA works' union grid in colours a projector and colour-blind viewers tell apart. Figures and ``moda_core`` on
hand-made data (fast); the pages with AppTest (slow)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from helpers import DEMO, charts, open_page, texts

from dashboard.figures.activations import (
    FLOOR_NAME,
    FLOOR_SHOWN,
    GROUP_LABEL_SIZE,
    PLOT_WIDTH,
    add_floor_line,
    floor_text,
    group_label_rows,
    kept_by_tau_figure,
    kept_outline_path,
    module_size_figure,
    rate_heatmap,
)
from dashboard.figures.compose import UNION_COLOUR_NAMES, UNION_GRID_COLOURS, UNION_MARKS, union_cells, union_figure
from moda_core.activations import point_units
from moda_core.decompose import (
    TAU_RANGE,
    class_specificity,
    kept_share_by_tau,
    most_class_specific_point,
)
from moda_core.errors import ModaError
from moda_core.models import build_model
from moda_core.summary import module_floor, module_summary

# --- a τ demo that lands --------------------------------------------------------------------------------------


def test_kept_share_by_tau_follows_each_points_units_over_tau():
    # "late": two crisp units per class, kept at every τ; "middle": rates spread over 0.5–1.0, so every step of τ
    # drops units
    late = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    middle = torch.tensor([[0.55, 0.7, 0.85, 0.99], [0.6, 0.75, 0.9, 0.95]])
    rates = {"middle": middle, "late": late}
    shares = kept_share_by_tau(rates, [0.5, 0.8, 1.0])
    assert shares["late"] == [0.5, 0.5, 0.5]
    assert shares["middle"][0] == 1.0 and shares["middle"][1] == pytest.approx(4 / 8)
    assert TAU_RANGE[0] == 0.5 and TAU_RANGE[-1] == 1.0 and len(TAU_RANGE) == 51


def test_units_kept_vs_tau_draws_every_point_for_the_run_and_its_twin():
    taus = [0.5, 0.75, 1.0]
    shares = {"MODA: demo/m": {"a": [0.9, 0.5, 0.1], "b": [0.1, 0.1, 0.1]},
              "standard training: demo/s": {"a": [1.0, 1.0, 0.8], "b": [0.9, 0.8, 0.6]}}
    fig = kept_by_tau_figure(taus, shares, {"a": 64, "b": 128}, tau=0.75, point="a")
    lines = [t for t in fig.data if t.mode == "lines" and t.x[0] is not None]
    assert [(t.name, t.line.dash) for t in lines] == [("a", "solid"), ("b", "solid"), ("a", "dash"), ("b", "dash")]
    assert [list(t.y) for t in lines[2:]] == [[1.0, 1.0, 0.8], [0.9, 0.8, 0.6]]
    assert lines[0].line.color == lines[2].line.color != lines[1].line.color  # a point keeps its colour
    assert lines[0].line.width > lines[1].line.width  # the heatmap's point stands out
    keys = [t.name for t in fig.data if t.x[0] is None]  # the legend says which run is solid, which dashed
    assert keys == list(shares)
    dots = [t for t in fig.data if t.mode == "markers"]
    assert [(list(d.x), list(d.y)) for d in dots] == [([0.75], [0.5]), ([0.75], [1.0])]
    assert [s.x0 for s in fig.layout.shapes] == [0.75] and "τ = 0.75" in fig.layout.title.text
    assert "of 64 units" in lines[0].hovertemplate and fig.layout.yaxis.tickformat == ".0%"
    alone = kept_by_tau_figure(taus, {"MODA: demo/m": shares["MODA: demo/m"]}, {}, tau=0.9)
    assert len([t for t in alone.data if t.mode == "lines" and t.x[0] is not None]) == 2


# --- the kept-unit outline, group labels and the colour bar at 128 units ----------------------------------------


def _boxes(path: str) -> list[tuple[float, float, float, float]]:
    return [tuple(map(float, box)) for box in re.findall(r"M([-\d.]+),([-\d.]+)H([-\d.]+)V([-\d.]+)H[-\d.]+Z", path)]


def test_kept_units_are_boxed_at_the_cells_width_at_128_units():
    rng = np.random.default_rng(0)
    rates = rng.random((10, 128))
    masks = rates >= 0.7
    fig = rate_heatmap(rates, [str(c) for c in range(10)], "features.7.relu", tau=0.7, masks=masks)
    (outline,) = [s for s in fig.layout.shapes if s.type == "path"]
    assert outline.path == kept_outline_path(masks)
    boxes = _boxes(outline.path)
    runs = sum(int(np.sum(np.diff(np.concatenate([[0], row.astype(int), [0]])) == 1)) for row in masks)
    assert len(boxes) == runs  # one box per run of neighbouring kept cells in a row
    covered = np.zeros_like(masks)
    for x0, y0, x1, y1 in boxes:
        assert x1 - x0 >= 0.85 and y1 - y0 >= 0.7  # in cells, whatever the unit count: never a dot
        covered[round((y0 + y1) / 2), round(x0 + 0.5):round(x1 + 0.5)] = True
    assert (covered == masks).all()
    assert outline.line.width >= 2 and fig.data[1].x == (None,)  # the legend entry draws no markers of its own
    heat = fig.data[0]
    assert heat.customdata[0][int(np.argmax(masks[0]))].startswith(" (in its module")
    # the caption says 0–100%: so does the colour bar
    assert heat.colorbar.tickformat == ".0%"


def test_group_labels_never_run_together_on_a_128_unit_layer():
    groups = ["4"] * 2 + ["5"] * 2 + ["6"] + ["7"] * 2 + ["9"] * 3 + ["shared"] * 10 + ["in no module"] * 108
    rates = np.full((2, 128), 0.5)
    fig = rate_heatmap(rates, ["a", "b"], "p", tau=0.9, masks=rates > 0.9, groups=[str(g) for g in groups])
    cell = PLOT_WIDTH / 128
    placed = [(a.x * cell, a.yshift or 0, a.text) for a in fig.layout.annotations]
    assert {"shared", "in no module"} <= {text for *_, text in placed}
    for row in {shift for _, shift, _ in placed}:
        labels = sorted((x, text) for x, shift, text in placed if shift == row)
        for (x0, t0), (x1, t1) in zip(labels, labels[1:], strict=False):
            assert x1 - x0 >= 0.6 * GROUP_LABEL_SIZE * (len(t0) + len(t1)) / 2, (t0, t1)  # no "4567", "9shared"
    # groups that do fit are all labelled, each once, in order
    wide = ["a"] * 40 + ["b"] * 40 + ["shared"] * 48
    assert [(start, end) for start, end, _ in group_label_rows(wide)] == [(0, 40), (40, 80), (80, 128)]


# --- the ViT's floor ---------------------------------------------------------------------------------------------


@pytest.mark.slow  # a ViT's floor, counted: seconds
def test_module_floor_is_what_no_mask_can_drop():
    torch.manual_seed(0)
    vit, vgg = build_model("vit", 1, 28, 10), build_model("vgg11", 1, 28, 10, width=0.25)
    floor = module_floor(vit)
    assert 0.3 < floor < 0.8  # attention, norms and embeddings: kept by every module
    assert module_floor(vgg) < FLOOR_SHOWN  # a CNN: the logit bias only
    for density in (0.05, 0.5):
        masks = {p: torch.rand(10, n) < density for p, n in point_units(vit).items()}
        assert min(module_summary(vit, masks).sizes) >= floor - 1e-12
    empty = {p: torch.zeros(10, n, dtype=torch.bool) for p, n in point_units(vit).items()}
    assert module_summary(vit, empty).sizes == pytest.approx([floor] * 10)


def test_module_sizes_show_the_floor_as_a_line_and_say_why():
    fig = module_size_figure([0.53, 0.55], ["0", "1"], 0.9, floor=0.52)
    floor_bar, above = fig.data
    assert floor_bar.name == FLOOR_NAME and list(floor_bar.y) == [0.52, 0.52]
    assert list(above.y) == pytest.approx([0.01, 0.03]) and list(above.text) == ["53.0%", "55.0%"]
    (line,) = fig.layout.shapes
    assert line.y0 == line.y1 == 0.52 and line.line.dash == "dash"
    assert fig.layout.yaxis.range[0] == 0.0  # a 0–100% axis: a flat 53% is not stretched into a pattern
    assert "attention, norms and embeddings" in floor_text(0.52) and "52.0%" in floor_text(0.52)
    plain = module_size_figure([0.1, 0.2], ["0", "1"], 0.9, floor=1e-6)
    assert len(plain.data) == 1 and not plain.layout.shapes
    # any module-size chart: a labelled line on the side no module reaches
    other = add_floor_line(module_size_figure([0.6], ["0"], 0.9), 0.52)
    assert other.layout.shapes[-1].y0 == 0.52 and "52.0%" in other.layout.annotations[-1].text


# --- How MODA works: the union grid --------------------------------------------------------------------------------

# Machado, Oliveira and Fernandes (2009), full severity: how the colours look to deuteranopes and protanopes
SIMULATIONS = {
    "typical": np.eye(3),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                              [-0.011820, 0.042940, 0.968881]]),
    "protanopia": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                            [-0.003882, -0.048116, 1.051998]]),
}


def _lab(colour: str, simulation: np.ndarray) -> np.ndarray:
    srgb = np.array([int(colour.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4)]) / 255
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    linear = np.clip(simulation @ linear, 0, 1)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    f = np.where(xyz / [0.9505, 1.0, 1.089] > 0.008856, np.cbrt(xyz / [0.9505, 1.0, 1.089]),
                 7.787 * xyz / [0.9505, 1.0, 1.089] + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_union_grid_colours_stay_apart_on_a_projector_and_for_colour_blind_viewers():
    fig = union_figure(union_cells([1, 1, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0]))
    heat = fig.data[0]
    drawn = [heat.colorscale[2 * k][1] for k in range(5)]
    assert drawn == list(UNION_GRID_COLOURS)
    for name, simulation in SIMULATIONS.items():
        for i in range(1, 5):  # the kept cells' colours (A, B, both, union only), pairwise
            for j in range(i + 1, 5):
                distance = np.linalg.norm(_lab(drawn[i], simulation) - _lab(drawn[j], simulation))
                assert distance >= 35, (name, UNION_COLOUR_NAMES[i], UNION_COLOUR_NAMES[j], round(distance))
    assert UNION_COLOUR_NAMES[4] == "green" and "red" not in UNION_COLOUR_NAMES.values()
    # the cells say in words who keeps them, and the input units run along the bottom, clear of the title
    assert list(heat.text[0]) == [UNION_MARKS[c] for c in (1, 1, 4, 0)] and heat.texttemplate == "%{text}"
    assert fig.layout.xaxis.side == "bottom" and fig.layout.xaxis.title.text == "input unit"


# --- the pages -------------------------------------------------------------------------------------------------------


def test_the_most_class_specific_point_on_hand_made_rates():
    # "early": every unit fires for both classes; "late": each unit fires for one class (a block diagonal);
    # "sparse": one crisp unit and one that never fires
    early = torch.tensor([[1.0, 0.9], [1.0, 0.9]])
    late = torch.tensor([[1.0, 0.1], [0.2, 0.9]])
    sparse = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert class_specificity(early) == pytest.approx(0.0)
    assert class_specificity(late) == pytest.approx(((1.0 - 0.2) + (0.9 - 0.1)) / 2)
    assert class_specificity(sparse) == pytest.approx((1.0 + 0.0) / 2)
    three = torch.tensor([[0.9], [0.3], [0.0]])  # the other classes' mean: (0.3 + 0.0) / 2
    assert class_specificity(three) == pytest.approx(0.9 - 0.15)
    assert most_class_specific_point({"early": early, "sparse": sparse, "late": late}) == "late"
    assert most_class_specific_point({"a": early, "b": early}) == "a"  # ties: the first
    with pytest.raises(ModaError, match="no activation points"):
        most_class_specific_point({})


@pytest.mark.usefixtures("dashboard_pages")
def test_activations_opens_on_the_most_class_specific_layer_keeps_it_across_runs_and_shows_the_twin_beside(
        demo_env):
    from dashboard import engine

    app = open_page("activations")
    spec = app.selectbox(key="act_run").value
    point = app.selectbox(key="act_point").value
    rates = engine.rates(spec)
    assert point == engine.class_specific_point(spec) == most_class_specific_point(rates) == "features.11.relu"
    assert class_specificity(rates[point]) > 0.9  # the heatmap is nearly a block diagonal there
    figure = next(f for f in charts(app).values() if f["layout"]["title"]["text"].startswith("Units kept per layer"))
    lines = [t for t in figure["data"] if t.get("mode") == "lines" and t["x"][0] is not None]
    assert [t["name"] for t in lines if t["line"]["dash"] == "solid"] == list(rates)
    assert [t["name"] for t in lines if t["line"]["dash"] == "dash"] == list(rates)  # the standard twin
    assert any("vgg11-standard" in t["name"] for t in figure["data"] if t["x"][0] is None)
    assert "dashed: its twin" in texts(app)
    app.slider(key="act_tau").set_value(0.7).run()
    figure = next(f for f in charts(app).values() if f["layout"]["title"]["text"].startswith("Units kept per layer"))
    assert figure["layout"]["shapes"][0]["x0"] == pytest.approx(0.7)
    # the twin beside it: the same point and τ, each heatmap titled with its method
    app.toggle(key="act_beside").set_value(True).run()
    titles = {key: f["layout"]["title"]["text"].replace("<br>", " ") for key, f in charts(app).items()}
    shown = charts(app)
    heatmaps = [shown[key] for key, title in titles.items()
                if title in (f"MODA at {point}", f"Standard training at {point}")]
    assert len(heatmaps) == 2, list(titles.values())
    assert all("τ=0.70" in str(f["data"]) for f in heatmaps)
    twin_masks = engine.masks(str(DEMO / "vgg11-standard"), 0.7)[point]
    cells = next(t for t in heatmaps[1]["data"] if t["type"] == "heatmap")
    assert (len(cells["y"]), len(cells["x"])) == twin_masks.shape  # the twin's own class × unit rates
    # another run keeps the layer, so the two runs are compared at one point
    app.selectbox(key="act_run").set_value(str(DEMO / "vgg11-standard")).run()
    assert app.selectbox(key="act_point").value == point
    assert engine.class_specific_point(str(DEMO / "vgg11-standard")) != point  # it would have opened elsewhere


@pytest.mark.usefixtures("dashboard_pages")
def test_activations_draws_the_vits_floor_and_says_why(demo_env):
    app = open_page("activations")
    app.selectbox(key="act_run").set_value(str(DEMO / "vit-moda")).run()
    assert not app.exception
    sizes = next(f for f in charts(app).values() if f["layout"]["title"]["text"].startswith("Module size per class"))
    (line,) = sizes["layout"]["shapes"]
    assert line["y0"] == pytest.approx(0.52, abs=0.01)
    assert FLOOR_NAME in [t["name"] for t in sizes["data"]]
    assert "attention, norms and embeddings" in texts(app)
    app.selectbox(key="act_run").set_value(str(DEMO / "vgg11-moda")).run()  # a CNN: no floor worth a line
    sizes = next(f for f in charts(app).values() if f["layout"]["title"]["text"].startswith("Module size per class"))
    assert not sizes["layout"].get("shapes") and "attention, norms and embeddings" not in texts(app)


@pytest.mark.usefixtures("dashboard_pages")
def test_how_moda_works_names_the_grids_colours_as_drawn(demo_env):
    app = open_page("how")
    caption = next(c.value for c in app.caption if "coloured square" in c.value)
    for code in (1, 2, 3, 4):
        assert UNION_COLOUR_NAMES[code] in caption
    assert not re.search(r"\bred\b", caption) and "(1 → 3 and 3 → 1, marked *union*, green below)" in texts(app)
