"""A run folder never reaches outside itself, a trainer notices when its folder is moved or deleted, and a full
disk leaves nothing half-made: symbolic links in runs folders, renames during a training, ENOSPC at every write.

The runs here are made through the store's own API from an untrained model (no training step), so all but the
subprocess tests run in the fast lane."""
from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import moda_core.io as store_io
from moda_core import cli, runs
from moda_core.decompose import decompose, masks_file
from moda_core.errors import ModaError
from moda_core.methods import method_of
from moda_core.models import build_model
from moda_core.runs import list_runs, load_run
from moda_core.train import TrainConfig, data_for_config, make_config_record

ROOT = Path(__file__).resolve().parent.parent
SMALL = dict(model="lenet5", width=0.25, train_fraction=0.1, seed=3)
NO_SPACE = "No space left on device"


def _parts(epochs: int = 1) -> tuple[TrainConfig, torch.nn.Module, torch.optim.Optimizer, dict]:
    config = TrainConfig(**SMALL, epochs=epochs, checkpoint_every=1)
    data = data_for_config(config, torch.device("cpu"))
    torch.manual_seed(0)
    model = method_of(config).prepare(build_model(config.model, data.info.in_channels, data.info.image_size,
                                                  data.num_classes, config.width))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return config, model, optimizer, make_config_record(config, model, data, torch.device("cpu"))


def _row(epoch: int) -> dict[str, float]:
    return {"epoch": epoch, "ce": 2.3, "affinity": 0.0, "dispersion": 0.0, "compactness": 0.0,
            "train_accuracy": 0.1, "test_accuracy": 0.1, "seconds": 1.0, "train_seconds": 1.0}


def _save(opened: runs.OpenRun, model, optimizer, epoch: int, epochs: int) -> None:
    opened.save_epoch(epoch, model, optimizer, [_row(e) for e in range(1, epoch + 1)],
                      {"status": "complete" if epoch == epochs else "running", "epochs": epochs,
                       "test_accuracy": 0.1, "train_accuracy": 0.1}, checkpoint=True)


def _untrained_run(runs_dir: Path, name: str) -> Path:
    """A complete two-epoch run (with checkpoints, ``RUN@1`` being an earlier one) of the untrained model."""
    _, model, optimizer, record = _parts(epochs=2)
    with runs.create_run(runs_dir, name, "unused") as opened:
        opened.write_config(record)
        _save(opened, model, optimizer, 1, 2)
        _save(opened, model, optimizer, 2, 2)
    return runs_dir / name


@pytest.fixture(scope="module")
def made_run(tmp_path_factory) -> Path:
    return _untrained_run(tmp_path_factory.mktemp("made"), "made")


def _tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its contents (None for a folder), to tell that nothing changed."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))}


# ----- symbolic links: broken, never loaded, never written through ------------------------------

def test_a_run_folder_that_is_or_holds_a_symbolic_link_is_broken_and_does_not_load(made_run, tmp_path):
    victim = tmp_path / "elsewhere" / "victim"
    shutil.copytree(made_run, victim)
    before = _tree(victim)
    folder = tmp_path / "runs"
    shutil.copytree(made_run, folder / "good")
    (folder / "link").symlink_to(victim, target_is_directory=True)  # a whole run folder as a link
    for name, relative in (("weights", runs.MODEL), ("config", runs.CONFIG), ("checkpoints", runs.CHECKPOINTS),
                           ("checkpoint", f"{runs.CHECKPOINTS}/epoch-0001.safetensors"), ("lock", runs.LOCK)):
        shutil.copytree(made_run, folder / name)
        target = folder / name / relative
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        target.symlink_to(victim / relative)
    summaries = {s.name: s for s in list_runs(folder)}
    assert summaries["good"].status == "complete" and summaries["good"].error is None
    broken = sorted(n for n in summaries if n != "good")
    assert broken == ["checkpoint", "checkpoints", "config", "link", "lock", "weights"]
    for name in broken:
        assert summaries[name].status == "broken" and not summaries[name].loadable, name
        assert "is a symbolic link: run folders must hold plain files" in summaries[name].error, name
        for spec in (folder / name, f"{folder / name}@1"):
            with pytest.raises(ModaError, match="is a symbolic link"):
                load_run(spec)
    with pytest.raises(ModaError, match="is a symbolic link"):
        runs.open_for_resume(folder / "lock")  # the lock file is never opened through the link
    assert _tree(victim) == before


def test_decompose_never_writes_outside_the_run_folder(made_run, tmp_path, monkeypatch):
    """A link put in place after the run was loaded (the run folder, its checkpoints folder or a decomposition
    file) is refused at the write: the decomposition goes to the user cache and the target is untouched."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    victim = tmp_path / "elsewhere"
    shutil.copytree(made_run, victim / "run")
    (victim / "file").write_bytes(b"victim")
    before = _tree(victim)

    def swapped(name: str, spec_suffix: str, swap) -> str:
        run_dir = tmp_path / "runs" / name
        shutil.copytree(made_run, run_dir)
        run = load_run(f"{run_dir}{spec_suffix}")
        swap(run_dir)
        return decompose(run, 0.9).note

    def folder_link(run_dir: Path) -> None:
        run_dir.rename(run_dir.with_name(".aside"))
        run_dir.symlink_to(victim / "run", target_is_directory=True)

    def checkpoints_link(run_dir: Path) -> None:
        shutil.rmtree(run_dir / runs.CHECKPOINTS)
        (run_dir / runs.CHECKPOINTS).symlink_to(victim / "run" / runs.CHECKPOINTS, target_is_directory=True)

    def file_link(run_dir: Path) -> None:
        (run_dir / masks_file(0.9)).symlink_to(victim / "file")

    for name, suffix, swap in (("folder", "", folder_link), ("checkpoints", "@1", checkpoints_link),
                               ("file", "", file_link)):
        note = swapped(name, suffix, swap)
        assert note is not None and "is a symbolic link" in note and "cached in" in note, (name, note)
        assert _tree(victim) == before, name
    assert (tmp_path / "runs" / "file" / masks_file(0.9)).is_symlink()  # not replaced by a file either


def test_writes_into_a_run_folder_stay_inside_it(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (tmp_path / "outside").mkdir()
    (run_dir / "sub").symlink_to(tmp_path / "outside", target_is_directory=True)
    for path, match in ((run_dir / "sub" / "x", "is a symbolic link"),
                        (tmp_path / "outside" / "x", "not a file inside"),
                        (run_dir / ".." / "outside" / "x", "not a file inside"),
                        (tmp_path / "gone" / "x", "no longer exists")):
        with pytest.raises(ModaError, match=match):
            store_io.atomic_write_bytes(path, b"x", inside=path.parent if "gone" in str(path) else run_dir)
    assert list((tmp_path / "outside").iterdir()) == [] and not (tmp_path / "gone").exists()
    store_io.save_tensors(run_dir / "checkpoints" / "epoch-0001" / "rates.safetensors", {"a": torch.ones(1)},
                          inside=run_dir)  # subfolders are made, one by one
    assert (run_dir / "checkpoints" / "epoch-0001" / "rates.safetensors").is_file()


# ----- the trainer holds its folder -------------------------------------------------------------

@pytest.mark.parametrize("how", ["rename", "delete"])
def test_an_open_run_whose_folder_was_moved_or_deleted_saves_nothing_and_recreates_nothing(tmp_path, how):
    _, model, optimizer, record = _parts(epochs=3)
    run_dir = tmp_path / "runs" / "moving"
    with pytest.raises(ModaError) as caught, runs.create_run(tmp_path / "runs", "moving", "unused") as opened:
        opened.write_config(record)
        _save(opened, model, optimizer, 1, 3)
        if how == "rename":
            run_dir.rename(tmp_path / "runs" / "moved")
        else:
            shutil.rmtree(run_dir)
        _save(opened, model, optimizer, 2, 3)
    assert str(caught.value) == f"run folder {run_dir} was moved or deleted during training; epoch 2 was not saved"
    assert not run_dir.exists() and not run_dir.is_symlink()
    if how == "rename":
        moved = load_run(tmp_path / "runs" / "moved")
        assert moved.epoch == 1 and runs.training_pid(moved.path) is None  # kept its commit, lock released


def test_an_open_run_whose_folder_was_replaced_writes_nothing_into_the_new_one(tmp_path):
    _, model, optimizer, record = _parts(epochs=3)
    run_dir = tmp_path / "replaced"
    with pytest.raises(ModaError, match="was moved or deleted during training; epoch 2 was not saved"), \
            runs.create_run(tmp_path, "replaced", "unused") as opened:
        opened.write_config(record)
        _save(opened, model, optimizer, 1, 3)
        run_dir.rename(tmp_path / "old")
        run_dir.mkdir()  # another folder under the same name
        _save(opened, model, optimizer, 2, 3)
    assert list(run_dir.iterdir()) == []


TRAIN = ["-m", "moda_core", "train", "--model", "lenet5", "--width", "0.25", "--train-fraction", "0.1",
         "--epochs", "8", "--seed", "3"]


@pytest.mark.slow  # a CLI training in a second process
@pytest.mark.parametrize("how", ["rename", "delete"])
def test_a_training_whose_folder_is_moved_or_deleted_stops_with_one_error_line(tmp_path, how):
    run_dir = tmp_path / "moving"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, *TRAIN, "--runs-dir", str(tmp_path), "--name", "moving"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not (run_dir / runs.COMMIT).exists():  # epoch 1 is committed
            assert time.time() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        if how == "rename":
            run_dir.rename(tmp_path / "moved")
        else:
            while run_dir.exists():  # the trainer may add a file while the tree is removed: again
                shutil.rmtree(run_dir, ignore_errors=True)
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, err
    assert len(errors) == 1 and "Traceback" not in err, err
    assert re.fullmatch(rf"error: run folder {re.escape(str(run_dir))} was moved or deleted during training; "
                        r"epoch \d+ was not saved", errors[0]), errors
    assert not run_dir.exists() and not run_dir.is_symlink()  # nothing recreated at the old path
    assert sorted(p.name for p in tmp_path.iterdir()) == (["moved"] if how == "rename" else [])
    if how == "rename":
        assert load_run(tmp_path / "moved").epoch >= 1


# ----- a full disk ------------------------------------------------------------------------------

def _disk_full_at(monkeypatch, step: int) -> dict[str, int]:
    """The ``step``-th file write from now on fails as on a full disk: fsync raises ENOSPC without a file name
    (as the kernel reports it), inside moda_core.io's real writer."""
    real_fsync, state = os.fsync, {"n": 0}

    def fsync(fd: int) -> None:
        state["n"] += 1
        if state["n"] == step:
            raise OSError(errno.ENOSPC, NO_SPACE)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return state


def _all_names(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))


@pytest.mark.parametrize("step", range(1, 7))  # checkpoint, optimizer, model, history, metrics, commit record
def test_a_full_disk_at_any_write_of_a_commit_leaves_the_last_commit_and_nothing_staged(tmp_path, monkeypatch,
                                                                                        step):
    _, model, optimizer, record = _parts(epochs=3)
    opened = runs.create_run(tmp_path, "full", "unused")
    try:
        opened.write_config(record)
        _save(opened, model, optimizer, 1, 3)
        committed = _all_names(opened.path)
        _disk_full_at(monkeypatch, step)
        with pytest.raises(OSError) as caught:
            _save(opened, model, optimizer, 2, 3)
        monkeypatch.undo()
        assert _all_names(opened.path) == committed  # no staged, temporary or checkpoint file of epoch 2
        assert caught.value.errno == errno.ENOSPC and caught.value.filename is not None
        assert Path(caught.value.filename).parent in (opened.path, opened.path / runs.CHECKPOINTS)
        assert load_run(opened.path).epoch == 1
    finally:
        opened.close()


def test_a_full_disk_as_a_run_starts_leaves_no_folder_and_the_name_free(tmp_path, monkeypatch):
    # the lock file
    real_write = os.write

    def full(fd, data):
        raise OSError(errno.ENOSPC, NO_SPACE)

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError) as caught:
        runs.create_run(tmp_path, "new", "unused")
    monkeypatch.setattr(os, "write", real_write)
    assert list(tmp_path.iterdir()) == []
    assert caught.value.filename == str(tmp_path / "new" / runs.LOCK)
    # config.json
    _, _, _, record = _parts()
    _disk_full_at(monkeypatch, 1)
    with pytest.raises(OSError, match=NO_SPACE), runs.create_run(tmp_path, "new", "unused") as opened:
        opened.write_config(record)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
    with runs.create_run(tmp_path, "new", "unused") as opened:  # the name is free
        assert opened.path == tmp_path / "new"


def test_the_command_line_names_the_file_a_full_disk_refused(tmp_path, monkeypatch, capsys):
    _disk_full_at(monkeypatch, 1)  # config.json: the first file a new training writes
    argv = ["train", "--model", "lenet5", "--width", "0.25", "--train-fraction", "0.1", "--epochs", "1",
            "--runs-dir", str(tmp_path), "--name", "full"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'full' / runs.CONFIG}: {NO_SPACE}"]
    assert list(tmp_path.iterdir()) == []  # no folder left to block the name


def test_an_os_error_without_a_file_is_one_line_without_a_double_colon(monkeypatch, capsys):
    def full(args):
        raise OSError(errno.ENOSPC, NO_SPACE)

    monkeypatch.setitem(cli.COMMANDS, "runs", full)
    assert cli.main(["runs"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {NO_SPACE} (while running moda runs)"]
    assert cli.os_error_line(OSError(errno.EACCES, "Permission denied", "/x/y"), "z") == "/x/y: Permission denied"
