"""Lecture presets on the Runs page: one click trains a MODA run and then its standard-trained twin, one after the
other on the server's one training slot; the training form warns when its settings take few optimisation steps."""
from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import open_page, texts

from dashboard import study_jobs, training
from moda_core.errors import ModaError, TrainingStopped
from moda_core.methods import method_of
from moda_core.runs import list_runs
from moda_core.train import Progress, TrainConfig, train


class SeriesRunner:
    """Stands in for ``moda_core.train.train``: records each call, then finishes it ("done"), fails it or stops it
    as ``outcomes`` say, one per call; ``gate`` (when given) holds each call until set."""

    def __init__(self, outcomes=("done", "done"), gate: threading.Event | None = None):
        self.outcomes, self.gate, self.calls = list(outcomes), gate, []
        self.running = threading.Event()

    def __call__(self, config, runs_dir, name, progress=None, stop=None, **kwargs):
        self.calls.append((config, name))
        progress(Progress("batch", 1, config.epochs, 1, 4))
        self.running.set()
        if self.gate is not None:
            assert self.gate.wait(30)
        outcome = self.outcomes[len(self.calls) - 1]
        if outcome == "failed":
            raise ModaError("out of disk space")
        if outcome == "stopped":
            raise TrainingStopped(Path(runs_dir) / f"run{len(self.calls)}", 1, config.epochs)
        return SimpleNamespace(name=f"run{len(self.calls)}", epoch=config.epochs,
                               metrics={"test_accuracy": 0.95, "seconds": 3.0})


def test_a_series_trains_one_after_the_other_and_says_so(tmp_path):
    gate = threading.Event()
    runner = SeriesRunner(gate=gate)
    slot = training.TrainingSlot(runner)
    first, second = training.PRESETS[1].configs()
    slot.start(first, tmp_path, None, "runs", then=(second,))
    assert runner.running.wait(10)
    status = slot.status()
    assert status.busy and status.queued == 1 and "(1 more queued after it)" in status.busy_message()
    with pytest.raises(training.TrainingBusy):  # the slot stays claimed between the two
        slot.start(first, tmp_path, "other", "runs")
    gate.set()
    assert slot.wait(30)
    status = slot.status()
    assert [method_of(config).name for config, _ in runner.calls] == ["moda", "standard"]
    assert [name for _, name in runner.calls] == [None, None]  # default names: model-dataset-method-time
    assert (status.outcome, status.run, status.queued) == ("done", "runs/run2", 0)
    assert "Trained runs/run1: test accuracy 95.0%" in status.message
    assert "Trained runs/run2: test accuracy 95.0%" in status.message


@pytest.mark.parametrize("outcome", ["failed", "stopped"])
def test_a_series_ends_where_one_of_its_trainings_fails_or_is_stopped(tmp_path, outcome):
    runner = SeriesRunner(outcomes=(outcome, "done"))
    slot = training.TrainingSlot(runner)
    first, second = training.PRESETS[0].configs()
    slot.start(first, tmp_path, None, "runs", then=(second,))
    assert slot.wait(30)
    status = slot.status()
    assert len(runner.calls) == 1 and status.outcome == outcome and not status.busy
    assert ("out of disk space" if outcome == "failed" else "interrupted") in status.message


def test_a_series_is_refused_whole_when_a_later_training_exceeds_the_limits(tmp_path):
    runner = SeriesRunner()
    slot = training.TrainingSlot(runner)
    first, _ = training.PRESETS[1].configs()
    with pytest.raises(ModaError, match="it asks for 1000 epochs"):
        slot.start(first, tmp_path, None, "runs", then=(TrainConfig(model="mlp", epochs=1000),))
    assert runner.calls == [] and not slot.status().busy


def test_every_preset_is_a_moda_run_and_its_twin_within_the_browser_limits():
    for preset in training.PRESETS:
        moda, standard = preset.configs()
        assert training.LIMITS.refusal(moda) is None and training.LIMITS.refusal(standard) is None
        assert (method_of(moda).name, method_of(standard).name) == ("moda", "standard")
        assert (moda.alpha, moda.beta, moda.gamma) == (1.0, 1.0, 0.3)
        # the same experiment by another method: what the pages' twins are made of
        method = ("method", "alpha", "beta", "gamma")
        same = {key: value for key, value in vars(moda).items() if key not in method}
        assert same == {key: value for key, value in vars(standard).items() if key not in method}
        assert training.optimisation_steps(moda) >= training.FEW_STEPS  # the form's own advice


def test_optimisation_steps_count_the_batches_of_the_split_the_training_uses():
    config = TrainConfig(model="lenet5", epochs=5, batch_size=128, train_fraction=0.2)
    assert training.optimisation_steps(config) == 5 * 7  # 800 of the 4,000 images: 7 batches of 128
    assert training.optimisation_steps(TrainConfig(model="lenet5", epochs=3, classes=[0, 1])) == 3 * 7


def test_the_preset_button_starts_the_moda_run_then_its_twin(monkeypatch, tmp_path):
    runner = SeriesRunner()
    slot = training.TrainingSlot(runner)
    monkeypatch.setattr(training, "slot", lambda: slot)
    monkeypatch.setenv("MODA_RUNS_DIR", str(tmp_path))
    app = open_page("runs")
    captions = " ".join(c.value for c in app.caption)
    for preset in training.PRESETS:  # the time it takes is said before it starts
        assert f"About {preset.seconds[0]} s + {preset.seconds[1]} s on a 2-core laptop CPU" in captions
    app.button(key="preset_vgg11").click().run()
    assert slot.wait(30) and not app.exception, texts(app)
    assert [config for config, _ in runner.calls] == training.PRESETS[0].configs()


@pytest.mark.slow
@pytest.mark.long  # trains both presets for real: about a minute and a half on 2 cores
def test_each_preset_reaches_its_accuracy_and_its_runs_are_twins(tmp_path):
    for preset in training.PRESETS:
        folder = tmp_path / preset.model
        runs = [train(config, folder) for config in preset.configs()]
        for run in runs:
            assert run.metrics["test_accuracy"] >= preset.accuracy, (preset.title, run.name, run.metrics)
        summaries = list_runs(folder)
        moda = next(s for s in summaries if s.method == "moda")
        twins = study_jobs.twins(summaries, str(moda.path))
        assert set(twins) == {"moda", "standard"}, twins
