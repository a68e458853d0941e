"""Shared state across the dashboard's pages (one run and one τ, mirrored in the URL) and the new views
(How MODA works, Modules over training, the τ trade-off), with Streamlit's AppTest on the demo runs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import APP, DEMO, TIMEOUT, board_occupied, charts, open_page, texts
from streamlit.testing.v1 import AppTest

from dashboard import study_jobs, ui
from dashboard.plain_text import code

pytestmark = pytest.mark.usefixtures("dashboard_pages")  # tests/conftest.py


def fresh(query: dict[str, str] | None = None, page: str | None = None) -> AppTest:
    """A new session (a new tab, a reload or a bookmark) with these URL query parameters."""
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    app.query_params.update(query or {})
    if page:  # the URL names the page: the session starts there
        app.switch_page(f"views/{page}.py")
    app.run()
    return open_page(app=app)


def test_run_and_tau_follow_the_visitor_across_pages_and_into_the_url(demo_env):
    app = open_page("activations")
    assert app.selectbox(key="act_run").value == str(DEMO / "vgg11-moda")
    app.selectbox(key="act_run").set_value(str(DEMO / "vgg11-standard")).run()
    app.slider(key="act_tau").set_value(0.75).run()
    assert app.query_params == {"run": "demo/vgg11-standard", "tau": "0.75"}
    for page, run_key, tau_key in (("compose", "comp_run", "comp_tau"), ("modules", "mod_run_a", "mod_tau"),
                                   ("evolution", "evo_run", "evo_tau"), ("tau", "tau_run", "tau_tau")):
        open_page(page, app)
        assert app.selectbox(key=run_key).value == str(DEMO / "vgg11-standard"), page
        assert app.slider(key=tau_key).value == pytest.approx(0.75), page
        shown = dict(app.query_params)
        assert {k: shown[k] for k in ("run", "tau")} == {"run": "demo/vgg11-standard", "tau": "0.75"}, page
        assert set(shown) <= {"run", "tau", "classes"}, page  # Compose adds its classes to the shared view
    open_page("how", app)  # a page without pickers keeps both in the URL (and Compose's classes)
    assert dict(app.query_params) == {"run": "demo/vgg11-standard", "tau": "0.75", "classes": "0,1"}
    # changing them on another page changes them everywhere
    open_page("compose", app)
    app.slider(key="comp_tau").set_value(0.6).run()
    open_page("activations", app)
    assert app.slider(key="act_tau").value == pytest.approx(0.6)
    assert "τ = 0.60" in texts(app)


def test_a_bookmarked_url_opens_on_its_run_and_tau(demo_env):
    app = fresh({"run": "demo/vgg11-standard", "tau": "0.8"}, "activations")
    assert app.selectbox(key="act_run").value == str(DEMO / "vgg11-standard")
    assert app.slider(key="act_tau").value == pytest.approx(0.8)
    assert app.query_params["tau"] == "0.80"
    # a checkpoint: pages that offer checkpoints open on it, the others on its run
    app = fresh({"run": "demo/swap-weak@8"}, "activations")
    assert app.selectbox(key="act_run").value == str(DEMO / "swap-weak") + "@8"
    open_page("tau", app)
    assert app.selectbox(key="tau_run").value == str(DEMO / "swap-weak")


@pytest.mark.parametrize("query, note", [
    ({"run": "demo/no-such-run", "tau": "0.7"}, "does not offer"),
    ({"run": "/etc/passwd"}, "does not offer"),
    ({"tau": "abc"}, "is not a number between"),
    ({"tau": "1.7"}, "is not a number between"),
    ({"tau": "nan"}, "is not a number between"),
])
def test_an_unknown_run_or_invalid_tau_in_the_url_falls_back_gently(demo_env, query, note):
    app = fresh(query, "activations")
    assert note in texts(app)
    assert app.selectbox(key="act_run").value == str(DEMO / "vgg11-moda")  # the default run
    expected_tau = 0.7 if query.get("tau") == "0.7" else 0.9
    assert app.slider(key="act_tau").value == pytest.approx(expected_tau)


@pytest.mark.parametrize("epoch", ["999", "abc", "7", "", "²"])
def test_an_epoch_that_is_no_checkpoint_falls_back_to_the_final_weights_with_a_note(demo_env, epoch):
    app = fresh({"run": f"demo/vgg11-moda@{epoch}"}, "activations")
    note = f"epoch {code(epoch)} is not a saved checkpoint of `demo/vgg11-moda`; showing its final weights"
    assert note in texts(app)
    assert app.selectbox(key="act_run").value == str(DEMO / "vgg11-moda")
    assert app.query_params["run"] == "demo/vgg11-moda"  # the URL says what is shown


def test_a_checkpoint_or_the_final_epoch_in_the_url_opens_without_a_note(demo_env):
    app = fresh({"run": "demo/vgg11-moda@020"}, "activations")  # checkpoint 20, however written
    assert app.selectbox(key="act_run").value == str(DEMO / "vgg11-moda") + "@20"
    assert app.query_params["run"] == "demo/vgg11-moda@20" and "checkpoint" not in texts(app)
    app = fresh({"run": "demo/vgg11-moda@100"}, "activations")  # the final weights are epoch 100
    assert app.selectbox(key="act_run").value == str(DEMO / "vgg11-moda")
    assert app.query_params["run"] == "demo/vgg11-moda" and "checkpoint" not in texts(app)


def test_swap_keeps_its_own_two_runs(demo_env):
    app = fresh({"run": "demo/vgg11-standard", "tau": "0.85"}, "swap")
    assert app.selectbox(key="swap_weak").value.startswith(str(DEMO / "swap-weak"))
    assert app.selectbox(key="swap_strong").value == str(DEMO / "swap-strong")
    assert app.slider(key="swap_tau").value == pytest.approx(0.85)  # but the one τ
    assert app.query_params["run"] == "demo/vgg11-standard"


def test_activations_opens_where_units_are_most_class_specific_with_units_by_class(demo_env):
    app = open_page("activations")
    assert app.selectbox(key="act_point").value == "features.11.relu"  # decompose.most_class_specific_point
    assert app.radio(key="act_order").value == "class they serve"


def test_parse_tau():
    assert ui.parse_tau("0.9") == 0.9 and ui.parse_tau(" 0.5 ") == 0.5 and ui.parse_tau("1") == 1.0
    assert ui.parse_tau("0.853") == 0.85
    for bad in ("", "x", "0.49", "1.01", "inf", "nan", "-0.9"):
        assert ui.parse_tau(bad) is None, bad


def test_how_moda_works_page(demo_env):
    app = open_page("how")
    text = texts(app)
    for words in ("Affinity", "Dispersion", "Compactness", "rate ≥ τ", "overlap", "early layers",
                  "union", "9"):
        assert words in text, words
    grid = charts(app)[0]["data"][0]["z"]
    assert np.asarray(grid).tolist() == [[1, 1, 4, 0], [1, 3, 2, 0], [4, 2, 2, 0], [0, 0, 0, 0]]
    assert (np.asarray(grid) > 0).sum() == 9  # the union keeps 9 weights, not 4 + 4 - 1


def fake_study(calls):
    def run(study, spec, tau, progress):
        calls.append((study, spec, tau))
        progress(1, 2)
        progress(2, 2)
        if study == "evolution":
            scale = 0.2 if "moda" in spec else 0.8
            return pd.DataFrame({"epoch": [1, 2], "mean_module_size": [0.9, scale],
                                 "mean_overlap": [0.8, scale / 2], "test_accuracy": [0.5, 0.9]})
        return pd.DataFrame({"tau": list(study_jobs.TAU_GRID), "mean_module_size": [0.5] * len(study_jobs.TAU_GRID),
                             "mean_overlap": [0.3] * len(study_jobs.TAU_GRID),
                             "pair_accuracy": [0.99] * len(study_jobs.TAU_GRID),
                             "pair_params_fraction": [0.6] * len(study_jobs.TAU_GRID)})
    return run


@pytest.fixture
def fake_studies(monkeypatch):
    """The study views' computation replaced by ``fake_study`` (and the server's study cache emptied); the
    list of its calls."""
    calls = []
    monkeypatch.setattr(study_jobs, "_run_study", fake_study(calls))
    study_jobs._results().clear()
    from dashboard import jobs

    jobs.board().clear()
    return calls


@pytest.fixture
def unrecorded(monkeypatch):
    """The demo runs as if they shipped no recorded evolution rates (as a run trained elsewhere): their
    evolution must be computed from the checkpoints' weights, on request."""
    monkeypatch.setattr(study_jobs, "is_recorded", lambda spec: False)


def test_evolution_page_computes_on_request_for_the_run_and_its_twins(demo_env, fake_studies, unrecorded):
    calls = fake_studies
    app = fresh({"tau": "0.63"}, "evolution")
    assert "Not computed yet at τ = 0.63" in texts(app)
    app.button(key="evo_compute").click().run()
    assert "Not computed yet" not in texts(app)  # redrawn from the cache once computed
    kinds = {spec.rsplit("/", 1)[-1] for _, spec, _ in calls}
    assert {"vgg11-moda", "vgg11-standard"} <= kinds and "swap-weak" not in kinds  # twins only
    figure = charts(app)[0]
    assert [t["x"] for t in figure["data"]][:1] == [[1.0, 2.0]]  # the computed curves, not shipped ones
    names = {trace["name"] for trace in figure["data"] if trace.get("showlegend") is not False}
    assert any(name.startswith("MODA") for name in names) and any(name.startswith("standard") for name in names)
    assert figure["layout"]["xaxis3"]["title"]["text"] == "epoch"
    # cached: a second visit computes nothing and shows the chart straight away
    calls.clear()
    open_page("how", app)
    open_page("evolution", app)
    assert calls == [] and charts(app)


def test_tau_page_draws_the_run_and_its_standard_twin(demo_env, fake_studies):
    calls = fake_studies
    app = open_page("tau")
    if study_jobs.precomputed("tau", str(DEMO / "vgg11-moda")) is None:
        app.button(key="tau_compute").click().run()
        assert {spec.rsplit("/", 1)[-1] for _, spec, _ in calls} == {"vgg11-moda", "vgg11-standard"}
    figure = charts(app)[0]
    assert [t["x"] for t in figure["data"][:1]] == [list(study_jobs.TAU_GRID)]
    assert figure["layout"]["xaxis3"]["tickvals"] == list(study_jobs.TAU_GRID)
    lines = [s for s in figure["layout"]["shapes"] if s.get("line", {}).get("dash") == "dot"]
    assert lines and all(s["x0"] == pytest.approx(0.9) for s in lines)


def test_a_busy_server_queues_the_study_and_computes_it_when_a_worker_is_free(demo_env, fake_studies, unrecorded):
    import threading

    calls = fake_studies
    with board_occupied("test-busy", "another visitor's work", hold=30) as release:
        threading.Timer(1.0, release.set).start()  # the other visitors' work ends a second later
        app = fresh({"tau": "0.61"}, "evolution")
        app.button(key="evo_compute").click().run()
    assert {spec.rsplit("/", 1)[-1] for _, spec, _ in calls} >= {"vgg11-moda", "vgg11-standard"}
    assert "Not computed yet" not in texts(app) and charts(app) and not app.exception


@pytest.mark.parametrize("tau", ["0.63", "0.9", "1"])
def test_the_demo_draws_every_checkpoint_at_any_tau_from_its_recorded_rates(demo_env, fake_studies, tau):
    from moda_core.studies import training_evolution

    calls = fake_studies
    app = fresh({"tau": tau}, "evolution")
    assert calls == [] and "Not computed yet" not in texts(app) and not app.button  # nothing to compute
    assert "ship the activation rates of every checkpoint" in texts(app)
    figure = charts(app)[0]
    curves = {t["name"]: t for t in figure["data"] if t.get("showlegend") is not False}
    assert len(curves) == 3  # MODA, standard training, MwT
    expected = training_evolution(DEMO / "vgg11-moda", float(tau))
    moda = next(t for name, t in curves.items() if name.startswith("MODA"))
    assert moda["x"] == list(range(5, 101, 5)) and moda["x"] == expected["epoch"].tolist()
    assert [round(y, 9) for y in moda["y"]] == [round(y, 9) for y in expected["mean_module_size"] * 100] or \
        moda["y"] == pytest.approx(expected["mean_module_size"].tolist(), abs=1e-9)


def test_a_folder_recording_more_checkpoints_than_the_bound_goes_through_the_button(demo_env, fake_studies,
                                                                                    monkeypatch):
    monkeypatch.setattr(study_jobs, "MAX_INSTANT_STATES", 19)  # the demo records 20 per run
    app = fresh({"tau": "0.64"}, "evolution")
    assert "Not computed yet at τ = 0.64" in texts(app) and fake_studies == []  # nothing done without a click
    app.button(key="evo_compute").click().run()
    assert fake_studies and "Not computed yet" not in texts(app)


def test_activations_point_and_image_survive_other_pages_and_a_reload(demo_env):
    app = open_page("activations")
    points = app.selectbox(key="act_point").options
    default = app.selectbox(key="act_point").value
    other = next(p for p in points if p != default)
    app.selectbox(key="act_point").set_value(other).run()
    app.number_input(key="act_image").set_value(123).run()
    assert not app.exception
    assert app.query_params["point"] == other and app.query_params["image"] == "123"
    open_page("modules", app)  # the page without these pickers keeps them in the URL
    assert app.query_params["point"] == other and app.query_params["image"] == "123"
    open_page("activations", app)
    assert app.selectbox(key="act_point").value == other and app.number_input(key="act_image").value == 123
    # a reload (a new session from the URL) opens on the same point and image
    again = fresh(dict(app.query_params), "activations")
    assert again.selectbox(key="act_point").value == other and again.number_input(key="act_image").value == 123
    assert not again.info  # nothing to apologise for


def test_a_point_of_another_model_falls_back_to_the_clearest_and_comes_back(demo_env):
    app = open_page("activations")
    points = app.selectbox(key="act_point").options
    other = next(p for p in points if p != app.selectbox(key="act_point").value)
    app.selectbox(key="act_point").set_value(other).run()
    app.selectbox(key="act_run").set_value(str(DEMO / "vit-moda")).run()  # a ViT has other points
    assert not app.exception
    assert app.selectbox(key="act_point").value in app.selectbox(key="act_point").options
    assert "point" not in app.query_params  # the URL names no point this run does not show
    app.selectbox(key="act_run").set_value(str(DEMO / "vgg11-moda")).run()
    assert app.selectbox(key="act_point").value == other


@pytest.mark.parametrize("query, note", [
    ({"point": "no.such.relu"}, "activation point `no.such.relu` is not one of this run's"),
    ({"image": "99999"}, "test image `99999` is not one of this run's"),
    ({"image": "-3"}, "test image `-3` is not one of this run's"),
    ({"image": "abc"}, "test image `abc` is not one of this run's"),
])
def test_an_unknown_point_or_image_in_the_url_falls_back_gently(demo_env, query, note):
    app = fresh(query, "activations")
    assert not app.exception and note in texts(app)
    assert app.selectbox(key="act_point").value == "features.11.relu"  # the page's default point
    assert app.number_input(key="act_image").value == 0
    assert not set(query) & set(app.query_params)  # forgotten, not carried on to other pages


def test_a_linked_point_and_image_survive_pages_that_do_not_show_them(demo_env):
    """A reload on Compose (which has no point or image picker), then How MODA works, then Activations."""
    app = fresh({"run": "demo/vgg11-standard", "point": "features.0.relu", "image": "42"}, "compose")
    app.query_params.clear()  # a sidebar link starts the next page with an empty query string, as a browser does
    open_page("how", app)  # the app puts back what the session holds, checked or not yet checked
    assert app.query_params.get("point") == "features.0.relu" and app.query_params.get("image") == "42"
    open_page("activations", app)
    assert app.selectbox(key="act_point").value == "features.0.relu"
    assert app.number_input(key="act_image").value == 42
