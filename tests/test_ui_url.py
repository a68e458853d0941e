"""Compose's classes and Swap's settings live in the URL: a link opens the page as it was shared (that the
URL follows the visitor's picks is checked in a real browser, test_browser_history.py: headless page runs
skip app.py, which writes the URL)."""
from __future__ import annotations

import pytest
from helpers import APP, TIMEOUT, texts

pytestmark = pytest.mark.slow


def opened(page: str, **params: str):
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in params.items():
        app.query_params[key] = value
    app.run()
    app.switch_page(f"views/{page}.py")
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_a_compose_link_opens_its_classes_and_the_url_follows_a_change():
    app = opened("compose", run="demo/vgg11-moda", classes="0,3")
    assert app.multiselect(key="comp_classes").value == ["0", "3"]
    bad = opened("compose", run="demo/vgg11-moda", classes="42,x")
    assert bad.multiselect(key="comp_classes").value == ["0", "1"]
    assert "are not this run's" in texts(bad)


def test_a_swap_link_opens_its_runs_class_and_epochs():
    app = opened("swap", weak="demo/swap-weak", strong="demo/vgg11-moda", **{"class": "5", "epochs": "2"})
    assert app.selectbox(key="swap_weak").value.endswith("swap-weak")
    assert app.selectbox(key="swap_strong").value.endswith("vgg11-moda")
    assert app.selectbox(key="swap_class").value == 5
    assert app.number_input(key="swap_epochs").value == 2
