"""Every dashboard page, rendered headless with Streamlit's AppTest on the bundled demo runs:
it renders without exception, and moving the main widgets changes what is shown."""
from __future__ import annotations

import json
import os
import shutil

import pytest
from helpers import APP, DEMO, TIMEOUT, charts, open_page, shown, texts, train_from_form
from helpers import COMPARE_CSV_EXAMPLE as COMPARE_CSV
from streamlit.testing.v1 import AppTest

pytestmark = pytest.mark.usefixtures("dashboard_pages")  # tests/conftest.py


def test_runs_page_lists_demo_runs_and_curves(demo_env):
    app = open_page("runs")
    assert app.title[0].value == "Runs & training"  # the page's name in the sidebar
    table = app.dataframe[0].value
    assert {"vgg11-moda", "vgg11-standard", "swap-strong", "swap-weak"} <= {r.split("/")[-1] for r in table["run"]}
    first = charts(app)
    assert len(first) == 4 and first[0]["layout"]["xaxis"]["title"]["text"] == "epoch"  # and 2 of several runs
    app.selectbox(key="runs_run").set_value(str(DEMO / "swap-weak")).run()
    assert not app.exception
    assert charts(app)[1]["data"][0]["y"] != first[1]["data"][0]["y"]


def test_activations_page_tau_slider_and_ordering_change_the_heatmap(demo_env):
    app = open_page("activations")
    heat = charts(app)[0]
    assert "Activation rate per class and unit" in heat["layout"]["title"]["text"]

    def kept(figure: dict) -> int:  # cells whose hover says the class's module keeps the unit
        return sum("(in its module)" in note for row in figure["data"][0]["customdata"] for note in row)

    kept_at_090 = kept(heat)
    app.slider(key="act_tau").set_value(0.6).run()
    assert not app.exception
    kept_at_060 = kept(charts(app)[0])
    assert kept_at_060 > kept_at_090  # a lower threshold keeps more units in the modules
    assert "τ = 0.60" in texts(app)
    assert app.radio(key="act_order").value == "class they serve"  # the default: units grouped by class
    app.selectbox(key="act_point").set_value("classifier.0.relu").run()  # a point where classes own units
    app.radio(key="act_order").set_value("unit index").run()
    before = charts(app)[0]["data"][0]["x"]
    app.radio(key="act_order").set_value("class they serve").run()
    after = charts(app)[0]["data"][0]["x"]
    assert sorted(after) == sorted(before) and after != before

    def firing_data() -> list:  # one test image's firing units, against a module
        return next(f["data"] for f in charts(app).values()
                    if f["layout"]["title"]["text"].startswith("Units that fire"))

    firing = firing_data()
    app.number_input(key="act_image").set_value(7).run()
    assert not app.exception and firing_data() != firing


def test_modules_page_shows_moda_and_standard_side_by_side(demo_env):
    app = open_page("modules")
    figs = charts(app)
    overlaps = [f for f in figs.values() if f["layout"]["title"]["text"].startswith("Weight overlap")]
    assert len(overlaps) == 2
    metrics = {m.label: m.value for m in app.metric}
    assert "Mean module size" in metrics and "Mean pairwise overlap" in metrics
    values = [m.value for m in app.metric]
    app.slider(key="mod_tau").set_value(0.7).run()
    assert not app.exception and [m.value for m in app.metric] != values
    assert any("Where the overlap lives" in f["layout"]["title"]["text"] for f in charts(app).values())


def test_compose_page_reports_and_exports(demo_env):
    app = open_page("compose")
    params = app.metric[0].value
    classes = app.multiselect(key="comp_classes")
    assert classes.value == classes.options[:2]
    classes.set_value(classes.options[:3]).run()
    assert not app.exception and app.metric[0].value != params
    app.button(key="comp_export").click().run()
    assert not app.exception
    assert app.get("download_button")


def test_empty_and_broken_runs_folders(monkeypatch, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("MODA_RUNS_DIR", str(empty))
    app = open_page("runs")
    assert "No runs yet" in texts(app)
    for page in ("activations", "modules", "compose", "swap"):
        app = open_page(page)
        assert "No runs yet" in texts(app), page

    broken = tmp_path / "mixed"
    shutil.copytree(DEMO / "swap-weak", broken / "good", ignore=shutil.ignore_patterns("checkpoints"))
    (broken / "bad").mkdir()
    (broken / "bad" / "config.json").write_text("{not json")
    monkeypatch.setenv("MODA_RUNS_DIR", str(broken))
    app = open_page("runs")
    assert any("bad" in w.value and "corrupt JSON" in w.value for w in app.warning)
    assert str(tmp_path) not in texts(app)  # no server path, the folder's label instead
    table = app.dataframe[0].value
    assert dict(zip(table["run"], table["status"], strict=True)) == {"mixed/bad": "broken", "mixed/good": "complete"}
    assert app.selectbox(key="runs_run").options == ["mixed/good"]  # the broken run is listed, never picked


@pytest.mark.slow
def test_runs_page_trains_a_new_run_with_live_progress(monkeypatch, tmp_path):
    from dashboard import training

    monkeypatch.setenv("MODA_RUNS_DIR", str(tmp_path))
    app = open_page("runs")
    app.selectbox(key="train_model").set_value("mlp")
    app.number_input(key="train_epochs").set_value(2)
    app.text_input(key="train_name").set_value("from-the-page")
    app.form_submit_button[0].click().run()
    # two epochs of 32 batches: the form warns that the model will come out under-trained, and waits
    assert not app.get("progress") and not training.slot().status().busy
    assert any("only 64 optimisation steps in all (2 epochs × 32 batches of 128 images)" in w.value
               for w in app.warning), texts(app)
    app.button(key="train_anyway").click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert not any("optimisation steps" in w.value for w in app.warning)
    assert app.get("progress") and app.form_submit_button[0].disabled  # training in the background
    assert any("busy: " in shown(i.value) and "from-the-page is training" in shown(i.value)
               for i in app.info), texts(app)
    assert training.slot().wait(timeout=300)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    assert any("from-the-page" in shown(s.value) for s in app.success), texts(app)
    assert str(tmp_path) not in texts(app)
    assert (tmp_path / "from-the-page" / "model.safetensors").exists()
    assert not app.form_submit_button[0].disabled
    assert "from-the-page" in app.dataframe[0].value["run"].iloc[0]


def test_a_path_that_is_not_a_runs_folder_says_why(monkeypatch, tmp_path):
    monkeypatch.setenv("MODA_RUNS_DIR", os.pathsep.join([str(DEMO), str(tmp_path / "nowhere")]))
    monkeypatch.setenv("MODA_TRAINING", "off")
    app = open_page("runs")
    assert any("does not exist" in w.value for w in app.sidebar.warning)
    assert str(tmp_path) not in texts(app) + "".join(shown(w.value) for w in app.sidebar.warning)
    monkeypatch.delenv("MODA_TRAINING")
    monkeypatch.setenv("MODA_RUNS_DIR", str(DEMO / "vgg11-moda"))
    app = open_page("runs")
    assert any("single run, not a folder of runs" in w.value for w in app.sidebar.warning)


def test_compare_page_plots_standard_moda_and_mwt(monkeypatch, tmp_path):
    table = tmp_path / "compare.csv"
    table.write_text(COMPARE_CSV)
    monkeypatch.setenv("MODA_COMPARE_CSV", str(table))
    app = open_page("compare")
    assert app.title[0].value == "Compare"
    figs = charts(app)
    titles = [f["layout"]["title"]["text"] for f in figs.values()]
    assert len(figs) == 4, titles
    assert "Mean module size" in titles[0] and "lower is better" in titles[1]
    assert "Test accuracy" in titles[2] and "Training time" in titles[3]
    for fig in figs.values():
        bars = [t for t in fig["data"] if t["type"] == "bar"]
        assert bars[0]["x"] == ["lenet5", "vgg11 ×0.25"]
        assert {"MODA": "#0072B2", "MwT": "#009E73"} == {t["name"]: t["marker"]["color"] for t in bars
                                                         if t["name"] in ("MODA", "MwT")}
    assert [t["name"] for t in figs[0]["data"]] == ["standard training", "MODA", "MwT"]
    assert figs[0]["data"][1]["y"] == [0.09, 0.37]
    cost = figs[3]
    assert cost["data"][1]["name"] == "MwT" and cost["data"][1]["y"] == [1.12, 1.28]
    assert cost["layout"]["shapes"][0]["y0"] == 1.0
    assert len(app.dataframe[0].value) == 6
    words = texts(app)
    assert "bench.compare --out" in words and "--quick" in words and "one seed (0)" in words
    assert len(app.caption) >= 5  # the page's and one per figure
    assert not app.error and not app.warning

    # step-time ratios next to the table: a second panel in the cost figure
    (tmp_path / "train_overhead.json").write_text(json.dumps(
        {"device": "NVIDIA H100", "steps": 50, "resnet18": {"moda_ratio": 1.31, "mwt_ratio": 1.18, "batch": 128}}))
    app = open_page("compare")
    cost = charts(app)[3]
    steps = [t for t in cost["data"] if t.get("xaxis") == "x2" and t["type"] == "bar"]
    assert [(t["name"], t["x"], t["y"]) for t in steps] == [("MODA", ["resnet18"], [1.31]),
                                                           ("MwT", ["resnet18"], [1.18])]
    assert any("NVIDIA H100" in a["text"] for a in cost["layout"]["annotations"])
    assert len(cost["layout"]["shapes"]) == 2

    # a broken step-time file is left out with a warning; the rest of the page stays
    (tmp_path / "train_overhead.json").write_text("{oops")
    app = open_page("compare")
    assert len(charts(app)) == 4 and any("train_overhead.json" in w.value for w in app.warning)


def test_compare_page_without_a_table_says_how_to_make_one(monkeypatch, tmp_path):
    monkeypatch.setenv("MODA_COMPARE_CSV", str(tmp_path / "nowhere" / "compare.csv"))
    app = open_page("compare")
    assert not app.error and not charts(app)
    assert any("No comparison table yet" in i.value and "bench.compare --out" in i.value and "--quick" in i.value
               for i in app.info)


@pytest.mark.parametrize("content, problem", [
    ("model,method\nlenet5,moda\n", "lacks the column(s) width, epochs"),
    ("", "is empty"),
    (COMPARE_CSV.replace("0.976", "high"), "column `test_accuracy` must hold numbers, but row 2"),
    (COMPARE_CSV + "lenet5,1.0,moda,15,0,0.9,0.5,1.2,0.1,0.1,0.1,0.9,0.9\n", "more than one row for model lenet5"),
    (COMPARE_CSV.split("\n", 1)[0] + "\n", "header but no rows"),
])
def test_compare_page_names_the_file_and_the_problem(monkeypatch, tmp_path, content, problem):
    table = tmp_path / "compare.csv"
    table.write_text(content)
    monkeypatch.setenv("MODA_COMPARE_CSV", str(table))
    app = open_page("compare")
    assert len(app.error) == 1 and not charts(app)
    assert "compare.csv" in app.error[0].value and problem in app.error[0].value, app.error[0].value
    assert str(tmp_path) not in app.error[0].value  # no server path


def test_compare_page_reports_an_unreadable_file(monkeypatch, tmp_path):
    table = tmp_path / "compare.csv"
    table.write_bytes(b"\xff\xfe\x00garbage\x00\x81")
    monkeypatch.setenv("MODA_COMPARE_CSV", str(table))
    app = open_page("compare")
    assert len(app.error) == 1 and "compare.csv" in app.error[0].value and str(tmp_path) not in app.error[0].value
    monkeypatch.setenv("MODA_COMPARE_CSV", str(tmp_path))  # a folder, not a file
    app = open_page("compare")
    assert len(app.error) == 1 and "not a readable CSV file" in app.error[0].value


def test_runs_table_names_the_training_method(demo_env):
    """The Runs table's method column is the method's label (``methods.method_of``; MODA with α=β=γ=0 is
    standard training)."""
    table = open_page("runs").dataframe[0].value
    shown = {run.rsplit("/", 1)[-1]: method for run, method in zip(table["run"], table["method"], strict=True)}
    assert shown["vgg11-mwt"] == "MwT" and shown["vgg11-moda"] == "MODA"  # their methods' default weights
    assert shown["vgg11-standard"] == "standard training"
    assert "Trained by MODA with the loss weights affinity 1, dispersion 1, compactness 0.3." in texts(
        open_page("runs"))  # every run's weights by their own names, under its training curves


def test_a_run_with_other_weights_shows_them_by_name_in_the_table():
    import dataclasses

    from dashboard import engine
    from moda_core.runs import list_runs

    listed = {s.name: s for s in list_runs(DEMO)}
    assert engine.run_method(listed["vgg11-moda"]) == ("MODA", "affinity 1, dispersion 1, compactness 0.3")
    swept = dataclasses.replace(listed["vgg11-moda"], alpha=2.0)
    assert engine.run_method(swept) == ("MODA (affinity 2, dispersion 1, compactness 0.3)",
                                        "affinity 2, dispersion 1, compactness 0.3")
    assert engine.run_method(dataclasses.replace(listed["vgg11-mwt"], beta=1.0))[0] == (
        "MwT (same-label 0.5, different-label 1)")
    assert engine.run_method(listed["vgg11-standard"]) == ("standard training", "")


# --- regressions on the existing pages -------------------------------------------------------------------


def test_activations_module_class_follows_each_new_images_prediction(demo_env):
    from dashboard import engine

    app = open_page("activations")
    spec, first = app.session_state["act_module_image"]
    names = engine.class_names(spec)

    def predicted(i: int) -> str:
        return names[engine.image_activations(spec, i)["predicted"]]

    assert first == 0 and app.selectbox(key="act_module_class").value == predicted(0)
    other_image = next(i for i in range(50, 1000, 50) if predicted(i) != predicted(0))  # test set is by class
    picked = next(n for n in names if n not in (predicted(0), predicted(other_image)))
    app.selectbox(key="act_module_class").set_value(picked).run()
    app.run()  # a rerun for the same image keeps the visitor's pick
    assert app.selectbox(key="act_module_class").value == picked
    app.number_input(key="act_image").set_value(other_image).run()
    assert not app.exception
    assert app.selectbox(key="act_module_class").value == predicted(other_image)  # not the old pick, nor image 0's


def test_activations_kept_units_sentence_and_shared_group(demo_env):
    from dashboard import engine
    from dashboard.figures.activations import SHARED_GROUP, kept_units_text

    assert kept_units_text([16, 16], 16) == "each class module keeps all 16 units."
    assert kept_units_text([4, 4], 16) == "each class module keeps 4 of 16 units."
    assert kept_units_text([3, 9], 16).startswith("each class module keeps 3–9 of 16 units")

    app = open_page("activations")
    masks = engine.masks(app.selectbox(key="act_run").value, app.slider(key="act_tau").value)
    # the page opens on the clearest point, where the counts differ and no unit is shared: pick points that
    # show the bugs (every module keeping as many units; units kept by one module and by several)
    even = next(p for p, m in masks.items() if len(set(m.sum(1).tolist())) == 1)
    app.selectbox(key="act_point").set_value(even).run()
    sentence = next(m.value for m in app.markdown if m.value.startswith(f"**At {even},"))
    assert "–" not in sentence and "(mean" not in sentence, sentence  # not "16–16 of 16 units (mean 16.0)"
    mixed = next(p for p, m in masks.items() if (m.sum(0) == 1).any() and (m.sum(0) > 1).any())
    app.selectbox(key="act_point").set_value(mixed).run()
    app.radio(key="act_order").set_value("class they serve").run()
    annotations = [a["text"] for a in charts(app)[0]["layout"].get("annotations", [])]
    assert SHARED_GROUP in annotations
    assert len(set(annotations)) == len(annotations), annotations  # one label per group, each group once


def test_train_form_width_follows_the_model(monkeypatch, tmp_path):
    monkeypatch.setenv("MODA_RUNS_DIR", str(tmp_path))
    app = open_page("runs")
    assert app.selectbox(key="train_model").value == "lenet5" and app.select_slider(key="train_width").value == 1.0
    app.selectbox(key="train_model").set_value("vgg11").run()
    assert app.select_slider(key="train_width").value == 0.25  # not a full-width VGG on a laptop CPU
    app.selectbox(key="train_model").set_value("mlp").run()
    assert app.select_slider(key="train_width").value == 1.0


def test_runs_table_has_width_classes_and_data_fraction(demo_env):
    app = open_page("runs")
    table = app.dataframe[0].value.set_index("run")
    assert list(table.columns) == ["status", "method", "model", "classes", "data", "epochs",
                                   "accuracy"]  # compact: it fits a 1280-px screen
    weak = table.loc[[r for r in table.index if r.endswith("/swap-weak")][0]]
    assert weak["classes"] == "3, 5, 6, 7, 8, 9" and weak["data"] == "mnist5k · 10%" and weak["model"] == "lenet5"
    vgg = table.loc[[r for r in table.index if r.endswith("/vgg11-moda")][0]]
    assert vgg["model"] == "vgg11 ×0.25" and vgg["classes"] == "all 10" and vgg["data"] == "mnist5k"
    assert vgg["method"] == "MODA"
    assert table.loc[[r for r in table.index if r.endswith("/vgg11-standard")][0]]["method"] == "standard training"


def test_standard_runs_loss_curves_say_modular_terms_were_not_trained(demo_env):
    app = open_page("runs")
    app.selectbox(key="runs_run").set_value(str(DEMO / "vgg11-standard")).run()
    groups = {t["name"]: t.get("legendgrouptitle", {}).get("text") for t in charts(app)[0]["data"]}
    assert groups["ce"] == "trained" and groups["dispersion"] == "measured, not trained"
    assert "measured, not trained" in texts(app)
    app.selectbox(key="runs_run").set_value(str(DEMO / "vgg11-moda")).run()
    assert not any(t.get("legendgrouptitle") for t in charts(app)[0]["data"])


def test_invalid_run_name_says_why_and_starts_nothing(monkeypatch, tmp_path):
    from dashboard import training

    monkeypatch.setenv("MODA_RUNS_DIR", str(tmp_path))
    (tmp_path / "taken").mkdir()
    app = open_page("runs")
    for name, why in (("has space/slash", "not a plain folder name"), ("taken", "already exists"),
                      ("a" * 300, "at most 100 characters")):  # the name rule, not "File name too long"
        app.text_input(key="train_name").set_value(name)
        app.form_submit_button[0].click().run()
        assert any(why in shown(e.value) for e in app.error), texts(app)
        assert "too long" not in texts(app)
        assert not app.get("progress") and not training.slot().status().busy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # nothing half-made


def test_the_seed_field_has_the_engines_bounds(monkeypatch, tmp_path):
    from moda_core import run_config

    monkeypatch.setenv("MODA_RUNS_DIR", str(tmp_path))
    seed = open_page("runs").number_input(key="train_seed")
    assert (seed.min, seed.max) == (0, run_config.MAX_SEED)


def test_failed_training_shows_why_without_cli_flags_or_a_stuck_bar(monkeypatch, tmp_path):
    from dashboard import training
    from moda_core.errors import ModaError

    def failing(config, runs_dir, name, progress=None, **kwargs):
        raise ModaError(f"run folder {runs_dir}/x already exists",  # as moda_core.runs words it
                        hint="pick another --name, --resume to continue it, or --overwrite to replace it")

    slot = training.TrainingSlot(runner=failing)
    monkeypatch.setattr(training, "slot", lambda: slot)
    monkeypatch.setenv("MODA_RUNS_DIR", str(tmp_path))
    app = open_page("runs")
    app.form_submit_button[0].click().run()
    assert slot.wait(timeout=30)
    app.run()
    text = texts(app)
    assert any("already exists" in e.value for e in app.error), text
    errors = "".join(shown(e.value) for e in app.error)
    assert "--" not in errors and str(tmp_path) not in text
    assert not app.get("progress")  # no "starting…" bar left behind


@pytest.mark.slow
def test_training_goes_on_after_leaving_the_page_and_interrupted_runs_offer_resume_and_delete(monkeypatch, tmp_path):
    from dashboard import training

    monkeypatch.setenv("MODA_RUNS_DIR", str(tmp_path))
    slot = training.TrainingSlot()
    monkeypatch.setattr(training, "slot", lambda: slot)
    app = open_page("runs")
    app.selectbox(key="train_model").set_value("mlp").run()
    app.number_input(key="train_epochs").set_value(2)
    app.text_input(key="train_name").set_value("left-behind")
    train_from_form(app)
    assert slot.status().busy
    open_page("compare", app)  # leave the Runs page while it trains
    assert slot.wait(timeout=300) and slot.status().outcome == "done", slot.status().message
    assert (tmp_path / "left-behind" / "model.safetensors").exists()

    # an interrupted run (its last epochs never came): offered for resume and delete
    config = json.loads((tmp_path / "left-behind" / "config.json").read_text())
    config["train"]["epochs"] = 3
    (tmp_path / "left-behind" / "config.json").write_text(json.dumps(config))
    app = open_page("runs")
    assert dict(zip(app.dataframe[0].value["run"], app.dataframe[0].value["status"], strict=True))[
        f"{tmp_path.name}/left-behind"] == "interrupted"
    assert app.button(key="resume_left-behind") and app.button(key="delete_left-behind")
    app.button(key="resume_left-behind").click().run()
    assert slot.wait(timeout=300) and slot.status().outcome == "done", slot.status().message
    app.run()
    assert dict(zip(app.dataframe[0].value["run"], app.dataframe[0].value["status"], strict=True))[
        f"{tmp_path.name}/left-behind"] == "complete"


def test_compose_keeps_valid_picks_across_runs_and_names_the_file_by_class(demo_env):
    app = open_page("compose")
    runs = app.selectbox(key="comp_run")
    moda = next(o for o in runs.options if o.endswith("/vgg11-moda"))
    weak = next(o for o in runs.options if o.endswith("/swap-weak"))  # classes 3, 5, 6, 7, 8, 9
    runs.set_value(moda).run()
    app.multiselect(key="comp_classes").set_value(["1", "3", "9"]).run()
    app.selectbox(key="comp_run").set_value(weak).run()
    assert not app.exception
    assert app.multiselect(key="comp_classes").value == ["3", "9"]  # "1" is not a class of swap-weak
    app.button(key="comp_export").click().run()
    assert not app.exception
    assert app.get("download_button")
    caption = " ".join(c.value for c in app.caption)
    assert "`swap-weak-classes-3-9.pt2`" in caption  # class ids, not positions 0 and 5
    assert "mean (" in caption and "std (" in caption  # the normalisation's numbers, not just "as in training"
    # none of the picks is a class of the new run: its first two classes, not an emptied picker
    app.selectbox(key="comp_run").set_value(moda).run()
    app.multiselect(key="comp_classes").set_value(["0", "1"]).run()
    app.selectbox(key="comp_run").set_value(weak).run()
    assert app.multiselect(key="comp_classes").value == ["3", "5"], texts(app)


def test_compose_metric_cards_have_no_arrows_on_shares(demo_env):
    app = open_page("compose")
    params, flops, accuracy = app.metric[:3]
    for card in (params, flops):  # "12.3% of 1,234" is a share, not a change: no arrow, no colour
        assert " of " in card.proto.delta and card.proto.direction == 2 and card.proto.color == 2, card.proto
    delta = accuracy.proto.delta
    assert "same as the full model" in delta or " points vs full model" in delta
    if "same as" in delta:  # no green up-arrow on +0.0%
        assert accuracy.proto.direction == 2 and accuracy.proto.color == 2


def test_modules_size_charts_of_runs_with_different_classes_are_told_apart(demo_env):
    app = open_page("modules")
    app.selectbox(key="mod_run_b").set_value(str(DEMO / "swap-weak")).run()
    assert not app.exception
    sizes = [f for f in charts(app).values() if f["layout"]["title"]["text"].startswith("Module size per class")]
    assert len(sizes) == 2
    assert sizes[0]["layout"]["title"]["text"] != sizes[1]["layout"]["title"]["text"]
    assert sizes[0]["data"][0]["marker"]["color"] != sizes[1]["data"][0]["marker"]["color"]
    assert all(f["data"][0].get("showlegend") for f in sizes)


def test_compare_page_zooms_accuracy_and_shows_one_decimal_percentages(monkeypatch, tmp_path):
    table = tmp_path / "compare.csv"
    table.write_text(COMPARE_CSV)
    monkeypatch.setenv("MODA_COMPARE_CSV", str(table))
    app = open_page("compare")
    accuracy = next(f for f in charts(app).values() if "Test accuracy" in f["layout"]["title"]["text"])
    low = accuracy["layout"]["yaxis"]["range"][0]
    assert low > 0 and "zoomed" in accuracy["layout"]["title"]["text"]  # 1–3-point differences visible
    assert all(t.get("textangle") == -90 for t in accuracy["data"] if t["type"] == "bar")
    shown = app.dataframe[0].value  # readable headers, percentages with one decimal, references in brackets
    assert list(shown.columns) == ["model", "method", "accuracy", "s / epoch (× std.)", "module", "overlap",
                                   "pair model", "pair acc. (std.)"]
    assert all(value.endswith("%") and 0 < float(value[:-1]) <= 100 for value in shown["accuracy"])  # not shares
    assert set(shown["method"]) <= {"standard training", "MODA", "MwT"}  # not the file's names
    assert all(" (×" in value for value in shown["s / epoch (× std.)"])


def test_empty_state_names_the_folder(monkeypatch, tmp_path):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("MODA_RUNS_DIR", str(tmp_path / "empty"))
    app = open_page("runs")
    message = next(i.value for i in app.info if "No runs yet" in i.value)
    assert "No runs yet in `empty`" in message and " in ." not in message


def test_run_labels_say_which_epoch(demo_env):
    from dashboard import folders
    from moda_core import runs as run_store

    weak = str(DEMO / "swap-weak")
    final = run_store.weights_epoch(DEMO / "swap-weak" / run_store.MODEL)
    first, last = run_store.list_checkpoints(weak)[0], run_store.list_checkpoints(weak)[-1]
    assert folders.run_epoch_label(weak).endswith(f"swap-weak @ epoch {final} (final)")
    assert folders.run_epoch_label(f"{weak}@{first}").endswith(f"swap-weak @ epoch {first} of {final} (early)")
    if last > final / 2:
        assert folders.run_epoch_label(f"{weak}@{last}").endswith("(late)")
    app = open_page("modules")
    run_b = app.selectbox(key="mod_run_b")
    assert run_b.format_func(run_b.value) == folders.run_label(run_b.value)  # as run A's picker names runs
    assert sum("@ epoch" in shown(m.value) and "(final)" in shown(m.value) for m in app.markdown) == 2


def test_an_interrupted_run_can_be_deleted_after_a_confirmation(monkeypatch, tmp_path):
    run = tmp_path / "cut-short"
    shutil.copytree(DEMO / "swap-weak", run, ignore=shutil.ignore_patterns("checkpoints"))
    config = json.loads((run / "config.json").read_text())
    config["train"]["epochs"] += 10  # its last epochs never came
    (run / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("MODA_RUNS_DIR", str(tmp_path))
    from dashboard import training
    from moda_core.errors import ModaError

    calls = []

    def recording(config, runs_dir, name, progress=None, **kwargs):  # resumes nothing: records the call
        calls.append((name, kwargs.get("resume"), config.epochs))
        raise ModaError("stopped by the test")

    slot = training.TrainingSlot(runner=recording)
    monkeypatch.setattr(training, "slot", lambda: slot)
    app = open_page("runs")
    assert any("stopped before their last epoch" in w.value for w in app.warning)
    # its stored 50 epochs are more than the browser trains (training.LIMITS): Resume is disabled and says why
    assert app.button(key="resume_cut-short").disabled and calls == []
    assert any(f"asks for {config['train']['epochs']} epochs" in c.value for c in app.caption), texts(app)
    app.button(key="delete_cut-short").click().run()
    assert run.exists() and any("cannot be undone" in e.value for e in app.error)
    app.button(key="delete_yes_cut-short").click().run()
    assert not app.exception and not run.exists()
    assert "cut-short" not in texts(app)


def test_the_landing_page_explains_the_method_and_runs_has_its_own_link(demo_env):
    """The default page is served at "/" only, so it is "How MODA works"; Runs is a page like the others,
    reachable (and bookmarkable) at /runs."""
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    app.run()
    assert not app.exception
    assert app.title[0].value == "How MODA works"
