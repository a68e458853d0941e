"""Shared fixtures (the demo runs folder, small trained runs on the embedded data set made once per test
session) and the fast lane's rule: a test that is not marked slow trains nothing.

The fast lane (``pytest -m "not slow"``) leaves out every test marked slow: trainings, torchrun,
CLI subprocesses, dashboard pages run end to end (AppTest) and the browser. Tests that use a fixture
which trains a model (``TRAINING_FIXTURES``) or runs pages through app.py (``PAGE_FIXTURES``) are
marked slow here automatically, and so are browser tests. The rule is enforced, not only
listed: while a test that is not marked slow sets up and runs, ``moda_core.train.train_step`` refuses to
run (so an unlisted training fixture fails its first fast test), and a fast test that starts
``moda_core train`` in a subprocess fails before it starts.
"""
from __future__ import annotations

import inspect
import re
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from helpers import DEMO

import moda_core.train as trainer
from moda_core.train import TrainConfig, train

torch.set_num_threads(2)

# fixtures that train a model: conftest's, test_replace.py's and test_store_crashes.py's trained runs
TRAINING_FIXTURES = {"lenet_moda_run", "pair", "masks", "tiny_run"}

# a `moda_core train` command line in a test's source: "train" as an argument of a call or a list
CLI_TRAIN = re.compile(r"""[(\[,]\s*["']train["']\s*[,)\]]""")
SUBPROCESS = re.compile(r"\bsubprocess\.|\bPopen\(|\btorchrun\(")


# running dashboard pages end to end (Streamlit's AppTest through app.py): seconds per test, slow lane
PAGE_FIXTURES = {"dashboard_pages"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if (TRAINING_FIXTURES | PAGE_FIXTURES) & fixtures or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)


class TrainingInFastLane(Exception):
    """Raised by the trainer while a test that is not marked slow sets up or runs."""


def _starts_cli_training(item: pytest.Item) -> bool:
    """Whether the test's source runs ``moda_core train`` in a subprocess, itself or through a function of
    its module or of tests/helpers.py (such as ``torchrun``) that starts one."""
    function = getattr(item, "function", None)
    if function is None:
        return False
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return False
    if not CLI_TRAIN.search(source):
        return False
    if SUBPROCESS.search(source):
        return True
    for name in set(re.findall(r"\b(\w+)\(", source)):
        called = getattr(item.module, name, None)
        if inspect.isfunction(called) and called.__module__ in (item.module.__name__, "helpers"):
            try:
                if SUBPROCESS.search(inspect.getsource(called)):
                    return True
            except (OSError, TypeError):
                continue
    return False


@contextmanager
def _no_training(item: pytest.Item) -> Iterator[None]:
    """For a test that is not marked slow: ``train_step`` raises while the test sets up (fixtures included,
    whatever their scope) or runs, and the test fails even where the engine caught the error (a dashboard
    training job reports it on the page)."""
    if item.get_closest_marker("slow"):
        yield
        return
    if _starts_cli_training(item):
        pytest.fail(f"{item.nodeid} runs `moda_core train` in a subprocess: mark it slow", pytrace=False)
    calls: list[str] = []
    message = (f"{item.nodeid} trains a model (moda_core.train.train_step was called) but is not marked slow: "
               "mark it slow, or add the fixture that trains to TRAINING_FIXTURES in tests/conftest.py")

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        calls.append(message)
        raise TrainingInFastLane(message)

    original = trainer.train_step
    trainer.train_step = refuse
    try:
        yield
    except BaseException:
        if calls:  # the engine may have wrapped the refusal in an error of its own: say what happened
            raise pytest.fail.Exception(message, pytrace=False) from None
        raise
    finally:
        trainer.train_step = original
    if calls:
        pytest.fail(message, pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, Any]:
    with _no_training(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    with _no_training(item):
        return (yield)


@pytest.fixture
def demo_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dashboard's runs folder is the bundled demo runs."""
    monkeypatch.setenv("MODA_RUNS_DIR", str(DEMO))


@pytest.fixture
def dashboard_pages() -> None:
    """A test that opens dashboard pages (Streamlit's AppTest through app.py): seconds each, so the slow lane
    (``PAGE_FIXTURES``). Dashboard test modules use it with ``pytestmark = pytest.mark.usefixtures(...)``."""


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def lenet_moda_run(runs_dir):
    """LeNet-5 trained with MODA for 3 epochs on mnist5k (a few seconds on CPU)."""
    return train(TrainConfig(model="lenet5", epochs=3, seed=0, checkpoint_every=1), runs_dir, "lenet-moda")


TEST_MODEL_PACKAGES = ("graph_models", "outside_models", "mypkg")  # the builders the tests define


@pytest.fixture(autouse=True)
def _test_models_allowed(monkeypatch) -> Iterator[None]:
    """Each test may build the tests' own models (as a person who passed ``--models`` would); a command run
    in-process (``moda_core.cli.main``, a page) replaces that with its own allowance while it runs, and tests of
    the policy itself set theirs. ``$MODA_MODELS`` from the shell running the tests does not count."""
    from moda_core.import_policy import ALLOW_ENV, OLD_ALLOW_ENV, allow_models

    monkeypatch.delenv(ALLOW_ENV, raising=False)
    monkeypatch.delenv(OLD_ALLOW_ENV, raising=False)
    allow_models(TEST_MODEL_PACKAGES)
    yield
    allow_models(TEST_MODEL_PACKAGES)
