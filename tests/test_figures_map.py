"""The Module map page: the figure (one strip per point in forward order, a class's kept units exactly its mask,
union and shared counts equal to the masks' OR and AND, a bounded number of connections, the strongest of each
kind), the weights between consecutive points of zoo models (VGG, LeNet through its flatten, the ViT across its
residual stream), the unit's top test images, and the page itself on the demo VGG and ViT (slow: AppTest)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import DEMO, open_page, texts

from dashboard.figures.map import (
    BOTH,
    NEITHER,
    ONLY_A,
    ONLY_B,
    STRIP,
    UNION_ONLY,
    cell_size,
    clicked_unit,
    layer_counts,
    link_kinds,
    map_caption,
    module_map,
    strongest_links,
    top_images,
    unit_codes,
)
from moda_core import runs as run_store
from moda_core.activations import modular_points

NAMES = [str(c) for c in range(10)]


def random_masks(units: dict[str, int], classes: int = 10, density: float = 0.3,
                 seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {point: rng.random((classes, n)) < density for point, n in units.items()}


def random_links(units: dict[str, int], seed: int = 0) -> dict[str, tuple[np.ndarray, int]]:
    rng = np.random.default_rng(seed)
    points = list(units)
    return {after: (rng.random((units[after], units[before])).astype(np.float32), 1)
            for before, after in zip(points[:-1], points[1:], strict=True)}


def unit_bars(fig) -> list:
    return [trace for trace in fig.data if trace.type == "bar"]


def lines(fig) -> list:
    return [trace for trace in fig.data if trace.type == "scatter" and trace.mode == "lines"]


def kept_units(fig, trace_name: str) -> set[tuple[int, int]]:
    """(strip, unit) of every cell of one unit trace (one cell per unit: no bins)."""
    trace = next(t for t in unit_bars(fig) if t.name == trace_name)
    return {(int(strip), int(unit)) for strip, unit in np.asarray(trace.customdata)}


UNITS = {"features.0.relu": 16, "features.2.relu": 32, "features.4.relu": 64, "classifier.0.relu": 128}


def test_one_strip_per_point_in_forward_order():
    masks = random_masks(UNITS)
    fig = module_map(masks, [3], NAMES, random_links(UNITS))
    ticks = list(fig.layout.xaxis.ticktext)
    assert len(ticks) == len(UNITS) and list(fig.layout.xaxis.tickvals) == list(range(len(UNITS)))
    for tick, (point, units) in zip(ticks, UNITS.items(), strict=True):
        assert tick.replace("<br>", " ").split()[0] == point.removesuffix(".relu") and f"({units})" in tick
    for trace in unit_bars(fig):  # every cell sits on its strip: its bar starts within the strip's width
        strips = np.asarray(trace.customdata)[:, 0]
        assert np.all(np.asarray(trace.base) >= strips - STRIP / 2 - 1e-9)
        assert np.all(np.asarray(trace.base) + np.asarray(trace.x) <= strips + STRIP / 2 + 1e-9)


def test_a_class_kept_units_are_exactly_its_mask():
    masks = random_masks(UNITS, seed=1)
    fig = module_map(masks, [3], NAMES)
    expected = {(s, int(u)) for s, mask in enumerate(masks.values()) for u in np.flatnonzero(mask[3])}
    assert kept_units(fig, "kept by class 3's module") == expected
    others = {(s, int(u)) for s, mask in enumerate(masks.values()) for u in np.flatnonzero(~mask[3])}
    assert kept_units(fig, "not kept") == others
    # two classes: each trace is exactly its part of the two masks
    fig = module_map(masks, [3, 5], NAMES)
    parts = {"kept by both (shared)": lambda m: m[3] & m[5], "class 3 only": lambda m: m[3] & ~m[5],
             "class 5 only": lambda m: m[5] & ~m[3], "kept by neither": lambda m: ~m[3] & ~m[5]}
    for name, part in parts.items():
        expected = {(s, int(u)) for s, m in enumerate(masks.values()) for u in np.flatnonzero(part(m))}
        assert kept_units(fig, name) == expected


def test_a_large_layer_is_binned_with_each_cell_split_by_its_kept_share():
    units = {"a.relu": 512, "b.relu": 100}
    masks = random_masks(units, seed=2)
    fig = module_map(masks, [3, 5], NAMES, max_cells=128)
    assert cell_size(512, 128) == 4 and cell_size(100, 128) == 1
    for name, part in {"kept by both (shared)": lambda m: m[3] & m[5], "class 3 only": lambda m: m[3] & ~m[5]}.items():
        trace = next(t for t in unit_bars(fig) if t.name == name)
        strips = np.asarray(trace.customdata)[:, 0]
        units_drawn = np.asarray(trace.x)[strips == 0] / STRIP * 4  # share of a cell × its 4 units
        assert round(units_drawn.sum()) == part(masks["a.relu"]).sum()
        for unit in np.asarray(trace.customdata)[strips == 0][:, 1]:  # a click names a unit of that kind
            assert part(masks["a.relu"])[unit]
    heights = {round(float(y), 9) for t in unit_bars(fig) for y, s in zip(t.y, np.asarray(t.customdata)[:, 0],
                                                                            strict=True) if s == 0}
    assert len(heights) == 128  # 512 units in 128 cells
    assert "a: 4 units a cell" in map_caption({p: n for p, n in units.items()}, {}, [3, 5])


def test_union_and_shared_counts_equal_the_masks_or_and():
    masks = random_masks(UNITS, seed=3)
    rows = layer_counts(masks, [2, 7])
    codes = unit_codes(masks, [2, 7])
    for row, (point, mask) in zip(rows, masks.items(), strict=True):
        assert row["point"] == point and row["units"] == mask.shape[1]
        assert row["shared"] == (mask[2] & mask[7]).sum() == (codes[point] == BOTH).sum()
        assert row["union"] == (mask[2] | mask[7]).sum() == (codes[point] != NEITHER).sum()
        assert (row["class 2"], row["class 7"]) == (mask[2].sum(), mask[7].sum())
    ticks = module_map(masks, [2, 7], NAMES).layout.xaxis.ticktext
    for tick, row in zip(ticks, rows, strict=True):
        assert f"{row['shared']} shared · ∪ {row['union']}" in tick
    assert "shared" not in layer_counts(masks, [2])[0]


def test_names_are_text_in_the_figure_never_html():
    masks = random_masks({"<b>p</b>.relu": 4, "q.relu": 5})
    names = ["<b>bold</b>", "<a href='x'>link</a>", *NAMES[2:]]
    text = module_map(masks, [0, 1], names, random_links({"<b>p</b>.relu": 4, "q.relu": 5})).to_json()
    assert "<b>" not in text and "<a " not in text and "&lt;b&gt;bold" in text


def test_connection_kinds_follow_the_units_at_both_ends():
    # before: unit 0 A only, 1 B only, 2 both, 3 neither; after: the same
    codes = np.array([ONLY_A, ONLY_B, BOTH, NEITHER])
    kinds = link_kinds(codes, codes)  # after × before
    assert kinds[0, 0] == ONLY_A and kinds[1, 1] == ONLY_B and kinds[2, 2] == BOTH
    assert kinds[2, 0] == ONLY_A and kinds[0, 2] == ONLY_A and kinds[1, 2] == ONLY_B
    assert kinds[1, 0] == UNION_ONLY and kinds[0, 1] == UNION_ONLY  # A's input to B's output, and back
    assert (kinds[3] == NEITHER).all() and (kinds[:, 3] == NEITHER).all()


@pytest.mark.parametrize("k", [0, 1, 5, 8])
def test_the_connections_drawn_never_exceed_the_bound_and_are_the_strongest(k):
    units = {"a.relu": 300, "b.relu": 512, "c.relu": 40}
    masks = random_masks(units, density=0.5, seed=4)
    links = random_links(units, seed=5)
    codes = unit_codes(masks, [1, 2])
    for before, after in (("a.relu", "b.relu"), ("b.relu", "c.relu")):
        kinds = link_kinds(codes[before], codes[after])
        chosen = strongest_links(links[after][0], kinds, k)
        assert len(chosen) <= 4 * k
        for kind in (BOTH, ONLY_A, ONLY_B, UNION_ONLY):
            mine = [(j, i) for j, i, kd in chosen if kd == kind]
            assert len(mine) == min(k, int((kinds == kind).sum()))
            assert all(kinds[j, i] == kind for j, i in mine)
            if mine:  # none left out is stronger than the weakest drawn
                weakest = min(links[after][0][j, i] for j, i in mine)
                left = np.where(kinds == kind, links[after][0], -np.inf)
                left[tuple(np.array(mine).T)] = -np.inf
                assert left.max() <= weakest
    fig = module_map(masks, [1, 2], NAMES, links, top_k=k)
    segments = sum(sum(x is None for x in trace.x) for trace in lines(fig))
    assert segments <= 4 * k * (len(units) - 1)
    one = module_map(masks, [1], NAMES, links, top_k=k)
    assert sum(sum(x is None for x in trace.x) for trace in lines(one)) <= k * (len(units) - 1)


def test_top_images_are_the_most_active_first_and_ties_go_to_the_lower_index():
    values = np.array([[0.1, 5.0], [0.9, 5.0], [0.3, 1.0], [0.9, 0.0], [0.0, 2.0]])
    assert top_images(values, 0, 3) == [1, 3, 2]
    assert top_images(values, 1, 2) == [0, 1]
    rng = np.random.default_rng(0)
    values = rng.random((1000, 7))
    assert top_images(values, 4) == list(np.argsort(-values[:, 4])[:8])


def test_a_click_names_a_point_and_a_unit():
    points = ["a.relu", "b.relu"]
    assert clicked_unit({"selection": {"points": [{"customdata": [1, 17], "x": 0.1}]}}, points) == ("b.relu", 17)
    assert clicked_unit({"selection": {"points": []}}, points) is None
    assert clicked_unit(None, points) is None
    assert clicked_unit({"selection": {"points": [{"x": 1}]}}, points) is None
    assert clicked_unit({"selection": {"points": [{"customdata": [5, 1]}]}}, points) is None  # no such strip
    assert clicked_unit({"selection": {"points": [{"customdata": {"0": 0, "1": 3}}]}}, points) == ("a.relu", 3)


# ----- the weights between consecutive points of the demo's zoo models -------------------------------------

def test_weights_between_vgg_points_are_its_convs_and_linear_summed_over_the_kernel():
    from dashboard.engine import weight_links

    model = run_store.load_run(str(DEMO / "vgg11-moda")).model
    links = weight_links(model)
    assert list(links) == modular_points(model)[1:]  # every point but the first, in forward order
    weights, hops = links["features.2.relu"]
    assert hops == 1
    conv = model.features[2].conv.weight.detach().abs().sum((2, 3))
    np.testing.assert_allclose(weights, conv.numpy(), rtol=1e-5)
    weights, _ = links["classifier.0.relu"]
    np.testing.assert_allclose(weights, model.classifier[0].linear.weight.detach().abs().numpy(), rtol=1e-5)
    assert "features.0.relu" not in links  # the first point has no point before it


def test_lenet_weights_through_the_flatten_sum_each_channel_positions():
    from dashboard.engine import weight_links

    model = run_store.load_run(str(DEMO / "swap-weak")).model
    weights, hops = weight_links(model)["classifier.0.relu"]
    linear = model.classifier[0].linear.weight.detach().abs()  # 120 × (16 channels × 5 × 5 positions)
    assert hops == 1 and weights.shape == (120, 16)
    np.testing.assert_allclose(weights, linear.view(120, 16, 25).sum(2).numpy(), rtol=1e-5)


def test_vit_weights_cross_the_residual_stream_from_fc2_to_the_next_fc1():
    from dashboard.engine import weight_links

    model = run_store.load_run(str(DEMO / "vit-moda")).model
    links = weight_links(model)
    assert list(links) == ["blocks.1.mlp.relu", "blocks.2.mlp.relu", "blocks.3.mlp.relu"]
    weights, hops = links["blocks.1.mlp.relu"]
    fc1, fc2 = model.blocks[1].mlp.fc1.weight.detach().abs(), model.blocks[0].mlp.fc2.weight.detach().abs()
    assert hops == 2
    np.testing.assert_allclose(weights, (fc1 @ fc2).numpy(), rtol=1e-4)
    caption = map_caption({p: 128 for p in ["blocks.0.mlp.relu", *links]}, links, [0, 1])
    assert "residual stream" in caption and "No lines" not in caption


def test_a_model_fx_cannot_trace_draws_no_lines_and_says_so():
    from torch import nn

    from dashboard.engine import weight_links

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.relu1, self.fc2, self.relu2 = nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU()
            self.input_shape = (1, 2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.flatten(1)
            if x.sum() > 0:
                x = x * 1.0
            return self.relu2(self.fc2(self.relu1(self.fc1(x))))

    assert weight_links(Branchy()) == {}
    caption = map_caption({"relu1": 8, "relu2": 6}, {}, [0])
    assert "No lines into relu2" in caption


# ----- the page (AppTest, slow) ------------------------------------------------------------------------------

def _masks(name: str, tau: float = 0.9) -> dict[str, np.ndarray]:
    from moda_core.decompose import decompose

    run = run_store.load_run(str(DEMO / name))
    masks = decompose(run, tau, save=False).masks
    return {p: masks[p].numpy() for p in modular_points(run.model)}


@pytest.mark.slow
def test_the_page_opens_on_the_demo_vgg_and_vit():
    app = open_page("map")
    assert "vgg11-moda" in app.selectbox(key="map_run").value
    figure = app.get("plotly_chart")[0].proto.spec
    assert "features.0 (16)" in figure and "classifier.0 (128)" in figure
    assert "No lines" not in texts(app)
    app.selectbox(key="map_run").set_value(app.selectbox(key="map_run").value.replace("vgg11-moda", "vit-moda"))
    app = open_page(app=app.run())
    figure = app.get("plotly_chart")[0].proto.spec
    assert "blocks.0.mlp (128)" in figure and "blocks.3.mlp (128)" in figure
    assert "residual stream" in texts(app)
    assert app.selectbox(key="map_point").value == "blocks.3.mlp.relu"


@pytest.mark.slow
def test_two_classes_show_their_shared_and_union_counts_per_layer():
    app = open_page("map")
    app.multiselect(key="map_classes").set_value([3, 5])
    app = open_page(app=app.run())
    masks = _masks("vgg11-moda")
    table = app.dataframe[0].value
    assert list(table["layer"]) == list(masks)
    assert list(table["shared"]) == [int((m[3] & m[5]).sum()) for m in masks.values()]
    assert list(table["union"]) == [int((m[3] | m[5]).sum()) for m in masks.values()]
    assert list(table["class 3"]) == [int(m[3].sum()) for m in masks.values()]
    figure = app.get("plotly_chart")[0].proto.spec
    assert "Modules of class 3 and class 5" in figure
    app.multiselect(key="map_classes").set_value([3])
    app = open_page(app=app.run())
    assert "shared" not in list(app.dataframe[0].value.columns)
    assert "Module of class 3" in app.get("plotly_chart")[0].proto.spec


@pytest.mark.slow
def test_a_selected_unit_shows_the_test_images_that_fire_it_most():
    from dashboard import engine

    spec = str(DEMO / "vgg11-moda")
    values = engine.map_activations(spec, "features.7.relu")
    assert values.shape == (1000, 128)
    best = top_images(values, 5)
    test = run_store.run_dataset(run_store.load_run(spec)).test
    with torch.no_grad():  # the same activations, straight from the model, for the images picked
        from moda_core.activations import run_with_cache

        x, _ = test.batch(torch.tensor(best))
        _, cache = run_with_cache(run_store.load_run(spec).model, x, ["features.7.relu"])
    np.testing.assert_allclose(cache["features.7.relu"].mean((2, 3))[:, 5].numpy(), values[best, 5], rtol=1e-4)
    assert values[best, 5].min() >= np.delete(values[:, 5], best).max()

    app = open_page("map")
    app.session_state["map_point"] = "features.7.relu"  # what a click on unit 5 of features.7 sets
    app.session_state["map_unit"] = 5
    app = open_page(app=app.run())
    assert app.selectbox(key="map_point").value == "features.7.relu" and app.number_input(key="map_unit").value == 5
    captions = [image.caption for element in app.get("image") for image in element.proto.imgs]
    labels = [int(test.labels[i]) for i in best]
    assert captions == [f"{label} · {values[i, 5]:.2g}" for i, label in zip(best, labels, strict=True)]
    assert "Unit 5 of features.7.relu" in texts(app)


@pytest.fixture(scope="module")
def own_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A model of one's own (the README's example, tapped) and one fx cannot trace, each trained briefly."""
    import sys

    from helpers import ROOT

    from moda_core.train import TrainConfig, train

    sys.path[:0] = [str(ROOT / "examples"), str(ROOT / "tests")]
    folders = {name: tmp_path_factory.mktemp(name) for name in ("smallnet", "hooked")}
    train(TrainConfig(model="mypkg.nets:make_net", epochs=1, train_fraction=0.05), folders["smallnet"], "smallnet")
    train(TrainConfig(model="graph_models:make_hookednet", epochs=1, train_fraction=0.05), folders["hooked"], "hooked")
    return folders


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smallnet", "hooked"])
def test_the_page_on_a_model_of_ones_own(own_runs, monkeypatch, name):
    from helpers import ROOT

    monkeypatch.setenv("MODA_RUNS_DIR", str(own_runs[name]))
    monkeypatch.setenv("MODA_TRAINING", "off")
    monkeypatch.setenv("MODA_MODELS", "mypkg,graph_models")
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    app = open_page("map")
    figure = app.get("plotly_chart")[0].proto.spec
    shown = texts(app)
    if name == "smallnet":  # call sites of make_net, every one fed by a conv or a linear: lines into each
        assert "relu_1 (16)" not in figure and "relu_1 (32)" in figure and "relu_4 (128)" in figure
        assert "No lines" not in shown and '"mode":"lines"' in figure
    else:  # fx cannot trace it: the map without lines, and the caption says why
        assert "relu1 (8)" in figure and "No lines into relu2" in shown and '"mode":"lines"' not in figure
    last = app.selectbox(key="map_point").value
    assert app.selectbox(key="map_point").options[-1] == last
    assert len([image for element in app.get("image") for image in element.proto.imgs]) == 8


@pytest.mark.usefixtures("dashboard_pages")
def test_the_maps_classes_and_unit_are_in_the_url_and_a_bookmark_reopens_them(demo_env):
    from helpers import APP, TIMEOUT
    from streamlit.testing.v1 import AppTest

    app = open_page("map")
    app.multiselect(key="map_classes").set_value([3, 5]).run()
    app.selectbox(key="map_point").set_value("features.7.relu").run()
    app.number_input(key="map_unit").set_value(12).run()
    assert app.query_params["pair"] == "3,5" and app.query_params["unit"] == "features.7.relu:12"

    def bookmark(query: dict[str, str]) -> AppTest:
        opened = AppTest.from_file(APP, default_timeout=TIMEOUT)
        opened.query_params.update({"run": "demo/vgg11-moda", **query})
        opened.switch_page("views/map.py")
        return open_page(app=opened.run())

    again = bookmark({"pair": "3,5", "unit": "features.7.relu:12"})
    assert again.multiselect(key="map_classes").value == [3, 5]
    assert again.selectbox(key="map_point").value == "features.7.relu"
    assert again.number_input(key="map_unit").value == 12
    assert "Unit 12 of features.7.relu" in texts(again)
    broken = bookmark({"pair": "x,99", "unit": "features.7.relu:9999"})
    assert "are not this run's" in texts(broken) and "is not one of this run's" in texts(broken)
    assert broken.multiselect(key="map_classes").value == [0, 1]
