"""A runs folder is data, never code: a run of a model of one's own names its builder's package, and a package
sits next to the runs folder and inside it, each touching a marker file when imported. Listing the runs, and
opening them without the allowance, imports neither (through the real command line, as someone who received the
folder would run it); the allowance (``--models PKG`` or ``MODA_MODELS``) opens them."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from moda_core.import_policy import allow_models
from moda_core.train import TrainConfig, train

pytestmark = pytest.mark.slow
PACKAGE = '''
import pathlib
from torch import nn

pathlib.Path(__file__).resolve().parent.parent.joinpath("ran-{name}").touch()  # imported: its code ran


def make(num_classes, in_channels, image_size):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, 16), nn.ReLU(),
                         nn.Linear(16, num_classes))
'''


def moda(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("MODA_MODELS", "MODA_STUDIO_MODELS")}
    return subprocess.run([sys.executable, "-m", "moda_core", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**environment, **env})


@pytest.fixture(scope="module")
def received(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder as someone received it: ``nextpkg`` next to ``runs/``, ``insidepkg`` inside it, a run of each."""
    root = tmp_path_factory.mktemp("received")
    runs_dir = root / "runs"
    for name, where in (("nextpkg", root), ("insidepkg", runs_dir)):
        (where / name).mkdir(parents=True)
        (where / name / "__init__.py").write_text(PACKAGE.replace("{name}", name))
        sys.path.insert(0, str(where))
        try:
            allow_models([name])
            train(TrainConfig(model=f"{name}:make", epochs=1, train_fraction=0.05), runs_dir, f"run-{name}")
        finally:
            sys.path.remove(str(where))
            sys.modules.pop(name, None)
            allow_models(())
    for marker in root.glob("**/ran-*"):
        marker.unlink()
    return root


def markers(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob("**/ran-*"))


@pytest.mark.parametrize("cwd", ["root", "runs"])
def test_listing_and_opening_import_nothing_without_the_allowance(received, cwd):
    here = received if cwd == "root" else received / "runs"
    listing = moda(["runs", "--runs-dir", str(received / "runs"), "--json"], here)
    assert listing.returncode == 0, listing.stderr
    statuses = {r["name"]: (r["status"], r.get("needs")) for r in json.loads(listing.stdout)["runs"]
                if r["name"].startswith("run-")}  # (the package folder inside lists as a broken run)
    assert statuses == {"run-insidepkg": ("needs-models", "insidepkg"), "run-nextpkg": ("needs-models", "nextpkg")}
    for name in ("nextpkg", "insidepkg"):
        opened = moda(["decompose", str(received / "runs" / f"run-{name}")], here)
        assert opened.returncode == 2 and opened.stderr.count("\n") == 1
        assert f"needs --models {name}" in opened.stderr
    assert markers(received) == [], "a listing or a refused opening ran the package's code"


def test_the_allowance_opens_a_run_and_runs_only_the_allowed_package(received):
    done = moda(["decompose", str(received / "runs" / "run-nextpkg"), "--models", "nextpkg", "--json"], received)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["points"] == ["2"]
    assert markers(received) == ["ran-nextpkg"]
    (received / "ran-nextpkg").unlink()
    done = moda(["runs", "--runs-dir", str(received / "runs"), "--json"], received, MODA_MODELS="nextpkg")
    statuses = {r["name"]: r["status"] for r in json.loads(done.stdout)["runs"] if r["name"].startswith("run-")}
    assert statuses == {"run-insidepkg": "needs-models", "run-nextpkg": "complete"} and markers(received) == []


def test_python_m_does_not_let_the_current_folder_shadow_what_it_imports(received):
    shadow = received / "numpy"
    shadow.mkdir(exist_ok=True)
    (shadow / "__init__.py").write_text("import pathlib\npathlib.Path(__file__).parent.parent.joinpath("
                                        "'ran-numpy').touch()\nraise ImportError('shadowed')\n")
    try:
        done = moda(["runs", "--runs-dir", str(received / "runs")], received)
        assert done.returncode == 0, done.stderr
        assert "ran-numpy" not in markers(received)
    finally:
        shutil.rmtree(shadow)
