"""Every dashboard page, rendered headless with Streamlit's AppTest on the bundled demo runs:
it renders without exception, and moving the main widgets changes what is shown."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from helpers import COMPARE_CSV_EXAMPLE as COMPARE_CSV

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
DEMO = ROOT / "assets" / "demo"
TIMEOUT = 120


@pytest.fixture
def demo_env(monkeypatch):
    monkeypatch.setenv("MODA_RUNS_DIR", str(DEMO))


def open_page(page: str | None = None) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    app.run()
    if page:
        app.switch_page(f"pages/{page}.py")
        app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def charts(app: AppTest) -> dict[str, dict]:
    """Plotly figures on the page, by widget key suffix (the figure JSON streamlit sends)."""
    return {i: json.loads(element.proto.spec) for i, element in enumerate(app.get("plotly_chart"))}


def texts(app: AppTest) -> str:
    return "\n".join(m.value for m in [*app.markdown, *app.caption, *app.title, *app.info, *app.warning,
                                       *app.error, *app.success, *app.subheader])


def test_runs_page_lists_demo_runs_and_curves(demo_env):
    app = open_page()
    assert app.title[0].value == "MODA Studio"
    table = app.dataframe[0].value
    assert {"vgg11-moda", "vgg11-standard", "swap-strong", "swap-weak"} <= {r.split("/")[-1] for r in table["run"]}
    first = charts(app)
    assert len(first) == 2 and first[0]["layout"]["xaxis"]["title"]["text"] == "epoch"
    app.selectbox(key="runs_run").set_value(str(DEMO / "swap-weak")).run()
    assert not app.exception
    assert charts(app)[1]["data"][0]["y"] != first[1]["data"][0]["y"]


def test_activations_page_tau_slider_and_ordering_change_the_heatmap(demo_env):
    app = open_page("activations")
    heat = charts(app)[0]
    assert "Activation rate per class and unit" in heat["layout"]["title"]["text"]
    kept_at_090 = len(heat["data"][1]["x"])
    app.slider(key="act_tau").set_value(0.6).run()
    assert not app.exception
    kept_at_060 = len(charts(app)[0]["data"][1]["x"])
    assert kept_at_060 > kept_at_090  # a lower threshold keeps more units in the modules
    assert "τ = 0.60" in texts(app)
    before = charts(app)[0]["data"][0]["x"]
    app.radio(key="act_order").set_value("class they serve").run()
    after = charts(app)[0]["data"][0]["x"]
    assert sorted(after) == sorted(before) and after != before
    firing = charts(app)[1]["data"]
    app.number_input(key="act_image").set_value(7).run()
    assert not app.exception and charts(app)[1]["data"] != firing


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


def test_swap_page_runs_one_swap(demo_env):
    app = open_page("swap")
    assert "Run swap" in texts(app)
    app.radio(key="swap_strategy").set_value("normalize")
    app.button(key="swap_go").click().run()
    assert not app.exception, [e.value for e in app.exception]
    labels = [m.label for m in app.metric]
    assert "Largest change elsewhere" in labels
    bars = charts(app)[0]
    assert [t["name"] for t in bars["data"]] == ["before (weak model)", "after the swap"]


def test_empty_and_broken_runs_folders(monkeypatch, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("MODA_RUNS_DIR", str(empty))
    app = open_page()
    assert "No runs yet" in texts(app)
    for page in ("activations", "modules", "compose", "swap"):
        app = open_page(page)
        assert "No runs yet" in texts(app), page

    broken = tmp_path / "mixed"
    shutil.copytree(DEMO / "swap-weak", broken / "good", ignore=shutil.ignore_patterns("checkpoints"))
    (broken / "bad").mkdir()
    (broken / "bad" / "config.json").write_text("{not json")
    monkeypatch.setenv("MODA_RUNS_DIR", str(broken))
    app = open_page()
    assert any("bad" in w.value and "corrupt JSON" in w.value for w in app.warning)
    assert len(app.dataframe[0].value) == 1  # the good run is listed and the rest works


def test_runs_page_trains_a_new_run_with_live_progress(monkeypatch, tmp_path):
    monkeypatch.setenv("MODA_RUNS_DIR", str(tmp_path))
    app = open_page()
    app.selectbox(key="train_model").set_value("mlp")
    app.number_input(key="train_epochs").set_value(1)
    app.text_input(key="train_name").set_value("from-the-page")
    app.form_submit_button[0].click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert any("from-the-page" in s.value for s in app.success), texts(app)
    assert (tmp_path / "from-the-page" / "model.safetensors").exists()
    assert app.get("progress")


def test_a_path_that_is_not_a_runs_folder_says_why(monkeypatch, tmp_path):
    monkeypatch.setenv("MODA_RUNS_DIR", str(tmp_path / "nowhere"))
    app = open_page()
    assert any("does not exist" in w.value for w in app.sidebar.warning)
    monkeypatch.setenv("MODA_RUNS_DIR", str(DEMO / "vgg11-moda"))
    app = open_page()
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
    assert "bench/compare.py" in words and "--quick" in words and "one seed (0)" in words
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
    assert any("No comparison table yet" in i.value and "bench/compare.py" in i.value and "--quick" in i.value
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
    assert str(table) in app.error[0].value and problem in app.error[0].value, app.error[0].value


def test_compare_page_reports_an_unreadable_file(monkeypatch, tmp_path):
    table = tmp_path / "compare.csv"
    table.write_bytes(b"\xff\xfe\x00garbage\x00\x81")
    monkeypatch.setenv("MODA_COMPARE_CSV", str(table))
    app = open_page("compare")
    assert len(app.error) == 1 and str(table) in app.error[0].value
    monkeypatch.setenv("MODA_COMPARE_CSV", str(tmp_path))  # a folder, not a file
    app = open_page("compare")
    assert len(app.error) == 1 and "not a readable CSV file" in app.error[0].value


def test_runs_table_names_the_training_kind():
    from dashboard.ui import training_kind

    assert training_kind({"method": "mwt", "alpha": 0.5, "beta": 1.5, "gamma": 0.0}) == "MwT"
    assert training_kind({"method": "moda", "alpha": 1.0, "beta": 1.0, "gamma": 0.3}) == "MODA"
    assert training_kind({"alpha": 0.0, "beta": 0.0, "gamma": 0.0}) == "standard"
