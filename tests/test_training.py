"""Training that tells the story: the browser's training form keeps checkpoints, learns a class subset on a
fraction of the data (one class may be made scarce: a weak model for Swap), all within the training slot's
limits; while it trains, module size and overlap at τ are drawn live at each checkpoint next to its twin's, and
Modules over training follows the run through its checkpoints afterwards."""
from __future__ import annotations

import dataclasses
import math
import shutil
import threading
from pathlib import Path

import pytest
from helpers import DEMO, train_from_form

from moda_core.decompose import activation_rates, masks_from_rates
from moda_core.errors import ModaError
from moda_core.probe import probe_split
from moda_core.runs import load_run, run_dataset
from moda_core.summary import module_summary
from moda_core.train import Progress, TrainConfig

# a browser-style tiny training: three digits, a tenth of the images, digit 2 scarce
SUBSET = dict(model="lenet5", classes=[0, 1, 2], train_fraction=0.1, class_fractions={2: 0.05}, seed=3)


class RecordingRunner:
    """Stands in for moda_core.train.train: records each call and trains nothing."""

    def __init__(self, epochs_to_report: int = 0):
        self.calls: list[TrainConfig] = []
        self.epochs_to_report = epochs_to_report

    def __call__(self, config, runs_dir, name, progress=None, stop=None, **kwargs):
        self.calls.append(config)
        for epoch in range(1, self.epochs_to_report + 1):
            progress(Progress("epoch", epoch, config.epochs, 1, 1, {"epoch": epoch, "test_accuracy": 0.5}))
        raise ModaError("stopped by the test")


# ----- the limits of the new fields (fast: nothing trains) -------------------------------------------------

def test_the_browser_limits_bound_classes_data_fraction_and_a_scarce_class():
    from dashboard.training import LIMITS

    assert LIMITS.refusal(TrainConfig(**SUBSET, epochs=2)) is None
    # what the config refuses itself when it is built, the browser never sees
    with pytest.raises(ModaError, match="training needs at least 2 classes"):
        TrainConfig(classes=[3], epochs=2)
    with pytest.raises(ModaError, match=r"class index\(es\) \[12\] out of range"):
        TrainConfig(classes=[1, 12], epochs=2)
    with pytest.raises(ModaError, match="class 3 .* not learnt"):
        TrainConfig(classes=[1, 2], class_fractions={3: 0.1}, epochs=2)
    with pytest.raises(ModaError, match="not a class id"):
        TrainConfig(class_fractions={"x": 0.5}, epochs=2)
    stricter = dataclasses.replace(LIMITS, min_classes=3)  # the browser's limits only narrow what a config allows
    assert stricter.refusal(TrainConfig(classes=[3, 4], epochs=2)) == (
        "it asks for 2 classes; the dashboard trains at least 3")
    low, high = LIMITS.fractions
    assert LIMITS.refusal(TrainConfig(train_fraction=low, epochs=2)) is None
    assert LIMITS.refusal(TrainConfig(train_fraction=low / 2, epochs=2)) == (
        f"it asks for a data fraction of {low / 2:g}; the dashboard trains on {low:g} to {high:g} of the training "
        "images")
    low, _ = LIMITS.scarce_fractions
    assert f"it asks for {low / 10:g} of class 3's images" in LIMITS.refusal(
        TrainConfig(class_fractions={3: low / 10}, epochs=2))
    assert "at most 1 class scarce" in LIMITS.refusal(TrainConfig(class_fractions={3: 0.1, 4: 0.1}, epochs=2))
    # a stored config (Resume) read back from JSON: class ids as strings are fine
    assert LIMITS.refusal(TrainConfig(classes=[1, 2], class_fractions={"2": 0.05}, epochs=2)) is None


def test_the_checkpoint_interval_keeps_within_the_checkpoint_limit():
    from dashboard.training import LIMITS

    most = LIMITS.max_checkpoints
    assert LIMITS.refusal(TrainConfig(epochs=most, checkpoint_every=1)) is None
    assert LIMITS.refusal(TrainConfig(epochs=2 * most, checkpoint_every=2)) is None
    assert f"it asks for {most + 1} checkpoints (one every epoch)" in LIMITS.refusal(
        TrainConfig(epochs=most + 1, checkpoint_every=1))


def test_the_slot_refuses_a_start_beyond_the_data_limits_before_anything_runs(tmp_path):
    from dashboard import training

    runner = RecordingRunner()
    slot = training.TrainingSlot(runner)
    for config in (TrainConfig(classes=[4, 5], epochs=2, width=0.75), TrainConfig(train_fraction=0.01, epochs=2),
                   TrainConfig(class_fractions={3: 0.001}, epochs=2),
                   TrainConfig(epochs=12, checkpoint_every=1)):
        with pytest.raises(ModaError, match="it asks for .*Train it on the command line instead"):
            slot.start(config, tmp_path, "refused", "runs")
    assert runner.calls == [] and not slot.status().busy and list(tmp_path.iterdir()) == []
    slot.start(TrainConfig(**SUBSET, epochs=2, checkpoint_every=1), tmp_path, "allowed", "runs")
    assert slot.wait(30) and len(runner.calls) == 1


def test_the_form_config_learns_a_subset_on_a_fraction_with_one_scarce_class():
    from dashboard.training import LIMITS, form_classes, form_config

    common = dict(model="lenet5", epochs=3, alpha=1.0, beta=1.0, gamma=0.3, width=1.0, seed=0)
    every = form_config(**common, checkpoint_every=1, classes=form_classes(), fraction=1.0, scarce=None,
                        scarce_fraction=0.02)
    # every class picked: no subset, as on the command line (the same config as before the form had the fields)
    assert (every.classes, every.train_fraction, every.class_fractions, every.checkpoint_every) == (None, 1.0, None, 1)
    weak = form_config(**common, checkpoint_every=2, classes=[2, 0, 1], fraction=0.1 + 1e-12, scarce=2,
                       scarce_fraction=0.05)
    assert (weak.classes, weak.train_fraction, weak.class_fractions) == ([0, 1, 2], 0.1, {2: 0.05})
    weak.validate()
    assert LIMITS.refusal(weak) is None
    # more epochs than checkpoints allowed: the interval asked is raised to the smallest that fits
    most = LIMITS.max_checkpoints
    long = form_config(**{**common, "epochs": 2 * most}, checkpoint_every=1, classes=[0, 1], fraction=1.0,
                       scarce=None, scarce_fraction=0.02)
    assert long.checkpoint_every == 2 and LIMITS.refusal(long) is None
    odd = form_config(**{**common, "epochs": most + 1}, checkpoint_every=1, classes=[0, 1], fraction=1.0,
                      scarce=None, scarce_fraction=0.02)
    assert odd.checkpoint_every == 2 and LIMITS.refusal(odd) is None
    kept = form_config(**{**common, "epochs": most + 1}, checkpoint_every=5, classes=[0, 1], fraction=1.0,
                       scarce=None, scarce_fraction=0.02)
    assert kept.checkpoint_every == 5  # within the limit: as asked
    assert form_config(**{**common, "epochs": 2 * most}, checkpoint_every=0, classes=[0, 1], fraction=1.0,
                       scarce=None, scarce_fraction=0.02).checkpoint_every == 0  # final weights only
    with pytest.raises(ModaError, match=f"pick at least {LIMITS.min_classes} classes"):
        form_config(**common, checkpoint_every=1, classes=[7], fraction=1.0, scarce=None, scarce_fraction=0.02)
    with pytest.raises(ModaError, match="the scarce class 5 is not among the classes picked"):
        form_config(**common, checkpoint_every=1, classes=[0, 1], fraction=1.0, scarce=5, scarce_fraction=0.02)


# ----- the live view's machinery (fast: demo runs are read, nothing trains) ----------------------------------

def test_the_live_probe_decomposes_each_saved_state_and_its_twin_in_the_background(tmp_path):
    from dashboard.training import LiveProbe

    twin = tmp_path / "twin"
    shutil.copytree(DEMO / "swap-weak", twin)
    asked: list[tuple[Path, str]] = []

    def finder(run_dir: Path, method: str) -> tuple[str, str]:
        asked.append((run_dir, method))
        return str(twin), "standard"

    run = DEMO / "swap-weak"
    live = LiveProbe(finder)
    live.reset("moda")
    for epoch, spec in ((8, f"{run}@8"), (16, f"{run}@16"), (40, str(run))):
        live.saved(epoch, spec)
    live.view(0.7)  # a page asks: answered with what is known, the rest computed by the worker
    assert live.wait(120)
    view = live.view(0.7)
    assert (view.pending, view.note, view.method, view.run_spec) == (0, "", "moda", str(run))
    assert asked == [(run, "moda")]
    assert view.run["epoch"] == [8, 16, 40] and view.twin["epoch"] == [8, 16, 40]
    assert view.twin_spec == str(twin) and view.twin_method == "standard"
    # the numbers are module_summary's of the modules the probe images give at τ (moda_core.probe; its own
    # tests: test_probe.py)
    loaded = load_run(f"{run}@16")
    data = run_dataset(loaded)
    rates, _ = activation_rates(loaded.model, probe_split(data.train, data.num_classes), data.num_classes)
    summary = module_summary(loaded.model, masks_from_rates(rates, 0.7))
    assert view.run["mean_module_size"][1] == pytest.approx(summary.mean_size)
    assert view.run["mean_overlap"][1] == pytest.approx(summary.mean_overlap)
    assert view.twin["mean_module_size"] == pytest.approx(view.run["mean_module_size"])  # the same weights
    # another τ: computed afresh (higher τ keeps fewer units), the first τ's numbers kept
    live.view(0.95)
    assert live.wait(120)
    higher = live.view(0.95)
    assert higher.run["epoch"] == [8, 16, 40] and higher.run != view.run
    assert live.view(0.7).run == view.run
    # a new training forgets the last one's states
    live.reset("standard")
    assert live.view(0.7).run["epoch"] == [] and live.view(0.7).twin is None


def test_a_state_that_does_not_load_leaves_a_note_and_the_others_go_on(tmp_path):
    from dashboard.training import LiveProbe

    live = LiveProbe(lambda run_dir, method: None)
    live.reset("moda")
    live.saved(1, str(tmp_path / "gone@1"))
    live.saved(40, str(DEMO / "swap-weak"))
    assert live.wait(120)
    view = live.view(0.9)
    assert live.wait(120)
    view = live.view(0.9)
    assert view.run["epoch"] == [40] and view.twin is None and view.twin_spec == ""
    assert "A saved state could not be decomposed" in view.note


def test_the_slot_hands_each_checkpoint_and_the_final_weights_to_the_live_view(tmp_path, monkeypatch):
    from dashboard import training

    handed: list[tuple[int, str]] = []
    monkeypatch.setattr(training.LiveProbe, "saved", lambda self, epoch, spec: handed.append((epoch, spec)))
    slot = training.TrainingSlot(RecordingRunner(epochs_to_report=5))
    slot.start(TrainConfig(**SUBSET, epochs=5, checkpoint_every=2), tmp_path, "story", "runs")
    assert slot.wait(30)
    run = tmp_path / "story"
    assert handed == [(2, f"{run}@2"), (4, f"{run}@4"), (5, str(run))]
    assert slot.status().checkpoint_every == 2


def test_a_run_with_a_default_name_is_found_by_its_lock(tmp_path, monkeypatch):
    from dashboard import training
    from moda_core import runs

    (tmp_path / "older-run").mkdir()  # there before the training: never taken for it
    handed: list[tuple[int, str]] = []
    monkeypatch.setattr(training.LiveProbe, "saved", lambda self, epoch, spec: handed.append((epoch, spec)))

    def creating(config, runs_dir, name, progress=None, **kwargs):  # makes and locks the folder, trains nothing
        with runs.create_run(runs_dir, name, "lenet5-mnist5k-moda-default"):
            for epoch in (1, 2):
                progress(Progress("epoch", epoch, config.epochs, 1, 1, {"epoch": epoch}))
        raise ModaError("stopped by the test")

    slot = training.TrainingSlot(creating)
    slot.start(TrainConfig(**SUBSET, epochs=2, checkpoint_every=1), tmp_path, None, "runs")
    assert slot.wait(30)
    run = tmp_path / "lenet5-mnist5k-moda-default"
    assert handed == [(1, f"{run}@1"), (2, f"{run}@2")]


def test_a_resumed_run_brings_the_checkpoints_it_kept_to_the_live_view(tmp_path, monkeypatch):
    from dashboard import training

    shutil.copytree(DEMO / "swap-weak", tmp_path / "weak")  # checkpoints at epochs 8 and 16
    handed: list[tuple[int, str]] = []
    monkeypatch.setattr(training.LiveProbe, "saved", lambda self, epoch, spec: handed.append((epoch, spec)))
    slot = training.TrainingSlot(RecordingRunner())
    slot.start(TrainConfig(**SUBSET, epochs=2, checkpoint_every=1), tmp_path, "weak", "runs", resume=True)
    assert slot.wait(30)
    run = tmp_path / "weak"
    assert handed == [(8, f"{run}@8"), (16, f"{run}@16")]


def test_the_live_figure_draws_a_one_state_twin_as_a_level_across_the_training():
    from dashboard.figures.training import live_modules_figure

    run = {"epoch": [1, 2], "mean_module_size": [0.5, 0.4], "mean_overlap": [0.3, 0.2]}
    twin = {"epoch": [20], "mean_module_size": [0.6], "mean_overlap": [0.45]}
    fig = live_modules_figure({"MODA: runs/a": run, "Standard: runs/b (final weights)": twin},
                              {"MODA: runs/a": "moda", "Standard: runs/b (final weights)": "standard"}, 0.7, 5,
                              levels=["Standard: runs/b (final weights)"])
    traces = {(t.name, t.yaxis): t for t in fig.data}
    assert len(fig.data) == 4 and fig.layout.title.text == "Modules as it trains (τ = 0.70)"
    flat = traces[("Standard: runs/b (final weights)", "y")]
    assert list(flat.x) == [1, 20] and list(flat.y) == [0.6, 0.6]
    assert list(traces[("MODA: runs/a", "y2")].y) == [0.3, 0.2]
    assert fig.layout.xaxis.range[1] == pytest.approx(20.5)
    assert traces[("MODA: runs/a", "y")].line.color != flat.line.color
    first = {"epoch": [1], "mean_module_size": [0.5], "mean_overlap": [0.3]}
    growing = live_modules_figure({"MODA: runs/a": first}, {"MODA: runs/a": "moda"}, None, 10)
    assert list(growing.layout.xaxis.range) == [0.5, 10.5]  # the curve grows into the planned epochs
    assert list(growing.data[0].x) == [1.0]  # the training's own first state is a point, not a level


# ----- end to end: a browser training, its live modules, Modules over training (slow) ------------------------

class PausingTrainer:
    """moda_core.train.train that pauses after its first epoch until the test lets it go (the test looks at the
    page while the run trains)."""

    def __init__(self):
        self.paused, self.go = threading.Event(), threading.Event()

    def __call__(self, config, runs_dir, name, progress=None, **kwargs):
        from moda_core.train import train

        def relay(event):
            progress(event)
            if event.stage == "epoch" and event.epoch == 1:
                self.paused.set()
                assert self.go.wait(240)

        return train(config, runs_dir, name, progress=relay, **kwargs)


def _points(figure: dict, name_part: str, panel: str = "y") -> list[tuple[float, float]]:
    for trace in figure["data"]:
        if name_part in trace.get("name", "") and trace.get("yaxis", "y") == panel:
            return list(zip(trace["x"], trace["y"], strict=True))
    return []


def _figure(app, title: str) -> dict:
    from helpers import charts

    found = [c for c in charts(app).values() if title in c["layout"].get("title", {}).get("text", "")]
    assert found, [c["layout"].get("title", {}).get("text") for c in charts(app).values()]
    return found[0]


@pytest.mark.slow
@pytest.mark.usefixtures("dashboard_pages")
def test_a_browser_training_draws_its_modules_live_and_then_over_training(monkeypatch, tmp_path):
    from helpers import open_page, texts

    from dashboard import training
    from moda_core.train import train

    # its standard twin: the same model, classes and data fractions, trained without the modular terms
    train(TrainConfig(**SUBSET, epochs=2, alpha=0.0, beta=0.0, gamma=0.0, checkpoint_every=1), tmp_path,
          "twin-standard")
    monkeypatch.setenv("MODA_RUNS_DIR", str(tmp_path))
    trainer = PausingTrainer()
    slot = training.TrainingSlot(trainer)
    monkeypatch.setattr(training, "slot", lambda: slot)
    app = open_page("runs")
    app.selectbox(key="train_model").set_value("lenet5").run()
    app.number_input(key="train_epochs").set_value(2)
    app.number_input(key="train_checkpoint_every").set_value(1)
    app.multiselect(key="train_classes").set_value([0, 1, 2])
    app.slider(key="train_fraction").set_value(0.1)
    app.selectbox(key="train_scarce").set_value(2)
    app.number_input(key="train_scarce_fraction").set_value(0.05)
    app.number_input(key="train_seed").set_value(3)
    app.text_input(key="train_name").set_value("live-story")
    train_from_form(app)
    assert not app.exception, texts(app)
    assert trainer.paused.wait(240), slot.status().message
    try:  # while it trains (paused after epoch 1): its first checkpoint's modules, next to its twin's
        slot.live_modules(0.9)
        assert slot.wait_live(120)
        app.run()
        assert not app.exception and slot.status().busy
        figure = _figure(app, "Modules as it trains (τ = 0.90)")
        assert [x for x, _ in _points(figure, "live-story")] == [1]
        assert [x for x, _ in _points(figure, "twin-standard")] == [1, 2]
        assert _figure(app, "Accuracy per epoch (live)")
    finally:
        trainer.go.set()
    assert slot.wait(240) and slot.status().outcome == "done", slot.status().message
    stored = load_run(tmp_path / "live-story").config["train"]
    assert (stored["classes"], stored["train_fraction"], stored["class_fractions"], stored["checkpoint_every"]) \
        == ([0, 1, 2], 0.1, {"2": 0.05}, 1)
    assert slot.wait_live(120)
    live = slot.live_modules(0.9)
    assert slot.wait_live(120)
    live = slot.live_modules(0.9)
    assert live.run["epoch"] == [1, 2] and live.pending == 0 and live.note == ""
    assert all(0 < size <= 1 and 0 <= overlap <= size and not math.isnan(overlap)
               for size, overlap in zip(live.run["mean_module_size"], live.run["mean_overlap"], strict=True))
    assert live.twin_spec == str(tmp_path / "twin-standard") and live.twin["epoch"] == [1, 2]

    app.run()  # the Runs page after the training: its live curves next to its twin's, at the session's τ
    assert not app.exception
    figure = _figure(app, "Modules as it trains (τ = 0.90)")
    assert [x for x, _ in _points(figure, "live-story")] == [1, 2]
    assert [x for x, _ in _points(figure, "live-story", "y2")] == [1, 2]
    assert [x for x, _ in _points(figure, "twin-standard")] == [1, 2]
    assert "Modules over training follows it through its checkpoints" in texts(app)

    # Modules over training: the run just trained, from its checkpoints
    open_page("evolution", app)
    app.selectbox(key="evo_run").set_value(str(tmp_path / "live-story")).run()
    assert not app.exception
    app.button(key="evo_compute").click().run()
    assert not app.exception
    figure = _figure(app, "Modules over training")
    points = _points(figure, "live-story")
    assert len(points) >= 2 and [x for x, _ in points] == [1, 2], figure["data"]
    assert "Only one point" not in texts(app)
