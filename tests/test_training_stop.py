"""Stopping a training: ``train(..., stop=...)``, Ctrl-C on the command line and the dashboard's Stop button
leave an interrupted run that resumes bit for bit; browser Resume obeys the training form's limits."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from moda_core import cli, runs
from moda_core.errors import ModaError, TrainingStopped
from moda_core.runs import list_runs
from moda_core.train import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(model="lenet5", width=0.25, train_fraction=0.1, seed=3)  # about a second per epoch on a CPU


def tiny(**overrides) -> TrainConfig:
    return TrainConfig(**{**TINY, "epochs": 2, **overrides})


# ----- the trainer ------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_stopped_training_keeps_the_last_epoch_and_resumes_bit_for_bit(tmp_path):
    straight = train(tiny(), tmp_path, "straight")
    done: list[tuple[int, int]] = []

    def record(event):
        if event.stage == "batch":
            done.append((event.epoch, event.step))

    with pytest.raises(TrainingStopped) as stopped:  # asked before every step: stop after epoch 2's second step
        train(tiny(), tmp_path, "stopped", progress=record, stop=lambda: done[-1:] == [(2, 2)])
    assert (stopped.value.epoch, stopped.value.epochs, stopped.value.path) == (1, 2, tmp_path / "stopped")
    assert done[-1] == (2, 2)  # no step after the stop
    summary = {s.name: s for s in list_runs(tmp_path)}["stopped"]
    assert (summary.status, summary.epochs_done, summary.pid) == ("interrupted", 1, None)
    assert runs.read_commit(tmp_path / "stopped")["epoch"] == 1  # the half of epoch 2 was never committed
    assert [p.name for p in (tmp_path / "stopped").iterdir() if p.name.startswith(".e")] == []

    seen = []
    resumed = train(tiny(), tmp_path, "stopped", resume=True, progress=seen.append)
    assert {e.epoch for e in seen} == {2} and resumed.epoch == 2
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert {s.name: s.status for s in list_runs(tmp_path)} == {"straight": "complete", "stopped": "complete"}


@pytest.mark.slow  # no step, but the data set and the model are set up: seconds
def test_a_stop_before_the_first_step_trains_nothing_and_leaves_an_interrupted_run(tmp_path):
    stop = threading.Event()
    stop.set()  # e.g. Stop pressed while the data set loads
    batches = []
    with pytest.raises(TrainingStopped, match="keeps epoch 0 of 2"):
        train(tiny(), tmp_path, "early", progress=batches.append, stop=stop)
    assert batches == []
    summary = list_runs(tmp_path)[0]
    assert (summary.status, summary.epochs_done, summary.pid) == ("interrupted", 0, None)
    assert (tmp_path / "early" / runs.CONFIG).exists() and not (tmp_path / "early" / runs.MODEL).exists()


def test_a_stop_signal_is_an_event_or_a_callable(tmp_path):
    with pytest.raises(TypeError, match="stop must be a threading.Event or a callable"):
        train(tiny(), tmp_path, "bad-stop", stop=3)
    assert list(tmp_path.iterdir()) == []  # refused before any folder was made


# ----- Ctrl-C on the command line ---------------------------------------------------------------

@pytest.mark.slow
def test_ctrl_c_on_the_command_line_leaves_a_resumable_interrupted_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "moda_core", "train", "--model", "lenet5", "--width", "0.25",
                             "--train-fraction", "0.1", "--epochs", "4", "--seed", "3", "--runs-dir", str(tmp_path),
                             "--name", "ctrl-c"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 240
        while not (tmp_path / "ctrl-c" / runs.COMMIT).exists():
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130 and len(lines) == 1, err
    summary = list_runs(tmp_path)[0]
    assert (summary.status, summary.pid) == ("interrupted", None) and 1 <= summary.epochs_done < 4
    assert lines[0].startswith(f"interrupted: run ctrl-c keeps epoch {summary.epochs_done} of 4 (continue with "
                               "moda train --resume --name ctrl-c --runs-dir "), lines[0]
    assert cli.main(["runs", "--runs-dir", str(tmp_path)]) == 0
    assert cli.main(["train", "--runs-dir", str(tmp_path), "--name", "ctrl-c", "--resume", "--epochs", "1"]) == 0
    summary = list_runs(tmp_path)[0]
    assert (summary.status, summary.epochs_done) == ("complete", 4)  # the stored plan wins


# ----- the dashboard: one place for the browser's limits, the Stop button, Resume within the limits ------

def test_the_browser_limits_say_which_limit_a_config_exceeds():
    from dashboard.training import LIMITS

    assert LIMITS.refusal(TrainConfig(model="mlp", epochs=3)) is None
    assert LIMITS.refusal(TrainConfig(epochs=100_000)) == (
        f"it asks for 100000 epochs; the dashboard trains at most {LIMITS.max_epochs}")
    every_epoch = TrainConfig(epochs=LIMITS.max_epochs, checkpoint_every=1)
    assert f"it asks for {LIMITS.max_epochs} checkpoints (one every epoch)" in LIMITS.refusal(every_epoch)
    assert "width ×2" in LIMITS.refusal(TrainConfig(width=2.0))
    assert "data set cifar10" in LIMITS.refusal(TrainConfig(dataset="cifar10"))
    assert "batches of 2" in LIMITS.refusal(TrainConfig(batch_size=2))


class StoppableRunner:
    """Stands in for moda_core.train.train: reports a batch, waits for its stop event, then (once let go)
    raises TrainingStopped keeping epoch 1, as the trainer does after the current step."""

    def __init__(self):
        self.started, self.let_go, self.calls = threading.Event(), threading.Event(), []

    def __call__(self, config, runs_dir, name, progress=None, stop=None, **kwargs):
        from moda_core.train import Progress

        self.calls.append(name)
        progress(Progress("batch", 2, config.epochs, 3, 10))
        self.started.set()
        assert stop.wait(30) and self.let_go.wait(30)
        raise TrainingStopped(Path(runs_dir) / name, 1, config.epochs)


def test_any_session_can_stop_the_training_and_it_ends_interrupted(tmp_path):
    from dashboard import training

    runner = StoppableRunner()
    slot = training.TrainingSlot(runner)
    assert not slot.stop()  # nothing to stop
    slot.start(TrainConfig(model="mlp", epochs=3), tmp_path, "lesson", "runs")
    assert runner.started.wait(10) and not slot.status().stopping
    assert slot.stop()
    status = slot.status()
    assert status.busy and status.stopping and status.busy_message() == "busy: runs/lesson is stopping after the " \
                                                                        "current step"
    runner.let_go.set()
    assert slot.wait(10)
    status = slot.status()
    assert (status.outcome, status.run, status.stopping) == ("stopped", "runs/lesson", False)
    assert "keeps 1 of 3 epochs" in status.message and "interrupted" in status.message
    assert not slot.stop()


def test_the_slot_refuses_a_training_beyond_the_limits_before_it_starts(tmp_path):
    from dashboard import training

    runner = StoppableRunner()
    slot = training.TrainingSlot(runner)
    with pytest.raises(ModaError, match="it asks for 100000 epochs; the dashboard trains at most"):
        slot.start(TrainConfig(model="mlp", epochs=100_000), tmp_path, "huge", "runs", resume=True)
    assert runner.calls == [] and not slot.status().busy and list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("dashboard_pages")
def test_resume_from_the_browser_is_refused_with_the_limit_a_stored_run_exceeds(monkeypatch, tmp_path):
    from helpers import DEMO, open_page, texts

    from dashboard import training

    run = tmp_path / "marathon"
    shutil.copytree(DEMO / "swap-weak", run, ignore=shutil.ignore_patterns("checkpoints"))
    config = json.loads((run / runs.CONFIG).read_text())
    config["train"].update(epochs=100_000, checkpoint_every=1)  # days of training, 100,000 checkpoints
    (run / runs.CONFIG).write_text(json.dumps(config))
    runner = StoppableRunner()
    slot = training.TrainingSlot(runner)
    monkeypatch.setattr(training, "slot", lambda: slot)
    monkeypatch.setenv("MODA_RUNS_DIR", str(tmp_path))
    app = open_page("runs")
    assert dict(zip(app.dataframe[0].value["run"], app.dataframe[0].value["status"], strict=True))[
        f"{tmp_path.name}/marathon"] == "interrupted"
    assert app.button(key="resume_marathon").disabled and not app.button(key="delete_marathon").disabled
    shown = texts(app)
    assert (f"cannot be resumed from the browser: it asks for 100000 epochs; the dashboard trains at most "
            f"{training.LIMITS.max_epochs}") in shown.replace("\\", ""), shown
    assert "moda train --resume --name marathon" in shown
    assert app.number_input(key="train_epochs").max == training.LIMITS.max_epochs  # the form: the same limit
    assert runner.calls == [] and not slot.status().busy


@pytest.mark.slow
@pytest.mark.usefixtures("dashboard_pages")
def test_the_stop_button_ends_the_training_after_its_step_and_offers_resume(monkeypatch, tmp_path):
    from helpers import open_page, texts

    from dashboard import training

    monkeypatch.setenv("MODA_RUNS_DIR", str(tmp_path))
    slot = training.TrainingSlot()
    monkeypatch.setattr(training, "slot", lambda: slot)
    app = open_page("runs")
    app.selectbox(key="train_model").set_value("mlp").run()
    app.number_input(key="train_epochs").set_value(training.LIMITS.max_epochs)
    app.text_input(key="train_name").set_value("stop-me")
    app.form_submit_button[0].click().run()
    deadline = time.time() + 240
    while not slot.status().history:  # the first epoch is committed
        assert time.time() < deadline and slot.status().busy, slot.status().message
        time.sleep(0.1)
    app.run()
    app.button(key="train_stop").click().run()
    assert not app.exception
    status = slot.status()
    assert status.stopping or status.outcome == "stopped"
    if status.busy:
        assert any("Stopping" in i.value and "after the current step" in i.value for i in app.info), texts(app)
    assert slot.wait(timeout=120)
    status = slot.status()
    assert status.outcome == "stopped" and status.run.endswith("/stop-me"), status.message
    app.run()
    assert not app.exception
    assert any("Stopped" in w.value and "interrupted" in w.value for w in app.warning), texts(app)
    summary = list_runs(tmp_path)[0]
    assert (summary.status, summary.pid) == ("interrupted", None)
    assert 1 <= summary.epochs_done < training.LIMITS.max_epochs
    assert dict(zip(app.dataframe[0].value["run"], app.dataframe[0].value["status"], strict=True))[
        f"{tmp_path.name}/stop-me"] == "interrupted"
    assert not app.button(key="resume_stop-me").disabled  # within the limits: Resume is offered
    assert "cannot be resumed" not in texts(app)
