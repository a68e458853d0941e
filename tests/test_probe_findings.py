"""The findings of the last adversarial probe, one test each (the runs-folder-is-code finding:
test_import_policy.py; the fuzzing of stored files: test_store_untrusted.py)."""
from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
from helpers import DEMO

from moda_core import cli, io, runs
from moda_core.decompose import RATES_FILE, decompose, load_decomposition, masks_file
from moda_core.errors import ModaError
from moda_core.runs import RunRef, list_runs, load_run
from moda_core.train import TrainConfig

SOURCE = DEMO / "swap-weak"


def copy_run(runs_dir: Path, name: str = "run", checkpoints: bool = True) -> Path:
    target = runs_dir / name
    shutil.copytree(SOURCE, target, ignore=None if checkpoints else shutil.ignore_patterns("checkpoints"))
    return target


def error_line(capsys, argv: list[str]) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# ----- outputs never replace what is not a regular file -----------------------------------------------

def specials(folder: Path) -> dict[str, Path]:
    """A FIFO, a socket, a folder, a link to the FIFO and a character device (/dev/null, through a link)."""
    folder.mkdir()
    os.mkfifo(folder / "fifo")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "socket"))
    (folder / "folder").mkdir()
    (folder / "to-fifo").symlink_to(folder / "fifo")
    (folder / "to-null").symlink_to("/dev/null")
    return {name: folder / name for name in ("fifo", "socket", "folder", "to-fifo", "to-null")}


def test_outputs_refuse_devices_fifos_sockets_folders_and_links_to_them(tmp_path, capsys):
    run = copy_run(tmp_path / "runs", checkpoints=False)
    for name, path in specials(tmp_path / "special").items():
        for argv in (["compose", str(run), "--classes", "3", "5", "--out", str(path)],
                     ["subtasks", str(run), "--sizes", "2", "--samples", "1", "--csv", str(path)]):
            line = error_line(capsys, argv)
            assert "not a regular file: it is not replaced" in line or "is a folder" in line, (name, line)
        with pytest.raises(ModaError, match="not a regular file: it is not replaced"):
            io.atomic_write_bytes(path, b"x")
    assert (tmp_path / "special" / "fifo").is_fifo() and (tmp_path / "special" / "socket").is_socket()
    assert Path("/dev/null").is_char_device()
    regular = tmp_path / "m.pt2"
    regular.write_text("an old export")
    assert cli.main(["compose", str(run), "--classes", "3", "5", "--out", str(regular)]) == 0
    assert regular.stat().st_size > 1000  # a regular file is replaced, atomically, as before


# ----- resume continues the run it names ---------------------------------------------------------------

@pytest.mark.slow
def test_resume_keeps_the_runs_epoch_count_and_extends_only_when_asked(tmp_path, capsys):
    runs_dir = str(tmp_path)
    common = ["--model", "mlp", "--width", "0.25", "--train-fraction", "0.05", "--runs-dir", runs_dir]
    assert cli.main(["train", *common, "--epochs", "2", "--name", "done"]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--resume", "--name", "done", "--runs-dir", runs_dir]) == 0  # the printed command
    out, err = capsys.readouterr()
    assert "after 2 epochs" in out and "extending" not in err
    assert io.read_json(tmp_path / "done" / runs.METRICS)["epochs_done"] == 2
    assert cli.main(["train", "--resume", "--name", "done", "--runs-dir", runs_dir, "--epochs", "3"]) == 0
    out, err = capsys.readouterr()
    assert "extending done from 2 to 3 epochs" in err and "after 3 epochs" in out
    history = (tmp_path / "done" / runs.HISTORY).read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2", "3"]  # whole epoch numbers after a resume


# ----- browser Resume checks every setting -------------------------------------------------------------

@pytest.mark.parametrize("change,words", [
    (dict(compile=True), "torch.compile"), (dict(lr=5.0), "learning rate of 5.0"),
    (dict(momentum=1.5), "momentum of 1.5"), (dict(batch_size=4096), "batches of 4096"),
    (dict(width=2.0), "width ×2"), (dict(epochs=21), "21 epochs"), (dict(checkpoint_every=1, epochs=20), "checkpoints"),
    (dict(download=True), "download"), (dict(model="graph_models:make_skipnet"), "graph_models:make_skipnet")])
def test_browser_resume_refuses_any_stored_setting_beyond_the_forms_limits(change, words):
    from dashboard.training import LIMITS

    assert LIMITS.refusal(TrainConfig(model="lenet5", epochs=5)) is None
    refusal = LIMITS.refusal(TrainConfig(**{"model": "lenet5", "epochs": 5, **change}))
    assert refusal and words in refusal


# ----- stored decompositions are untrusted input ------------------------------------------------------

def _decomposed(tmp_path: Path) -> runs.Run:
    run = load_run(copy_run(tmp_path / "runs", checkpoints=False))
    decompose(run, save=True)
    return run


def _rewrite_rates(run: runs.Run, change) -> None:
    path = run.path / RATES_FILE
    tensors, meta = io.load_tensors(path)
    change(tensors, meta)
    path.unlink()
    path.write_bytes(io.tensors_bytes(tensors, meta))


@pytest.mark.parametrize("how", ["nan", "above one", "not shares", "missing point", "no class counts",
                                 "nested counts", "wrong shape", "integer rates", "flipped bit"])
def test_a_stored_decomposition_that_does_not_hold_is_recomputed_and_says_so(tmp_path, how):
    run = _decomposed(tmp_path)
    good = decompose(run, save=False, recompute=True).rates
    point = next(iter(good))

    def change(tensors, meta):
        if how == "nan":
            tensors[point][0, 0] = float("nan")
        elif how == "above one":
            tensors[point][0, 0] = 5.0
        elif how == "not shares":
            tensors[point][0, 0] = 0.1234567
        elif how == "missing point":
            del tensors[point]
        elif how == "no class counts":
            del meta["class_counts"]
        elif how == "nested counts":
            meta["class_counts"] = "[" * 100_000 + "]" * 100_000
        elif how == "wrong shape":
            tensors[point] = tensors[point][:, :2].contiguous()
        elif how == "integer rates":
            tensors[point] = tensors[point].round().to(torch.int32)

    if how == "flipped bit":  # the data, not the header: the checksum finds it
        data = bytearray((run.path / RATES_FILE).read_bytes())
        data[-3] ^= 0x10
        (run.path / RATES_FILE).unlink()
        (run.path / RATES_FILE).write_bytes(bytes(data))
    else:
        _rewrite_rates(run, change)
    assert load_decomposition(run, save=False) is None
    again = decompose(run, save=False)
    assert "was not used" in again.note and "recomputed" in again.note
    assert all(torch.equal(again.rates[p], good[p]) for p in good)


def test_stored_masks_count_only_when_they_are_what_the_rates_give(tmp_path):
    run = _decomposed(tmp_path)
    path = run.path / masks_file(0.9)
    masks, meta = io.load_tensors(path)
    honest = {p: m.clone() for p, m in masks.items()}
    point = next(iter(masks))
    for forged in ({**masks, point: ~masks[point]}, {p: m.float() for p, m in masks.items()}):
        path.unlink()
        path.write_bytes(io.tensors_bytes(forged, meta))
        loaded = load_decomposition(run, save=False)
        assert all(torch.equal(loaded.masks[p], honest[p]) for p in honest)  # derived again from the rates


# ----- the low findings ----------------------------------------------------------------------------------

def test_url_numbers_take_ascii_digits_only():
    from dashboard.ui import url_int

    assert [url_int(t) for t in ("3", " 12 ", "²", "１", "-1", "1e3", "", "99999999999999999999")] == \
        [3, 12, None, None, None, None, None, None]


def test_run_at_epoch_takes_ascii_digits_only():
    assert RunRef.parse("runs/a@8") == RunRef(Path("runs/a"), 8)
    for spec in ("runs/a@１", "runs/a@²"):
        with pytest.raises(ModaError, match="is not a run spec"):
            RunRef.parse(spec)


def test_a_checkpoint_of_other_shapes_is_not_offered(tmp_path):
    from moda_core.models import build_model

    run = copy_run(tmp_path / "runs")
    target = run / "checkpoints" / "epoch-0008.safetensors"
    target.unlink()  # a LeNet-5 twice as wide, where the run's LeNet-5 of epoch 8 was
    target.write_bytes(io.tensors_bytes(build_model("lenet5", 1, 28, 6, width=2.0).state_dict(), {"epoch": 8}))
    (listed,) = list_runs(tmp_path / "runs")
    assert listed.status == "complete" and listed.checkpoints == (16,)


@pytest.mark.parametrize("field,value", [("epochs", 10**30), ("batch_size", 99_999_999_999),
                                         ("checkpoint_every", 10**30)])
def test_stored_counts_are_bounded(tmp_path, field, value):
    run = copy_run(tmp_path / "runs", checkpoints=False)
    config = json.loads((run / runs.CONFIG).read_text())
    config["train"][field] = value
    (run / runs.CONFIG).write_text(json.dumps(config))
    (listed,) = list_runs(tmp_path / "runs")
    assert listed.status == "broken" and f"train.{field}" in listed.error


def test_a_huge_batch_size_is_refused_on_the_command_line(tmp_path, capsys):
    line = error_line(capsys, ["train", "--batch-size", "99999999999", "--runs-dir", str(tmp_path)])
    assert "batch size must be a whole number from 2" in line and not list(tmp_path.iterdir())


def test_evolution_metadata_nested_too_deep_is_one_error(tmp_path):
    from moda_core.studies import EVOLUTION_RATES, load_evolution_rates

    run = copy_run(tmp_path / "runs", checkpoints=False)
    (run / EVOLUTION_RATES).write_bytes(io.tensors_bytes({"x": torch.zeros(1)}, {
        "epochs": "[" * 100_000 + "]" * 100_000, "points": "[]", "test_accuracy": "[]"}))
    with pytest.raises(ModaError, match="metadata lacks readable epochs"):
        load_evolution_rates(load_run(run))
