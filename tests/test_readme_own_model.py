"""README's "Your own model" section runs as written: its commands from examples/ (the dashboard line is the
browser test's, in test_e2e_any_model_dashboard.py) and its training-loop example."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

pytestmark = pytest.mark.slow
README = ROOT / "README.md"


def block(name: str, language: str) -> str:
    text = README.read_text()
    found = re.search(rf"<!-- own-model: {name} -->\n```{language}\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    assert found, f"README has no {name} block"
    return found.group(1)


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    folder = tmp_path / "examples"
    shutil.copytree(ROOT / "examples" / "mypkg", folder / "mypkg", ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def test_the_readme_commands_train_decompose_and_compose_a_model_of_ones_own(examples):
    commands = [line for line in block("cli", "bash").splitlines() if line.strip() and not line.startswith("#")]
    assert commands[0] == "cd examples" and commands[-1].startswith("../.venv/bin/moda-studio --models mypkg")
    env = {k: v for k, v in os.environ.items() if k not in ("MODA_MODELS", "MODA_STUDIO_MODELS")}
    for line in commands[1:-1]:
        if line.startswith("export "):  # the shell's allowance for the commands after it
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = value
            continue
        argv = shlex.split(line)
        assert argv[:3] == ["../.venv/bin/python", "-m", "moda_core"], line
        done = subprocess.run([sys.executable, *argv[1:]], cwd=examples, capture_output=True, text=True,
                              timeout=600, env=env)
        assert done.returncode == 0, (line, done.stderr[-2000:])
        if " compose " in line:
            assert re.search(r"classes \[1, 7\]: [\d,]+ of [\d,]+ parameters", done.stdout), done.stdout
    assert (examples / "smallnet-1-7.pt2").stat().st_size > 0
    config = (examples / "runs" / "smallnet" / "config.json").read_text()
    assert '"name": "mypkg.nets:make_net"' in config


def test_the_readme_training_loop_runs(examples):
    code = block("python", "python")
    done = subprocess.run([sys.executable, "-c", code], cwd=examples, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = re.fullmatch(r"(\d+) of (\d+) parameters\n", done.stdout)
    assert printed, done.stdout
    assert 0 < int(printed.group(1)) < int(printed.group(2))


def test_without_the_allowance_the_readme_commands_say_which_flag_they_need(examples):
    env = {k: v for k, v in os.environ.items() if k not in ("MODA_MODELS", "MODA_STUDIO_MODELS")}
    train = [sys.executable, "-m", "moda_core", "train", "--model", "mypkg.nets:make_net", "--epochs", "1",
             "--train-fraction", "0.05", "--runs-dir", "runs", "--name", "tiny"]
    assert subprocess.run(train, cwd=examples, capture_output=True, text=True, timeout=600, env=env).returncode == 0
    refused = subprocess.run([sys.executable, "-m", "moda_core", "decompose", "runs/tiny"], cwd=examples,
                             capture_output=True, text=True, timeout=600, env=env)
    assert refused.returncode == 2 and "needs --models mypkg" in refused.stderr
