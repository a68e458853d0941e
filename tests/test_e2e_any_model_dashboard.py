"""The dashboard on runs of models of one's own: every page (headless, AppTest) and a real browser.

Runs: the README's example (``mypkg.nets:make_net``, from examples/) trained with MODA (with checkpoints) and
its standard twin; a small torchvision ViT (token units); a model fx cannot trace (hooks only). The server
imports model code only from the packages it was started with (``--models``)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import CHROMIUM, CHROMIUM_ARGS, ROOT, ServedDashboard, charts, open_page, texts

from moda_core.train import TrainConfig, train

pytestmark = pytest.mark.slow
EXAMPLES = ROOT / "examples"
PAGES = ["runs", "activations", "modules", "evolution", "tau", "compose", "swap"]


@pytest.fixture(scope="module")
def own_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Runs folders, each with the runs one scenario needs."""
    import sys

    sys.path.insert(0, str(EXAMPLES))
    folders = {name: tmp_path_factory.mktemp(name) for name in ("smallnet", "vit", "hooked")}
    common = dict(epochs=2, train_fraction=0.3, batch_size=64)
    train(TrainConfig(model="mypkg.nets:make_net", checkpoint_every=1, **common), folders["smallnet"], "smallnet-moda")
    train(TrainConfig(model="mypkg.nets:make_net", alpha=0, beta=0, gamma=0, **common), folders["smallnet"],
          "smallnet-standard")
    train(TrainConfig(model="graph_models:make_vit", epochs=1, train_fraction=0.1), folders["vit"], "vit-own")
    train(TrainConfig(model="graph_models:make_hookednet", epochs=1, train_fraction=0.1), folders["hooked"], "hooked")
    return folders


def serve_folder(monkeypatch: pytest.MonkeyPatch, folder: Path, models: str = "mypkg,graph_models") -> None:
    monkeypatch.setenv("MODA_RUNS_DIR", str(folder))
    monkeypatch.setenv("MODA_TRAINING", "off")
    monkeypatch.setenv("MODA_MODELS", models)
    monkeypatch.syspath_prepend(str(EXAMPLES))


@pytest.mark.parametrize("page", PAGES)
def test_every_page_shows_a_model_of_ones_own(own_runs, monkeypatch, page):
    serve_folder(monkeypatch, own_runs["smallnet"])
    app = open_page(page)
    shown = texts(app)
    assert "cannot be composed" not in shown and "does not load" not in shown
    if page == "activations":
        assert "relu_1" in shown or "relu" in shown  # call-site names of make_net
        assert charts(app)
    if page == "modules":  # run B defaults to the standard-trained twin of run A
        assert "A: smallnet" in shown and "B: " in shown and "smallnet-standard" in shown
        assert len(charts(app)) >= 3
    if page == "compose":
        assert [m.label for m in app.metric][:3] == ["Parameters", "FLOPs per image", "Accuracy on these classes"]
        assert float(app.metric[0].value.replace(",", "")) > 0


def test_token_units_and_what_the_composer_kept_whole(own_runs, monkeypatch):
    serve_folder(monkeypatch, own_runs["vit"])
    app = open_page("activations")
    assert "of 64 units" in texts(app)  # the MLP's 64 features, not its 17 tokens
    app = open_page("compose")
    assert [e for e in app.expander if e.label.startswith("Kept whole")]
    reasons = " ".join(app.dataframe[0].value["why"])
    assert "MultiheadAttention" in reasons and "layer norm" in reasons
    assert "keeps some operations whole" in texts(app) and "layer norm normalises over the units" in texts(app)


def test_a_model_that_cannot_be_traced_says_why_it_cannot_be_composed(own_runs, monkeypatch):
    serve_folder(monkeypatch, own_runs["hooked"])
    assert charts(open_page("activations"))  # recorded through hooks
    for page in ("modules", "compose", "tau"):
        assert "cannot be composed: cannot trace HookedNet" in texts(open_page(page))


def test_without_leave_to_import_the_runs_say_which_flag_they_need(own_runs, monkeypatch):
    import streamlit as st

    serve_folder(monkeypatch, own_runs["smallnet"], models="")
    st.cache_data.clear()
    st.cache_resource.clear()
    shown = texts(open_page("runs"))
    assert "2 runs in" in shown and "need `--models mypkg`" in shown and "moda-studio --models mypkg" in shown
    assert "could not be loaded" not in shown and "Traceback" not in shown
    for page in ("activations", "compose"):
        shown = texts(open_page(page))
        assert "need `--models mypkg`" in shown and "No runs yet" not in shown


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt-get install chromium)")
def test_every_page_in_a_real_browser_on_a_model_of_ones_own(own_runs, tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright python package is missing")
    # served as a user would: from the folder that holds their package, which --models allows
    env = dict(os.environ, STREAMLIT_SERVER_FILE_WATCHER_TYPE="none", MODA_TRAINING="off")
    env.pop("MODA_MODELS", None)
    args = ("--host", "127.0.0.1", "--runs-dir", str(own_runs["smallnet"]), "--models", "mypkg")
    with ServedDashboard(env, args, start_timeout=60, cwd=EXAMPLES) as served, \
            playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(120_000)
        for name in PAGES:
            page.goto(f"{served.url}/{name}")
            page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')")
            page.locator("h1").first.wait_for()
            body = page.locator("body").inner_text()
            assert page.locator("[data-testid='stException']").count() == 0, name
            assert "This page stopped" not in body and "does not load" not in body, (name, body[:800])
            assert "smallnet" in body, name
            if name in ("activations", "modules", "compose"):
                page.locator(".js-plotly-plot .main-svg").first.wait_for()
            page.screenshot(path=str(tmp_path / f"own-{name}.png"), full_page=True)
        browser.close()
