"""The package as a new user gets it: a wheel built from the checkout, installed (not editable) into a
fresh virtual environment, used from another folder. Dependencies come from the machine's package
sources pinned to requirements.txt (torch from its local wheel); nothing is imported from the checkout.
"""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import CHROMIUM, CHROMIUM_ARGS, ServedDashboard

ROOT = Path(__file__).resolve().parent.parent
WHEEL_BUDGET_MB = 40
DEMO_RUNS = ("swap-strong", "swap-weak", "vgg11-moda", "vgg11-mwt", "vgg11-standard", "vit-moda", "vit-standard")

pytestmark = [pytest.mark.slow, pytest.mark.long]  # a wheel, a fresh venv and a served dashboard: minutes


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result.stdout


def install(folder: Path, extras: str) -> tuple[Path, dict[str, str]]:
    """A wheel of the checkout installed with ``extras`` ("" for none) into a fresh venv in ``folder``: (its bin
    folder, an environment for commands that uses it and not the checkout)."""
    wheels = folder / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
         str(ROOT)], cwd=folder, env=dict(os.environ))
    venv = folder / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=folder, env=dict(os.environ))
    (wheel,) = wheels.glob("moda_studio-*.whl")
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         f"{wheel}{extras}", "-c", str(ROOT / "requirements.txt")], cwd=folder, env=env, timeout=1200)
    return venv / "bin", env | {"MODA_WHEEL": str(wheel)}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The package with its dashboard: (bin folder, environment)."""
    return install(tmp_path_factory.mktemp("install"), "[dashboard]")


def test_the_core_install_trains_decomposes_composes_and_studies_without_extras(tmp_path):
    """``pip install moda-studio`` without extras: every command of the engine works; the version is one."""
    (tmp_path / "core").mkdir()
    bin_dir, env = install(tmp_path / "core", "")
    where, runs_dir = Path("/"), tmp_path / "R"
    version = run([str(bin_dir / "python"), "-c", "import importlib.metadata as m, moda_core; "
                   "print(moda_core.__version__, m.version('moda-studio'))"], where, env).split()
    assert version[0] == version[1], version
    listed = run([str(bin_dir / "python"), "-m", "pip", "list", "--format=freeze"], where, env)
    assert "streamlit" not in listed.lower() and "plotly" not in listed.lower()  # no dashboard came along
    assert "moda_core/py.typed" in zipfile.ZipFile(env["MODA_WHEEL"]).namelist()
    run([str(bin_dir / "moda"), "train", "--model", "lenet5", "--epochs", "1", "--runs-dir", str(runs_dir),
         "--name", "core"], where, env)
    assert '"mean_module_size"' in run([str(bin_dir / "moda"), "decompose", str(runs_dir / "core"), "--json"],
                                       where, env)
    run([str(bin_dir / "moda"), "compose", str(runs_dir / "core"), "--classes", "0", "1", "--out",
         str(tmp_path / "pair.pt2")], where, env)
    studied = run([str(bin_dir / "moda"), "subtasks", str(runs_dir / "core"), "--sizes", "2", "--samples", "2",
                   "--json"], where, env)
    assert studied.strip(), studied


def test_wheel_holds_the_two_packages_and_their_data_within_budget(installed):
    wheel = Path(installed[1]["MODA_WHEEL"])
    assert wheel.stat().st_size < WHEEL_BUDGET_MB * 1024 * 1024, f"{wheel.stat().st_size / 2**20:.1f} MB"
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names if not name.startswith("moda_studio-")} == {"moda_core", "dashboard"}
    for run_name in DEMO_RUNS:
        assert f"moda_core/assets/demo/{run_name}/model.safetensors" in names
    assert "moda_core/assets/mnist5k.npz" in names and "moda_core/assets/results/compare.csv" in names


def test_installed_commands_work_from_another_folder(installed, tmp_path):
    bin_dir, env = installed
    runs_dir = tmp_path / "R"
    where = Path("/")
    imported = run([str(bin_dir / "python"), "-c", "import moda_core; print(moda_core.__file__)"], where, env)
    assert str(bin_dir.parent) in imported and str(ROOT) not in imported
    run([str(bin_dir / "moda"), "train", "--model", "lenet5", "--epochs", "1", "--runs-dir", str(runs_dir),
         "--name", "first"], where, env)
    decomposed = run([str(bin_dir / "moda"), "decompose", str(runs_dir / "first"), "--json"], where, env)
    assert '"mean_module_size"' in decomposed
    out = tmp_path / "pair.pt2"
    run([str(bin_dir / "moda"), "compose", str(runs_dir / "first"), "--classes", "0", "1", "--out", str(out)],
        where, env)
    assert out.stat().st_size > 0
    listed = run([str(bin_dir / "python"), "-m", "moda_core", "runs", "--runs-dir", str(runs_dir)], where, env)
    assert listed.startswith("first: lenet5 on mnist5k") and "complete" in listed


def test_installed_dashboard_serves_the_bundled_demo(installed, tmp_path):
    bin_dir, env = installed
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright python package is missing")
    env = env | {"HOME": str(tmp_path)}
    with ServedDashboard(env, command=[str(bin_dir / "moda-studio")], cwd=tmp_path) as server:
        with playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(90_000)
            page.goto(f"{server.url}/runs")
            picker = page.locator("[data-testid='stSelectbox']").filter(has=page.get_by_text("Run", exact=True))
            picker.wait_for()  # the training-curves picker
            text = page.locator("body").inner_text()
            # the runs table draws on a canvas: read the run names from the picker's options
            picker.click()
            page.get_by_role("option").first.wait_for()
            options = page.get_by_role("option").all_inner_texts()
            browser.close()
    for run_name in DEMO_RUNS:
        assert f"demo (bundled)/{run_name}" in options, (run_name, options)
    assert "Traceback" not in text and "This page stopped" not in text
