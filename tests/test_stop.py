"""Stopping a training: ``train(..., stop=...)``, Ctrl-C on the command line and the dashboard's Stop button
leave an interrupted run that resumes bit for bit; browser Resume obeys the training form's limits."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from moda_core import cli, runs
from moda_core.errors import TrainingStopped
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
    summary = {s["name"]: s for s in list_runs(tmp_path)}["stopped"]
    assert (summary["status"], summary["epochs_done"], summary["pid"]) == ("interrupted", 1, None)
    assert runs.read_commit(tmp_path / "stopped")["epoch"] == 1  # the half of epoch 2 was never committed
    assert [p.name for p in (tmp_path / "stopped").iterdir() if p.name.startswith(".e")] == []

    seen = []
    resumed = train(tiny(), tmp_path, "stopped", resume=True, progress=seen.append)
    assert {e.epoch for e in seen} == {2} and resumed.epoch == 2
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert {s["name"]: s["status"] for s in list_runs(tmp_path)} == {"straight": "complete", "stopped": "complete"}


@pytest.mark.slow  # no step, but the data set and the model are set up: seconds
def test_a_stop_before_the_first_step_trains_nothing_and_leaves_an_interrupted_run(tmp_path):
    stop = threading.Event()
    stop.set()  # e.g. Stop pressed while the data set loads
    batches = []
    with pytest.raises(TrainingStopped, match="keeps epoch 0 of 2"):
        train(tiny(), tmp_path, "early", progress=batches.append, stop=stop)
    assert batches == []
    summary = list_runs(tmp_path)[0]
    assert (summary["status"], summary["epochs_done"], summary["pid"]) == ("interrupted", 0, None)
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
    assert (summary["status"], summary["pid"]) == ("interrupted", None) and 1 <= summary["epochs_done"] < 4
    assert lines[0].startswith(f"interrupted: run ctrl-c keeps epoch {summary['epochs_done']} of 4 (continue with "
                               "moda train --resume --name ctrl-c --runs-dir "), lines[0]
    assert cli.main(["runs", "--runs-dir", str(tmp_path)]) == 0
    assert cli.main(["train", "--runs-dir", str(tmp_path), "--name", "ctrl-c", "--resume", "--epochs", "1"]) == 0
    summary = list_runs(tmp_path)[0]
    assert (summary["status"], summary["epochs_done"]) == ("complete", 4)  # the stored plan wins
