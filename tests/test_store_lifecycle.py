"""The run store's one rule for run names, its discard (``--overwrite`` and the dashboard's Delete) and the
lifecycle of an ``OpenRun`` (``methods.method_of``, the one answer to "which method is this run": test_methods.py)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import DEMO, ROOT, open_page, texts

from moda_core import cli, io, runs
from moda_core.errors import ModaError
from moda_core.train import TrainConfig, train

REFUSED = ["a@b", "a/b", "-a", ".a", "x" * 101, "has space", ""]
ACCEPTED = "vgg11-moda_2.0"


# ----- one rule for run names ----------------------------------------------------------------------

@pytest.mark.parametrize("name", REFUSED)
def test_the_run_name_rule_refuses(name):
    with pytest.raises(ModaError, match="not a plain folder name"):
        runs.check_run_name(name)


@pytest.mark.parametrize("name", [ACCEPTED, "x" * 100, "_scratch", "7"])
def test_the_run_name_rule_accepts(name):
    assert runs.check_run_name(name) == name


@pytest.mark.parametrize("name", [n for n in REFUSED if n])  # argparse takes "" as no name
def test_the_command_line_refuses_a_bad_name_before_any_work(tmp_path, capsys, name):
    runs_dir = tmp_path / "runs"
    assert cli.main(["train", "--runs-dir", str(runs_dir), "--epochs", "1", f"--name={name}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a plain folder name" in err[0], err
    assert not runs_dir.exists()


def test_the_command_line_accepts_a_good_name(tmp_path, capsys):
    # resuming a run that does not exist fails after the name was accepted, without training anything
    assert cli.main(["train", "--runs-dir", str(tmp_path), "--name", ACCEPTED, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume: no run at" in err and "plain folder name" not in err


@pytest.mark.parametrize("name", REFUSED)
def test_train_refuses_a_bad_name_before_any_work(tmp_path, name):
    with pytest.raises(ModaError, match="not a plain folder name"):
        train(TrainConfig(epochs=1), tmp_path / "runs", name)
    assert not (tmp_path / "runs").exists()


def test_train_and_the_store_accept_a_good_name(tmp_path):
    with pytest.raises(ModaError, match="cannot resume: no run at"):
        train(TrainConfig(epochs=1), tmp_path, ACCEPTED, resume=True)
    with runs.create_run(tmp_path, ACCEPTED, "unused") as opened:
        assert opened.path == tmp_path / ACCEPTED and opened.created
    with pytest.raises(ModaError, match="not a plain folder name"):
        runs.create_run(tmp_path, "a@b", "unused")


@pytest.fixture
def recording_slot(monkeypatch):
    """The dashboard's training slot with a runner that records (name, resume) and trains nothing."""
    from dashboard import training

    calls: list[tuple[str | None, bool]] = []

    def recording(config, runs_dir, name, progress=None, **kwargs):
        calls.append((name, bool(kwargs.get("resume"))))
        raise ModaError("stopped by the test")

    slot = training.TrainingSlot(runner=recording)
    monkeypatch.setattr(training, "slot", lambda: slot)
    slot.calls = calls
    return slot


@pytest.mark.usefixtures("dashboard_pages")
def test_the_training_form_uses_the_same_rule(monkeypatch, tmp_path, recording_slot):
    monkeypatch.setenv("MODA_RUNS_DIR", str(tmp_path))
    app = open_page("runs")
    for name in [n for n in REFUSED if n]:  # an empty name means "a default name"
        app.text_input(key="train_name").set_value(name)
        app.form_submit_button[0].click().run()
        assert any("not a plain folder name" in e.value for e in app.error), (name, texts(app))
    assert recording_slot.calls == []
    app.text_input(key="train_name").set_value(ACCEPTED)
    app.form_submit_button[0].click().run()
    assert recording_slot.wait(timeout=30) and recording_slot.calls == [(ACCEPTED, False)]


# ----- discard: --overwrite and the dashboard's Delete ---------------------------------------------

HOLDER = """
import sys
from moda_core.runs import RunLock
lock = RunLock(sys.argv[1])
print("locked" if lock.acquire() else "refused", flush=True)
sys.stdin.read()  # hold the lock until the test closes our stdin
"""


def _a_run(folder: Path, name: str = "old") -> Path:
    run_dir = folder / name
    shutil.copytree(DEMO / "swap-weak", run_dir, ignore=shutil.ignore_patterns("checkpoints"))
    return run_dir


def test_discard_is_refused_while_a_lock_is_held_in_this_process(tmp_path):
    run_dir = _a_run(tmp_path)
    lock = runs.RunLock(run_dir)
    assert lock.acquire()
    try:
        with pytest.raises(ModaError, match="is training now"):
            runs.discard_run(run_dir)
        assert (run_dir / runs.MODEL).exists()
    finally:
        lock.release()
    runs.discard_run(run_dir)
    assert list(tmp_path.iterdir()) == []  # gone, nothing hidden left behind


@pytest.mark.slow  # a second Python process importing torch: a few seconds
def test_discard_is_refused_while_another_process_trains_into_the_run(tmp_path):
    run_dir = _a_run(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ModaError, match=rf"is training now \(process {holder.pid}\)"):
            runs.discard_run(run_dir)
        assert (run_dir / runs.MODEL).exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    runs.discard_run(run_dir)
    assert not run_dir.exists()


def test_discard_refuses_what_is_not_a_run_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    for path in (tmp_path / "file", tmp_path / "absent"):
        with pytest.raises(ModaError, match="not a run folder"):
            runs.discard_run(path)


@pytest.mark.usefixtures("dashboard_pages")
def test_the_dashboards_delete_goes_through_the_store_and_is_refused_while_the_run_trains(
        monkeypatch, tmp_path, recording_slot):
    run_dir = _a_run(tmp_path, "cut-short")
    config = json.loads((run_dir / runs.CONFIG).read_text())
    config["train"]["epochs"] += 10  # its last epochs never came: offered for resume and delete
    (run_dir / runs.CONFIG).write_text(json.dumps(config))
    monkeypatch.setenv("MODA_RUNS_DIR", str(tmp_path))
    discarded, lock = [], runs.RunLock(run_dir)
    real_discard = runs.discard_run

    def racing(path):
        discarded.append(Path(path).resolve())
        if len(discarded) == 1:
            assert lock.acquire()  # a training takes the run just as Delete is confirmed (a resume elsewhere)
        return real_discard(path)

    monkeypatch.setattr(runs, "discard_run", racing)
    app = open_page("runs")
    try:
        app.button(key="delete_cut-short").click().run()
        app.button(key="delete_yes_cut-short").click().run()
        assert not app.exception and (run_dir / runs.MODEL).exists()
        assert any("could not be deleted" in e.value and "is training now" in e.value for e in app.error)
        assert str(tmp_path) not in texts(app)  # the message names the run, not the server's path
    finally:
        lock.release()
    app = open_page("runs")
    app.button(key="delete_cut-short").click().run()
    app.button(key="delete_yes_cut-short").click().run()
    assert not app.exception and not run_dir.exists()
    assert discarded == [run_dir.resolve()] * 2 and recording_slot.calls == []


# ----- an OpenRun's life ---------------------------------------------------------------------------

def test_a_run_that_fails_before_its_config_leaves_no_folder_and_one_that_started_stays(tmp_path):
    with pytest.raises(RuntimeError), runs.create_run(tmp_path, "failed", "unused"):
        raise RuntimeError("the data set did not load")
    assert not (tmp_path / "failed").exists()
    with pytest.raises(RuntimeError), runs.create_run(tmp_path, "started", "unused") as opened:
        opened.write_config({"arch": {}})
        raise RuntimeError("the loss became NaN")
    assert (tmp_path / "started" / runs.CONFIG).exists()
    assert runs.training_pid(tmp_path / "started") is None  # the lock was released
    with pytest.raises(ModaError, match="already exists"):
        runs.create_run(tmp_path, "started", "unused")
    with runs.create_run(tmp_path, "started", "unused", overwrite=True) as opened:
        assert not (opened.path / runs.CONFIG).exists()  # a fresh folder in place of the old run


def test_resume_state_of_a_run_without_a_finished_epoch_and_of_runs_that_cannot_continue(tmp_path):
    started = tmp_path / "started"
    started.mkdir()
    arch = {"name": "lenet5", "in_channels": 1, "image_size": 28, "num_classes": 10, "width": 1.0}
    io.write_json(started / runs.CONFIG, {"arch": arch, "train": {"epochs": 3}})
    state = runs.resume_state(started)
    assert (state.train, state.epoch, state.history, state.momentum) == ({"epochs": 3}, 0, [], {})
    (tmp_path / "bare").mkdir()
    with pytest.raises(ModaError, match="has no config.json"):
        runs.resume_state(tmp_path / "bare")
    with pytest.raises(ModaError, match="missing tensor file .*optimizer"):
        runs.resume_state(_a_run(tmp_path, "bundled"))  # the bundled demo ships no optimizer state
