"""``moda_core.twins``: which runs are the same experiment trained by another method, the one rule every page and
the live training view use."""
from __future__ import annotations

import json
import os
import shutil
from collections import OrderedDict
from pathlib import Path

from helpers import DEMO

from dashboard import study_jobs
from moda_core import twins
from moda_core.runs import list_runs


def test_the_demos_twins_are_the_same_model_and_data_by_each_method():
    summaries = list_runs(DEMO)
    group = twins.twins(summaries, DEMO / "vgg11-moda")
    assert {m: p.name for m, p in group.items()} == {"moda": "vgg11-moda", "standard": "vgg11-standard",
                                                    "mwt": "vgg11-mwt"}
    assert list(group)[0] == "moda"  # the chosen run first
    assert {m: p.name for m, p in twins.twins(summaries, DEMO / "vit-standard").items()} == \
        {"standard": "vit-standard", "moda": "vit-moda"}
    # swap-weak: LeNet-5 on six classes, 10% of the data; no other run is that experiment
    assert {m: p.name for m, p in twins.twins(summaries, DEMO / "swap-weak").items()} == {"standard": "swap-weak"}


def test_a_runs_partner_is_standard_training_or_moda():
    assert [twins.partner(m) for m in ("moda", "mwt", "standard")] == ["standard", "standard", "moda"]
    summaries = list_runs(DEMO)
    assert twins.twin(summaries, DEMO / "vgg11-mwt") == ("standard", DEMO / "vgg11-standard")
    assert twins.twin(summaries, DEMO / "vgg11-standard") == ("moda", DEMO / "vgg11-moda")
    assert twins.twin(summaries, DEMO / "swap-weak") is None


def test_a_run_that_is_not_listed_has_no_twins_and_no_made_up_entry(tmp_path):
    assert twins.twins(list_runs(DEMO), tmp_path / "elsewhere") == {}
    assert twins.twin(list_runs(DEMO), tmp_path / "elsewhere") is None
    assert study_jobs.twins(list_runs(DEMO), str(tmp_path / "elsewhere")) == {}
    assert study_jobs.twin({}) is None


def test_another_data_share_or_class_set_is_another_experiment(tmp_path):
    for name in ("vgg11-moda", "vgg11-standard"):
        shutil.copytree(DEMO / name, tmp_path / name)
    config_path = tmp_path / "vgg11-standard" / "config.json"
    config = json.loads(config_path.read_text())
    assert {m: p.name for m, p in twins.twins(list_runs(tmp_path), tmp_path / "vgg11-moda").items()} == \
        {"moda": "vgg11-moda", "standard": "vgg11-standard"}
    config["data"]["train_fraction"] = 0.5
    config_path.write_text(json.dumps(config))
    assert list(twins.twins(list_runs(tmp_path), tmp_path / "vgg11-moda")) == ["moda"]


def test_the_pages_keep_a_checkpoint_as_the_chosen_run():
    spec = f"{DEMO / 'vgg11-moda'}@40"
    group = study_jobs.twins(list_runs(DEMO), spec)
    assert group["moda"] == spec and group["standard"] == str(DEMO / "vgg11-standard")
    assert study_jobs.twin(group) == ("standard", str(DEMO / "vgg11-standard"))


# ----- a page view reads no config.json the last one read -------------------------------------------------

def counted_config_reads(monkeypatch) -> list[Path]:
    """The run folders whose config.json ``moda_core.twins`` reads from now on, in order (what it knew is
    forgotten first)."""
    read: list[Path] = []
    real = twins.read_config

    def counting(run_dir):
        read.append(Path(run_dir))
        return real(run_dir)

    monkeypatch.setattr(twins, "read_config", counting)
    monkeypatch.setattr(twins, "_KNOWN", OrderedDict())
    return read


def test_a_second_page_view_reads_no_config_json_again(monkeypatch):
    read = counted_config_reads(monkeypatch)
    spec = str(DEMO / "vgg11-moda")
    first = study_jobs.twins(list_runs(DEMO), spec)  # the first view: the candidates' config.json, once each
    assert first["standard"] == str(DEMO / "vgg11-standard") and DEMO / "vgg11-standard" in read
    assert len(read) == len(set(read))
    read.clear()
    assert study_jobs.twins(list_runs(DEMO), spec) == first  # the next view: the same answer, from what was read
    assert read == []


def test_a_config_json_that_changes_is_read_again(tmp_path, monkeypatch):
    for name in ("vgg11-moda", "vgg11-standard"):
        shutil.copytree(DEMO / name, tmp_path / name)
    read = counted_config_reads(monkeypatch)
    spec = str(tmp_path / "vgg11-moda")
    # just written (copied): not settled, so every view reads it afresh
    assert list(study_jobs.twins(list_runs(tmp_path), spec)) == ["moda", "standard"]
    assert list(study_jobs.twins(list_runs(tmp_path), spec)) == ["moda", "standard"]
    assert read.count(tmp_path / "vgg11-standard") == 2
    monkeypatch.setattr(twins, "SETTLED_NS", 0)  # from here on, a file counts as settled as soon as it is written
    study_jobs.twins(list_runs(tmp_path), spec)
    read.clear()
    study_jobs.twins(list_runs(tmp_path), spec)
    assert read == []
    # the standard run's config.json replaced (as the store writes it: a new file renamed into place)
    config_path = tmp_path / "vgg11-standard" / "config.json"
    config = json.loads(config_path.read_text())
    config["data"]["train_fraction"] = 0.5
    staged = config_path.with_name("config.json.new")
    staged.write_text(json.dumps(config))
    os.replace(staged, config_path)
    assert list(study_jobs.twins(list_runs(tmp_path), spec)) == ["moda"]  # another experiment now
    assert read == [tmp_path / "vgg11-standard"]
