"""The run store's values (moda_core.store): ``RunRef``, the one reading of ``RUN`` / ``RUN@EPOCH``, and
``RunSummary`` with its ``RunStatus``, what listing says of a run folder."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from helpers import DEMO

from moda_core.errors import ModaError
from moda_core.run_config import MAX_EPOCHS
from moda_core.store.listing import list_runs, summarize_run
from moda_core.store.loading import load_run
from moda_core.store.lock import RunLock
from moda_core.store.names import CONFIG, RunRef, epoch_number
from moda_core.store.summary import RunStatus, RunSummary

# ----- RunRef: RUN and RUN@EPOCH ---------------------------------------------------------------------

@pytest.mark.parametrize("spec,path,epoch", [
    ("runs/a", "runs/a", None), ("runs/a@5", "runs/a", 5), ("/srv/runs/vgg11-moda@100", "/srv/runs/vgg11-moda", 100),
    (f"a@{MAX_EPOCHS}", "a", MAX_EPOCHS), ("/home/me@work/runs/a", "/home/me@work/runs/a", None),
    ("/home/me@work/runs/a@3", "/home/me@work/runs/a", 3)])
def test_a_spec_reads_as_its_run_and_epoch_and_writes_back_the_same(spec, path, epoch):
    ref = RunRef.parse(spec)
    assert (ref.path, ref.epoch) == (Path(path), epoch) and ref.name == Path(path).name
    assert str(ref) == spec and RunRef.parse(str(ref)) == ref  # the round trip
    assert RunRef.parse(Path(spec)) == ref and RunRef.parse(ref) is ref


def test_a_run_ref_is_a_value():
    ref = RunRef(Path("runs/a"), 4)
    assert ref == RunRef("runs/a", 4) and hash(ref) == hash(RunRef("runs/a", 4)) and isinstance(RunRef("x").path, Path)
    assert ref.at(None) == RunRef("runs/a") and str(ref.at(7)) == "runs/a@7"
    assert str(RunRef.parse("runs/a@0007")) == "runs/a@7"  # leading zeros read as the number
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.epoch = 5


@pytest.mark.parametrize("spec", ["runs/a@", "runs/a@x", "runs/a@0", "runs/a@-1", "runs/a@1e3", "runs/a@1.5",
                                  "runs/a@１", "runs/a@²", "runs/a@ 5", "@5", "runs/@5", f"runs/a@{MAX_EPOCHS + 1}",
                                  "runs/a@" + "9" * 5000])
def test_a_bad_spec_is_one_clear_error_that_names_it(spec):
    with pytest.raises(ModaError) as raised:
        RunRef.parse(spec)
    message = str(raised.value)
    assert message.startswith(f"{spec!r} is not a run spec") and f"from 1 to {MAX_EPOCHS:,}" in message


@pytest.mark.parametrize("epoch", [0, -3, MAX_EPOCHS + 1, True, 2.0, "5"])
def test_a_run_ref_holds_only_an_epoch_number_in_range(epoch):
    with pytest.raises(ModaError, match="is not a whole number from 1 to"):
        RunRef(Path("runs/a"), epoch)


def test_loading_a_bad_spec_names_the_spec_not_a_missing_folder(tmp_path):
    with pytest.raises(ModaError, match="is not a run spec"):
        load_run(f"{DEMO / 'vgg11-moda'}@0")
    with pytest.raises(ModaError, match="no checkpoint for epoch 99"):
        load_run(RunRef(DEMO / "vgg11-moda", 99))  # in range, but never saved


def test_one_reading_of_an_epoch_number():
    assert [epoch_number(v) for v in (1, 7.0, "12", "0012", MAX_EPOCHS)] == [1, 7, 12, 12, MAX_EPOCHS]
    assert [epoch_number(v) for v in (0, -1, 2.5, float("nan"), float("inf"), "１", "", "1e3", None, True,
                                      MAX_EPOCHS + 1, "9" * 400)] == [None] * 12


def test_a_loaded_run_gives_its_ref_and_spec():
    run = load_run(DEMO / "vgg11-moda")
    assert run.ref == RunRef(DEMO / "vgg11-moda") and run.spec == str(DEMO / "vgg11-moda")
    early = load_run(RunRef(DEMO / "vgg11-moda", 5))
    assert early.ref == RunRef(DEMO / "vgg11-moda", 5) and load_run(early.spec).epoch == 5


# ----- RunSummary and its status -----------------------------------------------------------------------

def test_the_status_is_an_enum_whose_values_are_the_words_shown():
    assert [s.value for s in RunStatus] == ["complete", "running", "interrupted", "broken", "needs-models"]
    assert str(RunStatus.NEEDS_MODELS) == "needs-models" and f"{RunStatus.COMPLETE}" == "complete"
    assert RunStatus("interrupted") is RunStatus.INTERRUPTED and json.dumps(RunStatus.BROKEN) == '"broken"'
    assert [s for s in RunStatus if s.openable] == [RunStatus.COMPLETE, RunStatus.RUNNING, RunStatus.INTERRUPTED]


def test_listing_gives_typed_immutable_summaries():
    summaries = {s.name: s for s in list_runs(DEMO)}
    moda = summaries["vgg11-moda"]
    assert all(isinstance(s, RunSummary) and s.status is RunStatus.COMPLETE for s in summaries.values())
    assert moda.path == DEMO / "vgg11-moda" and moda.ref == RunRef(DEMO / "vgg11-moda") and moda.loadable
    assert isinstance(moda.checkpoints, tuple) and moda.checkpoints and moda.modular
    assert not summaries["vgg11-standard"].modular and moda.error is None and moda.pid is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        moda.status = RunStatus.BROKEN
    assert list_runs(DEMO) == list(summaries.values())  # listed again: equal values


def test_a_summary_row_is_plain_json():
    summary = summarize_run(DEMO / "vgg11-moda")
    row = json.loads(json.dumps(summary.row()))
    assert row["status"] == "complete" and row["path"] == str(DEMO / "vgg11-moda")
    assert row["checkpoints"] == list(summary.checkpoints) and row["name"] == "vgg11-moda"
    assert set(row) == {f.name for f in dataclasses.fields(RunSummary)}


def test_each_status_from_a_folder(tmp_path):
    shutil.copytree(DEMO / "swap-weak", tmp_path / "done")
    shutil.copytree(DEMO / "swap-weak", tmp_path / "cut-short")
    config = json.loads((tmp_path / "cut-short" / CONFIG).read_text())
    config["train"]["epochs"] += 10
    (tmp_path / "cut-short" / CONFIG).write_text(json.dumps(config))
    (tmp_path / "starting").mkdir()
    lock = RunLock(tmp_path / "starting")
    assert lock.acquire()
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / CONFIG).write_text("{not json")
    try:
        statuses = {s.name: (s.status, s.loadable) for s in list_runs(tmp_path)}
    finally:
        lock.release()
    assert statuses == {"done": (RunStatus.COMPLETE, True), "cut-short": (RunStatus.INTERRUPTED, True),
                        "starting": (RunStatus.RUNNING, False), "gone": (RunStatus.BROKEN, False)}
    stopped = summarize_run(tmp_path / "starting")  # its lock is free now: it stopped as it started
    assert stopped.status is RunStatus.INTERRUPTED and "no finished epoch" in stopped.error
    assert summarize_run(tmp_path / "cut-short").epochs == config["train"]["epochs"]
