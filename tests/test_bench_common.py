"""The benches' one command line (``bench/common.py``): every bench takes ``--quick``, ``--json`` and ``--out``; a run
writes a file only when ``--out`` names it, ``--quick`` never into a committed result folder, ``--json`` prints
one parseable JSON document; and no bench reaches into ``tests/``."""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import COMMITTED, ROOT, BenchParser

BENCHES = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if "def main(" in p.read_text())


def committed_state() -> dict[str, str]:
    """Every file under the committed result folders, with a hash of its bytes and its mtime."""
    return {str(path): f"{hashlib.sha256(path.read_bytes()).hexdigest()} {path.stat().st_mtime_ns}"
            for folder in COMMITTED for path in sorted(folder.rglob("*")) if path.is_file()}


def parser() -> BenchParser:
    made = BenchParser("A bench.\n\nMore words.", quick={"epochs": 2, "models": ["lenet5"]}, out="write it here")
    made.add_argument("--epochs", type=int, default=15)
    made.add_argument("--models", nargs="+", default=["lenet5", "vgg11"])
    return made


@pytest.mark.slow  # a bench run in a subprocess: 3 s, CI's lane (the fast lane's bound is 45 s)
def test_a_quick_run_writes_nothing_and_its_json_parses(tmp_path):
    before = committed_state()
    done = subprocess.run([sys.executable, "-m", "bench.overlap", "--quick", "--json"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # stdout holds the JSON and nothing else
    assert result["model"] == "vgg11" and result["width"] == 0.125 and result["brute_classes"] == 3
    assert committed_state() == before
    assert not list(tmp_path.iterdir())  # nor anything where it ran


@pytest.mark.parametrize("out", ["bench/results/x.md", "assets/results/compare.csv", "bench/results/sub/x.csv"])
def test_quick_refuses_to_write_a_committed_result(out, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as exit_:
        parser().parse_args(["--quick", "--out", out])
    assert exit_.value.code == 2 and "--quick never writes a committed result" in capsys.readouterr().err
    monkeypatch.chdir(ROOT / "bench")  # the same folder by a relative path from elsewhere
    with pytest.raises(SystemExit):
        parser().parse_args(["--quick", "--out", os.path.relpath(ROOT / out)])
    assert parser().parse_args(["--out", out]).out == Path(out)  # a full run may refresh it


def test_quick_changes_defaults_and_options_given_win(tmp_path):
    args = parser().parse_args(["--quick", "--out", str(tmp_path / "x.md")])
    assert (args.epochs, args.models, args.json, args.out) == (2, ["lenet5"], False, tmp_path / "x.md")
    args = parser().parse_args(["--quick", "--epochs", "15", "--json"])
    assert (args.epochs, args.models, args.json, args.out) == (15, ["lenet5"], True, None)
    assert parser().parse_args([]).epochs == 15
    assert "--epochs 2, --models lenet5" in parser().format_help()


@pytest.mark.parametrize("name", BENCHES)
def test_every_bench_takes_the_shared_options(name, monkeypatch, capsys):
    main = importlib.import_module(f"bench.{name}").main
    monkeypatch.setattr(sys, "argv", [name, "--help"])
    with pytest.raises(SystemExit) as exit_:
        main()
    shown = capsys.readouterr().out
    assert exit_.value.code == 0
    assert all(option in shown for option in ("--quick", "--json", "--out")), shown
    assert "small, fast settings (--" in shown  # what --quick sets, named


def test_no_bench_reaches_into_the_tests_folder():
    for path in (ROOT / "bench").glob("*.py"):
        text = path.read_text()
        assert '"tests"' not in text and "from helpers" not in text and "import helpers" not in text, path.name
