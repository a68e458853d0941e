"""Shared fixtures: small trained runs on the embedded data set, made once per test session.

The fast lane (``pytest -m "not slow"``) leaves out every test marked slow: trainings, torchrun,
CLI subprocesses and the browser. Tests that use a fixture which trains a model are marked slow
here automatically (``TRAINING_FIXTURES``), and so are browser tests.
"""
from __future__ import annotations

import pytest
import torch

from moda_core.train import TrainConfig, train

torch.set_num_threads(2)

TRAINING_FIXTURES = {"lenet_moda_run", "pair", "masks"}  # conftest's and test_replace.py's trained runs


def pytest_collection_modifyitems(config, items):
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())) or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def pages_through_app_py(monkeypatch):
    """Open every dashboard page through app.py (sidebar, error guard), as the served app does.

    AppTest resets Streamlit's "pages/ folder" flag before each run, and since dashboard/pages/ exists it
    would then run a switched-to page file on its own, without app.py. Dashboard test modules use it with
    ``pytestmark = pytest.mark.usefixtures("pages_through_app_py")``."""
    from streamlit.runtime.pages_manager import PagesManager

    init = PagesManager.__init__

    def navigation_only(self, *args, **kwargs):
        init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", navigation_only)


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def lenet_moda_run(runs_dir):
    """LeNet-5 trained with MODA for 3 epochs on mnist5k (a few seconds on CPU)."""
    return train(TrainConfig(model="lenet5", epochs=3, seed=0, checkpoint_every=1), runs_dir, "lenet-moda")
