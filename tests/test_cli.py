"""The command line as a user runs it: JSON output, listing, and one-line errors without tracebacks."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # every test here starts the CLI in a subprocess


def cli(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "moda_core", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_train_json_then_list(tmp_path):
    out = cli("train", "--model", "mlp", "--width", "0.25", "--epochs", "1", "--runs-dir", str(tmp_path),
              "--name", "cli-run", "--json")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["run"] == str(tmp_path / "cli-run")
    assert 0.5 < result["test_accuracy"] <= 1 and result["epochs"] == 1 and result["seconds"] > 0
    listed = json.loads(cli("runs", "--runs-dir", str(tmp_path), "--json").stdout.strip().splitlines()[-1])
    assert [r["name"] for r in listed["runs"]] == ["cli-run"] and listed["runs"][0]["model"] == "mlp"
    text = cli("runs", "--runs-dir", str(tmp_path)).stdout
    assert "cli-run: mlp on mnist5k" in text


@pytest.mark.parametrize("args,message", [
    (["train", "--model", "alexnet"], "unknown model 'alexnet'"),
    (["train", "--dataset", "imagenet"], "unknown data set 'imagenet'"),
    (["train", "--classes", "3", "12"], "out of range"),
    (["train", "--dataset", "cifar10"], "needs a local folder"),
    (["train", "--dataset", "cifar10", "--data-root", "/nonexistent/moda"], "/nonexistent/moda"),
])
def test_user_errors_are_one_line(tmp_path, args, message):
    result = cli(*args, "--runs-dir", str(tmp_path), "--epochs", "1", check=False)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: ")


def test_an_error_says_what_in_plain_words_and_the_command_line_adds_its_flags(tmp_path):
    """``ModaError``: the message any caller may show has no command-line flag; the CLI prints the hint after it."""
    from moda_core.errors import ModaError
    from moda_core.runs import create_run

    (tmp_path / "taken").mkdir()
    with pytest.raises(ModaError) as caught:
        create_run(tmp_path, "taken", "unused")
    assert "--" not in str(caught.value) and str(caught.value).endswith("taken already exists")
    assert caught.value.with_hint().endswith("already exists: pick another --name, --resume to continue it, or "
                                             "--overwrite to replace it")
    assert ModaError("plain").with_hint() == "plain"
