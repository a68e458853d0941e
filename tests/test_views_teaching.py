"""Runs & training, Modules and τ trade-off as a lecturer meets them (AppTest through app.py, slow lane): a run
being trained says how far it got, several runs share one chart, run B follows run A's twin, each overlap
heatmap shows its own structure, and the τ page says which class pairs it averages."""
from __future__ import annotations

import json
import shutil

import pytest
from helpers import DEMO, charts, open_page, texts

pytestmark = pytest.mark.usefixtures("dashboard_pages")  # tests/conftest.py


def by_title(app, start: str) -> list[dict]:
    return [f for f in charts(app).values() if (f["layout"].get("title") or {}).get("text", "").startswith(start)]


def test_a_run_being_trained_says_running_epoch_k_of_n_and_no_warning(monkeypatch, tmp_path):
    from moda_core import runs as run_store

    # a training that has not finished its first epoch: its config and its held lock, no weights yet
    starting = tmp_path / "just-started"
    starting.mkdir()
    config = json.loads((DEMO / "swap-weak" / "config.json").read_text())
    (starting / "config.json").write_text(json.dumps(config))
    # one further along: finished epochs on disk, more to come
    going = tmp_path / "half-way"
    shutil.copytree(DEMO / "swap-weak", going, ignore=shutil.ignore_patterns("checkpoints"))
    done = run_store.weights_epoch(going / run_store.MODEL)
    config["train"]["epochs"] = done + 10
    (going / "config.json").write_text(json.dumps(config))
    locks = [run_store.RunLock(starting), run_store.RunLock(going)]
    assert all(lock.acquire() for lock in locks)
    try:
        monkeypatch.setenv("MODA_RUNS_DIR", str(tmp_path))
        app = open_page("runs")
        table = app.dataframe[0].value
        status = dict(zip(table["run"], table["status"], strict=True))
        assert status[f"{tmp_path.name}/just-started"] == f"running, epoch 0/{done}"
        assert status[f"{tmp_path.name}/half-way"] == f"running, epoch {done}/{done + 10}"
        methods = dict(zip(table["run"], table["method"], strict=True))
        assert methods[f"{tmp_path.name}/just-started"] == methods[f"{tmp_path.name}/half-way"] is not None
        text = texts(app)
        assert "could not be loaded" not in text and "no finished epoch" not in text, text
        assert not [e for e in app.expander if "could not be loaded" in e.label]
    finally:
        for lock in locks:
            lock.release()


def test_runs_page_is_named_as_in_the_sidebar_and_overlays_several_runs(demo_env):
    app = open_page("runs")
    assert app.title[0].value == "Runs & training"
    overlay = app.multiselect(key="runs_overlay")
    # at first the picked run and its twins (the same model and data trained the other ways)
    twins = {"vgg11-moda", "vgg11-standard", "vgg11-mwt"}
    assert overlay.value[0].endswith("vgg11-moda") and {v.split("/")[-1] for v in overlay.value} == twins
    accuracy = by_title(app, "Test accuracy per epoch")
    loss = by_title(app, "Cross-entropy loss per epoch")
    assert len(accuracy) == len(loss) == 1
    assert {t["name"].split("/")[-1] for t in accuracy[0]["data"]} == twins
    overlay.set_value([str(DEMO / "swap-weak"), str(DEMO / "vgg11-moda")]).run()
    assert not app.exception
    accuracy = by_title(app, "Test accuracy per epoch")[0]
    assert [t["name"].split("/")[-1] for t in accuracy["data"]] == ["swap-weak", "vgg11-moda"]
    assert len({t["line"]["color"] for t in accuracy["data"]}) == 2
    low, high = accuracy["layout"]["yaxis"]["range"]
    assert high - low >= 0.05 and accuracy["layout"]["yaxis"]["tickformat"] == ".0%"


def test_modules_run_b_follows_run_a_until_the_visitor_picks_it_and_offers_checkpoints(demo_env):
    app = open_page("modules")
    run_a, run_b = app.selectbox(key="mod_run_a"), app.selectbox(key="mod_run_b")
    assert run_b.value == str(DEMO / "vgg11-standard")
    # the two pickers alike: checkpoints offered by both, runs named the same way, labels worded alike
    assert any("@" in spec for spec in run_b.options) and run_b.options == run_a.options
    specs = [run_a.value, run_b.value, f"{DEMO / 'vgg11-moda'}@5"]  # (``options`` are the labels already)
    assert all(run_a.format_func(spec) == run_b.format_func(spec) for spec in specs)
    assert run_a.label.startswith("Run A (e.g. ") and run_b.label.startswith("Run B (e.g. ")
    assert run_a.help.split(".")[0] == run_b.help.split(".")[0]
    # a new run A: run B follows to its twin
    run_a.set_value(str(DEMO / "vit-moda")).run()
    assert not app.exception
    assert app.selectbox(key="mod_run_b").value == str(DEMO / "vit-standard")
    # once the visitor picks run B, it stays when run A changes
    app.selectbox(key="mod_run_b").set_value(str(DEMO / "vgg11-mwt")).run()
    app.selectbox(key="mod_run_a").set_value(str(DEMO / "vgg11-moda")).run()
    assert not app.exception
    assert app.selectbox(key="mod_run_b").value == str(DEMO / "vgg11-mwt")


def test_modules_heatmaps_each_on_its_own_scale_unless_asked_to_share(demo_env):
    app = open_page("modules")
    heatmaps = [f["data"][0] for f in by_title(app, "Weight overlap")]
    assert len(heatmaps) == 2
    tops = [h["zmax"] for h in heatmaps]
    assert tops[0] < 0.5 * tops[1]  # the MODA run's own scale, far below the standard run's
    for heat in heatmaps:
        assert "own scale" in heat["colorbar"]["title"]["text"]
        assert f"0–{heat['zmax']:.1%}" in heat["colorbar"]["title"]["text"]
    assert "its own colour scale" in texts(app)
    app.toggle(key="mod_shared_scale").set_value(True).run()
    heatmaps = [f["data"][0] for f in by_title(app, "Weight overlap")]
    assert heatmaps[0]["zmax"] == heatmaps[1]["zmax"] == max(tops)
    assert all("shared scale" in h["colorbar"]["title"]["text"] for h in heatmaps)


def test_tau_page_names_its_pairs_and_the_chosen_tau_in_the_legend(demo_env):
    app = open_page("tau")
    assert app.title[0].value == "τ trade-off"
    text = texts(app)
    assert "the same 6 of the 45 class pairs" in text and "averages over all 45 pairs" in text, text
    chart = by_title(app, "The τ trade-off")[0]
    legend = [t["name"] for t in chart["data"] if t.get("showlegend") and t["line"].get("dash") == "dot"]
    assert legend == ["τ = 0.90 (the pages' τ)"]
    assert not [a for a in chart["layout"]["annotations"] if "the pages' τ" in a.get("text", "")]
    low, high = chart["layout"]["yaxis3"]["range"]
    assert high - low >= 0.05


def test_modules_over_training_is_named_as_in_the_sidebar(demo_env):
    app = open_page("evolution")
    assert app.title[0].value == "Modules over training"
