"""The lecture hall, round two: the answers a class asks for (captions computed from the numbers shown), and the
figures a projector needs (panels side by side, labelled 0% bars, distinct layer colours, a visible grey)."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import DEMO, charts, open_page, texts

from dashboard import engine, folders, ui
from dashboard.figures.activations import kept_by_tau_figure
from dashboard.figures.map import MAP_COLOURS, NEITHER
from dashboard.figures.swap import swap_bars
from dashboard.figures.training import accuracy_figure, evolution_figure, tau_figure
from moda_core.store.summary import RunStatus, RunSummary

SERIES = {"MODA: a": {"epoch": [1, 2, 3], "tau": [0.5, 0.9, 1.0], "mean_module_size": [0.5, 0.3, 0.2],
                      "mean_overlap": [0.3, 0.2, 0.1], "test_accuracy": [0.9, 0.95, 0.97],
                      "pair_accuracy": [0.99, 0.98, 0.97]}}


@pytest.mark.parametrize("make", [lambda across: evolution_figure(SERIES, {"MODA: a": "moda"}, across=across),
                                  lambda across: tau_figure(SERIES, {"MODA: a": "moda"}, 0.9, across=across)])
def test_training_panels_stand_side_by_side_on_a_projector(make):
    stacked, across = make(False), make(True)
    for fig in (stacked, across):
        assert [t.y for t in fig.data if t.name == "MODA: a"] == [(0.5, 0.3, 0.2), (0.3, 0.2, 0.1),
                                                                  fig.data[2].y]  # the same three panels
    domains = [across.layout[f"xaxis{i or ''}"].domain for i in (0, 2, 3)]
    assert domains[0][1] < domains[1][0] and domains[1][1] < domains[2][0]  # left to right, apart
    assert len({across.layout[f"yaxis{i or ''}"].domain for i in (0, 2, 3)}) == 1  # one row
    assert across.layout.height < stacked.layout.height - 300  # low enough for a projector's first screen
    assert [a.text for a in across.layout.annotations][:3] == [a.text.split(" (")[0]
                                                               for a in stacked.layout.annotations][:3]
    assert all(across.layout[f"xaxis{i or ''}"].title.text for i in (0, 2, 3))  # every panel says its x
    assert sum(t.showlegend is not False for t in across.data if t.name == "MODA: a") == 1  # one legend entry


def test_the_tau_line_crosses_every_panel_side_by_side():
    fig = tau_figure(SERIES, {"MODA: a": "moda"}, 0.9, across=True)
    lines = [s for s in fig.layout.shapes if s.type == "line" and s.x0 == 0.9]
    assert sorted(s.xref for s in lines) == ["x", "x2", "x3"]


def test_a_bar_at_zero_is_labelled_and_no_other_is():
    fig = swap_bars(["3", "5"], [0.0, 0.9], {"calibrate": [0.95, 0.002], "affine": [0.9, 0.9]}, target="3")
    texts_by_trace = {t.name: list(t.text) for t in fig.data}
    assert texts_by_trace == {"before (weak model)": ["0%", ""], "after: calibrate": ["", "0%"],
                              "after: affine": ["", ""]}
    assert all(t.textposition == "outside" and t.constraintext == "none" for t in fig.data)


def test_every_layer_has_its_own_colour():
    points = [f"features.{i}.relu" for i in range(9)]
    shares = {"MODA": {p: [0.5, 0.4] for p in points}}
    fig = kept_by_tau_figure([0.5, 1.0], shares, {p: 8 for p in points}, 0.9)
    colours = [t.line.color for t in fig.data if t.name in points]
    assert len(colours) == 9 and len(set(colours)) == 9


def test_the_maps_kept_by_neither_grey_stands_out_from_the_white_page():
    def luminance(hex_colour: str) -> float:
        channels = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    assert (1.05 / (luminance(MAP_COLOURS[NEITHER]) + 0.05)) >= 1.7  # the old #F2F2F2: 1.12


def test_a_live_accuracy_chart_spans_the_whole_training_from_the_start():
    history = [{"epoch": 1, "train_accuracy": 0.5, "test_accuracy": 0.4},
               {"epoch": 2, "train_accuracy": 0.7, "test_accuracy": 0.6}]
    assert list(accuracy_figure(history, epochs_planned=10).layout.xaxis.range) == [0.5, 10.5]
    assert accuracy_figure(history).layout.xaxis.range is None  # a finished run: its own epochs


def test_near_miss_cells_are_explained_only_where_there_are_some():
    from dashboard.views.activations import near_miss_text

    rates = np.array([[1.0, 0.995, 0.5], [0.998, 0.2, 1.0]])
    text = near_miss_text(rates, 1.0)
    assert "2 cells look as lit as the kept ones but are not boxed" in text and "up to 99.8%" in text
    assert "fire on every one of the class's images" in text
    assert near_miss_text(rates, 0.9) == ""  # nothing within a point under 0.9
    assert near_miss_text(np.array([[0.895]]), 0.9).startswith(" 1 cell looks as lit as the kept ones but is not")


def test_an_unfinished_twin_says_so_in_its_label(tmp_path):
    summaries = [RunSummary("a", tmp_path / "a", RunStatus.INTERRUPTED, epochs_done=3, epochs=10),
                 RunSummary("b", tmp_path / "b", RunStatus.COMPLETE, epochs_done=10, epochs=10),
                 RunSummary("c", tmp_path / "c", RunStatus.RUNNING, epochs_done=1, epochs=4)]
    assert folders.unfinished_note(summaries, str(tmp_path / "a")) == " (interrupted: 3 of 10 epochs)"
    assert folders.unfinished_note(summaries, f"{tmp_path / 'a'}@2") == " (interrupted: 3 of 10 epochs)"
    assert folders.unfinished_note(summaries, str(tmp_path / "b")) == ""
    assert folders.unfinished_note(summaries, str(tmp_path / "c")) == " (still training: 1 of 4 epochs)"
    assert folders.unfinished_note(summaries, str(tmp_path / "elsewhere")) == ""


def test_lenet5s_weights_sit_in_its_fully_connected_layers():
    linear, total = engine.fully_connected_share("lenet5", 1.0)
    assert total == 61_706 and linear == 120 * 400 + 120 + 84 * 120 + 84 + 10 * 84 + 10
    assert engine.fully_connected_share("my.package:builder", 1.0) is None


@pytest.mark.usefixtures("dashboard_pages")
def test_compare_says_why_a_standard_lenet5_already_has_small_modules(monkeypatch):
    from helpers import ROOT

    monkeypatch.setenv(folders.COMPARE_ENV, str(ROOT / "assets" / "results" / "compare.csv"))
    app = open_page("compare")
    captions = [c.value for c in app.caption if "already has small modules" in c.value]
    assert len(captions) == 1, texts(app)  # LeNet-5 only: VGG11's standard modules are large
    assert "Why a standard-trained lenet5 already has small modules (mean size 4.9%, overlap 2.5%; MODA: 3.3% " \
           "and 1.1%): 95.8% of its 61,706 parameters sit in its fully connected layers" in captions[0]


@pytest.mark.usefixtures("dashboard_pages")
def test_projector_mode_shows_plain_tables(demo_env):
    app = open_page("runs")
    assert app.dataframe and not app.table
    app.toggle(key=ui.PRESENTING).set_value(True).run()
    assert app.table and not app.dataframe
    shown = app.table[0].value
    assert "demo (bundled)/vgg11-moda" in list(shown["run"]) and "98.3%" in list(shown["accuracy"])


@pytest.mark.usefixtures("dashboard_pages")
def test_modules_over_training_goes_side_by_side_in_projector_mode(demo_env):
    app = open_page("evolution")
    stacked = charts(app)[0]["layout"]
    assert stacked["xaxis"]["domain"] == stacked["xaxis2"]["domain"]  # one panel above the other
    app.toggle(key=ui.PRESENTING).set_value(True).run()
    layout = charts(app)[0]["layout"]
    assert layout["xaxis"]["domain"][1] < layout["xaxis2"]["domain"][0]


def test_the_demo_has_a_near_miss_at_tau_one():
    """The situation the caption is for exists in the bundled demo: at τ = 1.00 some rates are just under 1."""
    rates = engine.rates(str(DEMO / "vgg11-moda"))
    near = sum(int(((r.numpy() < 1.0) & (r.numpy() >= 0.99)).sum()) for r in rates.values())
    assert near > 0


@pytest.mark.usefixtures("dashboard_pages")
def test_the_one_entry_per_page_script_is_on_every_page_in_either_mode(demo_env):
    """Projector mode adds the sidebar's closing; it must not take Back and Forward's script with it (it once
    did: the script went under the projector branch, and every τ step became a history entry)."""
    app = open_page("activations")
    for presenting in (False, True):
        app.toggle(key=ui.PRESENTING).set_value(presenting).run()
        scripts = [e for e in app.get("html") if "__modaHistory" in e.proto.body]
        assert len(scripts) == 1, presenting
