"""The run store under crashes, races and hostile folders (docs/design.md, Run store and its commit protocol)."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import moda_core.io as store_io
import moda_core.train as train_module
from moda_core import cli, runs
from moda_core.decompose import decompose, decomposition_dir, masks_file, masks_from_rates
from moda_core.errors import ModaError
from moda_core.runs import list_runs, load_run
from moda_core.store import listing
from moda_core.train import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(model="lenet5", width=0.25, train_fraction=0.1, seed=3)  # about a second per epoch on a CPU


def tiny(**overrides) -> TrainConfig:
    return TrainConfig(**{**TINY, "epochs": 2, **overrides})


def leftovers(run_dir: Path) -> list[str]:
    """Staged or temporary files a crash could leave behind."""
    names = [p.name for p in run_dir.iterdir()] + [p.name for p in (run_dir / runs.CHECKPOINTS).glob("*")]
    return sorted(n for n in names if n.endswith(".tmp") or ".tmp-" in n or re.match(r"\.e\d{4}\.", n))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train(tiny(), tmp_path_factory.mktemp("tiny"), "tiny")


def test_a_run_has_readable_names_and_one_commit_record(tiny_run):
    names = {p.name for p in tiny_run.path.iterdir()}
    assert {runs.CONFIG, runs.MODEL, runs.OPTIMIZER, runs.HISTORY, runs.METRICS, runs.COMMIT} <= names
    assert store_io.read_json(tiny_run.path / runs.COMMIT)["epoch"] == 2
    assert leftovers(tiny_run.path) == []


# ----- crash during an epoch's save -------------------------------------------------------------

class Crash(Exception):
    pass


def _count_save_steps(tmp_path, monkeypatch) -> tuple[int, int]:
    """How many file writes and renames one epoch's save makes (with a periodic checkpoint)."""
    counts = {"write": 0, "rename": 0, "armed": False}
    real_write, real_replace = store_io.atomic_write_bytes, os.replace

    def write(path, data, **kwargs):
        counts["write"] += counts["armed"]
        return real_write(path, data, **kwargs)

    def replace(src, dst):
        counts["rename"] += counts["armed"] and bool(re.match(r"\.e\d{4}\.", Path(src).name))
        return real_replace(src, dst)

    def arm(event):
        if event.stage == "epoch" and event.epoch == 1:
            counts["armed"] = True
        elif event.stage == "epoch":
            counts["armed"] = False

    monkeypatch.setattr(store_io, "atomic_write_bytes", write)
    monkeypatch.setattr(os, "replace", replace)
    train(tiny(checkpoint_every=1), tmp_path, "count", progress=arm)
    monkeypatch.undo()
    return counts["write"], counts["rename"]


@pytest.mark.slow
def test_a_crash_at_every_step_of_an_epoch_save_leaves_a_run_that_loads_and_resumes_bit_exactly(
        tmp_path, monkeypatch):
    config = dict(epochs=3, checkpoint_every=1)
    straight = train(tiny(**config), tmp_path, "straight")
    writes, renames = _count_save_steps(tmp_path, monkeypatch)
    assert writes == 6 and renames == 4  # checkpoint, optimizer, model, history, metrics, commit; 4 renames
    real_write, real_replace = store_io.atomic_write_bytes, os.replace
    for step in range(1, writes + renames + 1):
        name = f"crash-{step}"
        state = {"armed": False, "n": 0}

        def write(path, data, state=state, step=step, **kwargs):
            if state["armed"]:
                state["n"] += 1
                if state["n"] == step:  # die half-way through this write, as a kill -9 would
                    Path(path).with_name(f".{Path(path).name}.crash.tmp").write_bytes(data[: len(data) // 2])
                    raise Crash(f"write {step}")
            return real_write(path, data, **kwargs)

        def replace(src, dst, state=state, step=step):
            if state["armed"] and re.match(r"\.e\d{4}\.", Path(src).name):
                state["n"] += 1
                if state["n"] == step:
                    raise Crash(f"rename {step}")
            return real_replace(src, dst)

        def arm(event, state=state):
            if event.stage == "epoch" and event.epoch == 1:
                state["armed"] = True  # crash inside epoch 2's save

        monkeypatch.setattr(store_io, "atomic_write_bytes", write)
        monkeypatch.setattr(os, "replace", replace)
        with pytest.raises(Crash):
            train(tiny(**config), tmp_path, name, progress=arm)
        monkeypatch.undo()

        run_dir = tmp_path / name
        committed = 2 if step > writes else 1  # the commit record is the last write
        loaded = load_run(run_dir)
        assert loaded.epoch == committed and loaded.spec == str(run_dir), step
        assert [row["epoch"] for row in loaded.history] == list(range(1, committed + 1)), step
        assert loaded.metrics["epochs_done"] == committed, step
        summary = {s.name: s for s in list_runs(tmp_path)}[name]
        assert (summary.status, summary.epochs_done, summary.error) == ("interrupted", committed, None), step

        resumed = train(tiny(**config), tmp_path, name, resume=True)
        assert leftovers(run_dir) == [], step
        assert [row["epoch"] for row in resumed.history] == [1, 2, 3], step
        assert runs.list_checkpoints(run_dir) == [1, 2, 3], step
        for key, value in straight.model.state_dict().items():
            assert torch.equal(value, resumed.model.state_dict()[key]), (step, key)


def test_a_run_without_commit_record_is_read_as_before(tiny_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(tiny_run.path, old)
    (old / runs.COMMIT).unlink()
    (old / runs.LOCK).unlink()
    run = load_run(old)
    assert run.epoch == 2 and run.spec == str(old)
    assert {s.name: s for s in list_runs(tmp_path)}["old"].status == "complete"


def test_readers_see_the_committed_epoch_before_its_files_are_renamed(tiny_run, tmp_path):
    """Commit record written, staged files not yet renamed: readers take the staged files."""
    run_dir = tmp_path / "half-renamed"
    shutil.copytree(tiny_run.path, run_dir)
    for name in (runs.MODEL, runs.METRICS):  # pretend epoch 3 committed, those two still staged
        os.replace(run_dir / name, run_dir / runs.staged_name(name, 3))
    weights = store_io.load_tensors(run_dir / runs.staged_name(runs.MODEL, 3))[0]
    store_io.save_tensors(run_dir / runs.staged_name(runs.MODEL, 3), weights, {"epoch": 3})
    metrics = store_io.read_json(run_dir / runs.staged_name(runs.METRICS, 3))
    store_io.write_json(run_dir / runs.staged_name(runs.METRICS, 3), {**metrics, "epochs_done": 3})
    store_io.write_json(run_dir / runs.COMMIT, {"epoch": 3, "files": sorted(runs.COMMITTED_FILES)})
    (run_dir / runs.MODEL).write_bytes(b"stale")  # must not be read
    assert load_run(run_dir).epoch == 3
    assert runs.recover(run_dir) == 3
    assert runs.weights_epoch(run_dir / runs.MODEL) == 3 and leftovers(run_dir) == []


# ----- same-name race and default names ---------------------------------------------------------

RACER = """
import sys, time
start = float(sys.argv[1])
from moda_core import cli
while time.time() < start:
    time.sleep(0.001)
sys.exit(cli.main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_two_processes_training_the_same_name_at_once_one_wins_the_other_touches_nothing(tmp_path):
    start = time.time() + 12  # both have imported torch by then
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(start), "train", "--model", "lenet5", "--width", "0.25",
                               "--train-fraction", "0.1", "--epochs", "1", "--seed", str(seed), "--runs-dir",
                               str(tmp_path), "--name", "same", "--json"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in (11, 22)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    winner = next(i for i, (code, _, _) in enumerate(results) if code == 0)
    _, _, loser_err = results[1 - winner]
    error_lines = [line for line in loser_err.splitlines() if line.strip()]
    assert len(error_lines) == 1 and error_lines[0].startswith("error: ") and "already exists" in error_lines[0]
    run = load_run(tmp_path / "same")
    assert run.config["train"]["seed"] == (11, 22)[winner]
    assert [s.name for s in list_runs(tmp_path)] == ["same"]


def test_default_names_never_collide(tmp_path):
    config = tiny()
    first = train_module.default_run_name(config)
    assert re.fullmatch(r"lenet5-mnist5k-moda-\d{8}-\d{6}-\d{3}", first)
    folders = []
    for _ in range(3):
        with runs.create_run(tmp_path, None, "fixed") as opened:
            folders.append(opened.path.name)
    assert folders == ["fixed", "fixed-2", "fixed-3"]


def test_existing_name_is_refused_before_anything_is_written(tiny_run):
    before = {p.name: p.read_bytes() for p in tiny_run.path.iterdir() if p.is_file()}
    with pytest.raises(ModaError, match="already exists") as refused:
        train(tiny(), tiny_run.path.parent, tiny_run.name)
    assert "--overwrite" in refused.value.hint  # for the command line; the message itself has no flag
    assert {p.name: p.read_bytes() for p in tiny_run.path.iterdir() if p.is_file()} == before


# ----- Run.spec and the weights' own epoch ------------------------------------------------------

@pytest.mark.parametrize("metrics", [None, {"epochs_done": 7, "status": "complete"}, {"epochs_done": 1}])
def test_spec_comes_from_the_weights_not_from_metrics(tiny_run, tmp_path, metrics):
    run_dir = tmp_path / "lying"
    shutil.copytree(tiny_run.path, run_dir)
    if metrics is None:
        (run_dir / runs.METRICS).unlink()
    else:
        (run_dir / runs.METRICS).write_text(json.dumps(metrics))
    (run_dir / runs.COMMIT).unlink()  # an older run: nothing but the files themselves
    run = load_run(run_dir)
    assert run.epoch == 2 and run.spec == str(run_dir)
    assert decomposition_dir(run) == run_dir
    decompose(run)  # opens the weights that exist (no checkpoint file for epoch 2 was ever written)
    assert (run_dir / "rates.safetensors").exists()
    summary = list_runs(tmp_path)[0]
    assert summary.epochs_done == 2 and summary.status == "complete"


# ----- stranded runs: interrupted, resume, overwrite --------------------------------------------

def test_a_run_whose_lock_is_held_is_running_and_cannot_be_taken(tiny_run, tmp_path):
    run_dir = tmp_path / "busy"
    shutil.copytree(tiny_run.path, run_dir)
    lock = runs.RunLock(run_dir)
    assert lock.acquire()
    try:
        summary = list_runs(tmp_path)[0]
        assert summary.status == "running" and summary.pid == os.getpid()
        with pytest.raises(ModaError, match="is training now"):
            train(tiny(), tmp_path, "busy", resume=True)
        with pytest.raises(ModaError, match="is training now"):
            train(tiny(), tmp_path, "busy", overwrite=True)
    finally:
        lock.release()
    assert list_runs(tmp_path)[0].status == "complete"


@pytest.mark.slow
def test_nan_in_epoch_1_leaves_an_interrupted_run_that_resume_or_overwrite_handle(tmp_path):
    with pytest.raises(ModaError, match="NaN or infinite in epoch 1"):
        train(tiny(lr=1e30), tmp_path, "nan")  # diverges at once
    summary = list_runs(tmp_path)[0]
    assert summary.status == "interrupted" and "no finished epoch" in summary.error
    assert not summary.loadable
    with pytest.raises(ModaError, match="already exists"):
        train(tiny(), tmp_path, "nan")
    config = store_io.read_json(tmp_path / "nan" / runs.CONFIG)
    config["train"]["lr"] = 0.05  # the user fixes the stored config, then continues it
    store_io.write_json(tmp_path / "nan" / runs.CONFIG, config)
    resumed = train(tiny(), tmp_path, "nan", resume=True)  # no epoch to keep: starts again, stored config
    assert resumed.epoch == 2 and list_runs(tmp_path)[0].status == "complete"
    replaced = train(tiny(epochs=1, seed=9), tmp_path, "nan", overwrite=True)
    assert replaced.epoch == 1 and replaced.config["train"]["seed"] == 9
    assert [p.name for p in tmp_path.iterdir()] == ["nan"]  # the old folder is gone, nothing hidden left


@pytest.mark.slow
def test_a_killed_training_is_listed_interrupted_and_resumes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "moda_core", "train", "--model", "lenet5", "--width", "0.25",
                             "--train-fraction", "0.1", "--epochs", "4", "--seed", "3", "--runs-dir", str(tmp_path),
                             "--name", "killed"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not (tmp_path / "killed" / runs.COMMIT).exists():
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.2)
        summary = list_runs(tmp_path)[0]
        assert summary.status == "running" and summary.pid == proc.pid
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    summary = list_runs(tmp_path)[0]
    assert summary.status == "interrupted" and summary.pid is None and 1 <= summary.epochs_done < 4
    assert cli.main(["train", "--runs-dir", str(tmp_path), "--name", "killed", "--resume", "--epochs", "1"]) == 0
    summary = list_runs(tmp_path)[0]
    assert summary.status == "complete" and summary.epochs_done == 4  # the stored plan wins
    assert leftovers(tmp_path / "killed") == []


# ----- tau collisions ---------------------------------------------------------------------------

def test_masks_are_keyed_and_checked_by_the_exact_tau(tiny_run, tmp_path):
    run_dir = tmp_path / "tau"
    shutil.copytree(tiny_run.path, run_dir)
    run = load_run(run_dir)
    at_90 = decompose(run, 0.9)
    at_895 = decompose(run, 0.895)
    assert masks_file(0.9) == "masks-tau0.90.safetensors" != masks_file(0.895)
    assert masks_file(0.895) != masks_file(0.8951) and masks_file(0.905) != masks_file(0.9)
    assert at_895.tau == 0.895 and store_io.read_tensor_metadata(run_dir / masks_file(0.895))["tau"] == "0.895"
    for tau, found in ((0.9, at_90), (0.895, at_895)):
        expected = masks_from_rates(found.rates, tau)
        assert all(torch.equal(found.masks[p], expected[p]) for p in expected)
        again = decompose(load_run(run_dir), tau)
        assert all(torch.equal(again.masks[p], expected[p]) for p in expected)
    # a masks file whose stored tau is not the one asked for is never trusted
    wrong = {p: ~m for p, m in at_90.masks.items()}
    store_io.save_tensors(run_dir / masks_file(0.9), wrong, {"weights": store_io.read_tensor_metadata(
        run_dir / "rates.safetensors")["weights"], "tau": "0.895"})
    again = decompose(load_run(run_dir), 0.9)
    assert all(torch.equal(again.masks[p], at_90.masks[p]) for p in at_90.masks)


# ----- broken runs ------------------------------------------------------------------------------

def test_truncated_or_mismatched_or_non_finite_runs_are_broken_not_healthy(tiny_run, tmp_path):
    truncated = tmp_path / "truncated"
    shutil.copytree(tiny_run.path, truncated)
    data = (truncated / runs.MODEL).read_bytes()
    (truncated / runs.MODEL).write_bytes(data[: len(data) - 100])
    mismatched = tmp_path / "mismatched"
    shutil.copytree(tiny_run.path, mismatched)
    config = store_io.read_json(mismatched / runs.CONFIG)
    config["arch"]["width"] = 0.5  # a valid config whose model is not the one in the weights file
    store_io.write_json(mismatched / runs.CONFIG, config)
    nonfinite = tmp_path / "nonfinite"
    shutil.copytree(tiny_run.path, nonfinite)
    tensors, meta = store_io.load_tensors(nonfinite / runs.MODEL)
    first = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[first] = tensors[first].clone()
    tensors[first].view(-1)[0] = float("nan")
    store_io.save_tensors(nonfinite / runs.MODEL, tensors, meta)
    shutil.copytree(tiny_run.path, tmp_path / "healthy")

    summaries = {s.name: s for s in list_runs(tmp_path)}
    assert summaries["healthy"].status == "complete" and summaries["healthy"].loadable
    assert summaries["truncated"].status == "broken" and "truncated" in summaries["truncated"].error
    assert summaries["mismatched"].status == "broken" and "shape mismatch" in summaries["mismatched"].error
    assert not summaries["truncated"].loadable and not summaries["mismatched"].loadable
    with pytest.raises(ModaError, match="non-finite weights"):
        load_run(nonfinite)


# ----- read-only run folders --------------------------------------------------------------------

def test_read_only_run_folder_decomposes_in_memory_and_caches_for_the_user(tiny_run, tmp_path, monkeypatch,
                                                                           capsys):
    run_dir = tmp_path / "shared" / "ro"
    shutil.copytree(tiny_run.path, run_dir)
    for name in ("rates.safetensors", masks_file(0.9)):
        (run_dir / name).unlink(missing_ok=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    real = store_io.atomic_write_bytes

    def read_only(path, data, **kwargs):
        if Path(path).resolve().is_relative_to(run_dir.resolve()):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, data, **kwargs)

    monkeypatch.setattr(store_io, "atomic_write_bytes", read_only)
    first = decompose(load_run(run_dir), 0.9)
    assert "not writable" in first.note and "cached in" in first.note
    assert not (run_dir / "rates.safetensors").exists()
    again = decompose(load_run(run_dir), 0.8)  # from the cache: rates reused
    assert "user cache" in again.note
    assert all(torch.equal(again.rates[p], first.rates[p]) for p in first.rates)

    assert cli.main(["compose", str(run_dir), "--classes", "0", "1"]) == 0
    err = capsys.readouterr().err
    assert err.count("info: ") == 1 and "Traceback" not in err


# ----- one-line errors --------------------------------------------------------------------------

def _error_line(capsys, argv) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_one_line_errors_for_bad_folders_and_outputs(tiny_run, tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert "is a file" in _error_line(capsys, ["train", "--runs-dir", str(a_file), "--epochs", "1"])
    assert "is a file" in _error_line(capsys, ["runs", "--runs-dir", str(a_file)])
    assert "error" in _error_line(capsys, ["train", "--runs-dir", str(a_file / "sub"), "--epochs", "1"])
    assert "is a folder" in _error_line(capsys, ["compose", str(tiny_run.path), "--classes", "0", "1",
                                                 "--out", str(tmp_path)])
    assert "is a folder" in _error_line(capsys, ["subtasks", str(tiny_run.path), "--csv", str(tmp_path)])
    assert "at least 2 classes" in _error_line(capsys, ["train", "--runs-dir", str(tmp_path / "r"), "--classes", "3"])
    assert not (tmp_path / "r").exists()
    unwritable = tmp_path / "locked"
    unwritable.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == unwritable else real_access(p, mode))
    assert "not writable" in _error_line(capsys, ["train", "--runs-dir", str(unwritable), "--epochs", "1"])


def test_json_output_never_holds_nan(capsys):
    args = cli.parser().parse_args(["runs", "--json"])
    cli.emit(args, {"accuracy": float("nan"), "rows": [{"x": float("inf")}, 1.5]}, "")
    out = capsys.readouterr().out
    assert "NaN" not in out and "Infinity" not in out
    assert json.loads(out) == {"accuracy": None, "rows": [{"x": None}, 1.5]}


# ----- torchrun without --name ------------------------------------------------------------------

@pytest.mark.slow
def test_torchrun_without_name_trains_into_one_folder_chosen_by_rank_0(tmp_path):
    from helpers import torchrun

    torchrun("train", "--model", "lenet5", "--width", "0.25", "--train-fraction", "0.1", "--epochs", "1",
             "--runs-dir", str(tmp_path), "--json")
    folders = [p.name for p in tmp_path.iterdir()]
    assert len(folders) == 1 and folders[0].startswith("lenet5-mnist5k-moda-")
    assert load_run(tmp_path / folders[0]).epoch == 1


def test_listing_reads_a_settled_run_folder_once_and_again_after_any_change(tiny_run, tmp_path, monkeypatch):
    """Pages list the runs several times a view: a folder whose entries have not changed is not read again (every
    caller is handed the same immutable summary), a change to any file is seen at once, and a folder written to in
    the last two seconds is always read afresh (a rewrite within the clock's granularity could keep its times)."""
    run_dir = tmp_path / "kept"
    shutil.copytree(tiny_run.path, run_dir)
    reads = []
    real = listing._fill_summary
    monkeypatch.setattr(listing, "_fill_summary",
                        lambda path, running, found: (reads.append(path.name), real(path, running, found)))
    list_runs(tmp_path)
    list_runs(tmp_path)
    assert reads == ["kept", "kept"]  # just copied: not settled, read every time
    monkeypatch.setattr(listing, "_SETTLED_NS", 0)
    first = list_runs(tmp_path)[0]
    again = list_runs(tmp_path)[0]
    assert len(reads) == 3 and again == first
    with pytest.raises(dataclasses.FrozenInstanceError):
        again.checkpoints = (*again.checkpoints, 99)  # no caller can change what another is handed
    assert isinstance(again.checkpoints, tuple) and list_runs(tmp_path)[0] == first and len(reads) == 3
    metrics = store_io.read_json(run_dir / runs.METRICS)
    metrics["test_accuracy"] = 0.125
    (run_dir / runs.METRICS).write_text(json.dumps(metrics, indent=2))
    changed = list_runs(tmp_path)[0]
    assert len(reads) == 4 and changed.test_accuracy == 0.125
