"""``moda_core.twins``: which runs are the same experiment trained by another method, the one rule every page and
the live training view use."""
from __future__ import annotations

import json
import shutil

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
