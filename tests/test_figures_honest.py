"""Figures that do not exaggerate and pages named as the sidebar names them: accuracy axes over at least 5 points
with whole-percent ticks that never repeat, the τ trade-off's chosen τ in its legend, several runs on one chart,
overlap heatmaps on their own colour scales, and "1 epoch" in the singular."""
from __future__ import annotations

import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import ROOT

from dashboard.figures.modules import overlap_heatmap
from dashboard.figures.training import TAU_PANELS, accuracy_axis, accuracy_figure, runs_overlay_figure, tau_figure


def tick_labels(axis) -> list[str]:
    """The tick labels a linear axis shows within its range, as plotly prints them (``tickformat`` .0%)."""
    low, high = axis.range
    first = math.ceil(round((low - axis.tick0) / axis.dtick, 6))
    ticks = [axis.tick0 + k * axis.dtick for k in range(first, first + 1000)]
    return [f"{t:.0%}" for t in ticks if t <= high + 1e-9]


def tick_values(axis) -> list[float]:
    low, high = axis.range
    first = math.ceil(round((low - axis.tick0) / axis.dtick, 6))
    return [axis.tick0 + k * axis.dtick for k in range(first, first + 1000)
            if axis.tick0 + k * axis.dtick <= high + 1e-9]


@pytest.mark.parametrize("values", [[0.136, 0.141], [0.995, 0.999, 0.997], [0.72, 0.98], [0.2, 0.98], [1.0],
                                    [0.0, 0.01], [0.5]])
def test_accuracy_axis_spans_five_points_with_distinct_ticks_around_the_values(values):
    axis = SimpleNamespace(**accuracy_axis(values))
    assert axis.range[1] - axis.range[0] >= 0.05
    labels = tick_labels(axis)
    assert len(labels) == len(set(labels)) >= 3, labels
    ticks = tick_values(axis)
    assert ticks[-1] >= max(values) - 1e-9 and ticks[0] <= min(values) + 1e-9  # no point beyond the end ticks
    assert -1e-9 <= ticks[0] and ticks[-1] <= 1 + 1e-9  # accuracies between 0% and 100%


def test_a_one_epoch_runs_accuracy_axis_repeats_no_label_and_no_point_sits_above_its_top_tick():
    history = [{"epoch": 1, "train_accuracy": 0.1364, "test_accuracy": 0.1412}]
    axis = accuracy_figure(history).layout.yaxis
    labels = tick_labels(axis)
    assert len(labels) == len(set(labels)), labels
    assert tick_values(axis)[-1] >= 0.1412 and axis.range[1] - axis.range[0] >= 0.05


def test_tau_trade_offs_small_accuracy_wobble_is_drawn_small_and_its_tau_label_is_in_the_legend():
    grid = [0.5, 0.6, 0.7, 0.8, 0.9]
    series = {"MODA": {"tau": grid, "mean_module_size": [0.5, 0.4, 0.3, 0.2, 0.1],
                       "mean_overlap": [0.4, 0.3, 0.2, 0.1, 0.05],
                       "pair_accuracy": [0.999, 0.997, 0.999, 0.998, 0.999]}}
    fig = tau_figure(series, {"MODA": "moda"}, tau=0.7)
    low, high = fig.layout.yaxis3.range
    assert high - low >= 0.05  # a 0.2-point wobble takes at most 4% of the panel's height
    assert 0.002 / (high - low) <= 0.04
    # the chosen τ is named in the legend, not by a label on the first panel's title
    assert not [a for a in fig.layout.annotations if "the pages' τ" in (a.text or "")]
    assert [a.text for a in fig.layout.annotations] == [title for _, title in TAU_PANELS]
    legend = [t for t in fig.data if t.showlegend and t.line.dash == "dot"]
    assert [t.name for t in legend] == ["τ = 0.70 (the pages' τ)"]


def test_several_runs_overlay_on_one_chart_one_colour_each():
    histories = {"demo/a": [{"epoch": 1, "test_accuracy": 0.5, "ce": 1.2}, {"epoch": 2, "test_accuracy": 0.8,
                                                                            "ce": 0.6}],
                 "demo/b": [{"epoch": 1, "test_accuracy": 0.6, "ce": 1.0}],
                 "runs/<b>c</b>": [{"epoch": 1, "test_accuracy": 0.7, "ce": 0.9},
                                   {"epoch": 2, "test_accuracy": 0.9, "ce": 0.4},
                                   {"epoch": 3, "test_accuracy": 0.95, "ce": 0.2}]}
    fig = runs_overlay_figure(histories)
    assert [t.name for t in fig.data] == ["demo/a", "demo/b", "runs/&lt;b&gt;c&lt;/b&gt;"]  # text, never HTML
    assert [list(t.y) for t in fig.data] == [[0.5, 0.8], [0.6], [0.7, 0.9, 0.95]]
    assert len({t.line.color for t in fig.data}) == 3 and all(t.showlegend for t in fig.data)
    assert fig.layout.xaxis.dtick == 1 and fig.layout.yaxis.tickformat == ".0%"
    assert tick_values(fig.layout.yaxis)[-1] >= 0.95
    loss = runs_overlay_figure(histories, "ce", "Cross-entropy loss per epoch", "cross-entropy loss")
    assert list(loss.data[2].y) == [0.9, 0.4, 0.2] and loss.layout.yaxis.title.text == "cross-entropy loss"
    assert loss.layout.yaxis.tickformat is None


def test_an_overlap_heatmap_on_its_own_scale_shows_its_structure_and_states_its_range():
    small = np.array([[0.12, 0.02, 0.04], [0.02, 0.04, 0.01], [0.04, 0.01, 0.08]])
    own = overlap_heatmap(small, ["a", "b", "c"]).data[0]
    assert own.zmax == pytest.approx(0.12) and own.zmin == 0.0
    assert "0–12.0%" in own.colorbar.title.text and "own scale" in own.colorbar.title.text
    shared = overlap_heatmap(small, ["a", "b", "c"], zmax=0.82).data[0]
    assert shared.zmax == 0.82 and "0–82.0%" in shared.colorbar.title.text
    assert "shared scale" in shared.colorbar.title.text


def test_every_pages_title_is_its_sidebar_name():
    app = (ROOT / "dashboard" / "app.py").read_text()
    pages = re.findall(r'st\.Page\(HERE / "views" / "(\w+)\.py", title="([^"]+)"', app)
    assert len(pages) == len(list((ROOT / "dashboard" / "views").glob("*.py")))  # every page is in the sidebar
    for page, sidebar in pages:
        source = (ROOT / "dashboard" / "views" / f"{page}.py").read_text()
        assert re.findall(r'st\.title\("([^"]+)"\)', source) == [sidebar], page


def test_a_training_of_one_epoch_says_1_epoch(monkeypatch, tmp_path, capsys):
    from dashboard import training
    from moda_core import cli
    from moda_core import train as trainer
    from moda_core.models import build_model
    from moda_core.train import TrainConfig

    run = SimpleNamespace(name="one", path=tmp_path / "one", epoch=1, model=build_model("mlp"),
                          metrics={"test_accuracy": 0.5, "train_accuracy": 0.5, "seconds": 2.0,
                                   "seconds_per_epoch": 2.0, "device": "cpu"})
    slot = training.TrainingSlot(runner=lambda *args, **kwargs: run)
    slot.start(TrainConfig(model="mlp", dataset="mnist5k", epochs=1, device="cpu"), tmp_path, "one", "runs")
    assert slot.wait(timeout=30)
    assert "after 1 epoch " in slot.status().message and "epochs" not in slot.status().message
    monkeypatch.setattr(trainer, "train", lambda *args, **kwargs: run)
    cli.main(["train", "--model", "mlp", "--epochs", "1", "--runs-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "after 1 epoch (" in out and "1 epochs" not in out
