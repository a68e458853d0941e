"""Serving the dashboard safely (docs/design.md, Serving the dashboard): local by default, runs folders
chosen by the server, one training at a time for every session, and no traceback or server path for a
visitor."""
from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import tomllib
import torch
from helpers import CHROMIUM, ServedDashboard, open_page, shown
from streamlit.testing.v1 import AppTest

from dashboard import engine, folders, serve, training
from dashboard.ui import PAGE_STOPPED
from moda_core import io
from moda_core import runs as run_store
from moda_core.errors import ModaError, TrainingStopped
from moda_core.train import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
DEMO = ROOT / "assets" / "demo"
TIMEOUT = 120
RUN_PICKERS = {"runs_run", "act_run", "mod_run_a", "mod_run_b", "comp_run", "swap_weak", "swap_strong"}


pytestmark = pytest.mark.usefixtures("dashboard_pages")  # tests/conftest.py


def texts_of(app: AppTest) -> list[str]:
    return [m.value for m in [*app.info, *app.warning, *app.error, *app.success]]


def everything_shown(app: AppTest) -> str:
    """All the text a visitor sees, as a reader sees its characters (``shown``: escapes removed, so a path
    cannot hide behind its backslashes): main area and sidebar, messages, labels and select box options."""
    parts = [e.value for kind in ("markdown", "caption", "title", "info", "warning", "error", "success",
                                  "subheader", "exception") for e in getattr(app, kind)]
    parts += [e.value for e in app.sidebar.caption] + [e.value for e in app.sidebar.warning]
    for box in [*app.selectbox, *app.sidebar.selectbox]:
        parts += [box.label, *map(str, box.options)]
    return "\n".join(shown(str(part)) for part in parts)


# ----- runs folders: the server chooses, the visitor picks ---------------------------------------------

def test_sidebar_offers_only_the_configured_folders(monkeypatch, tmp_path):
    mine = tmp_path / "classroom"
    shutil.copytree(DEMO / "swap-weak", mine / "weak", ignore=shutil.ignore_patterns("checkpoints"))
    monkeypatch.setenv("MODA_RUNS_DIR", os.pathsep.join([str(DEMO), str(mine)]))
    app = open_page("runs", stopped_ok=True)
    assert not app.text_input(key="train_name").label.startswith("Runs")
    assert not app.sidebar.text_input  # no field where a visitor could type a path
    picker = app.sidebar.selectbox(key="runs_folder")
    assert picker.options == [folders.ALL_FOLDERS, "demo (bundled)", "classroom"]
    runs = app.dataframe[0].value["run"].tolist()
    assert "classroom/weak" in runs and "demo (bundled)/vgg11-moda" in runs
    assert str(tmp_path) not in everything_shown(app) and str(ROOT) not in everything_shown(app)

    picker.set_value("classroom").run()
    assert app.dataframe[0].value["run"].tolist() == ["classroom/weak"]
    app.session_state["runs_dirs_text"] = "/"  # the old free-text field's key: ignored
    app.run()
    assert not app.exception and app.dataframe[0].value["run"].tolist() == ["classroom/weak"]
    # a value that is not a configured folder's label selects nothing else than the configured folders
    monkeypatch.setattr(folders, "st", SimpleNamespace(session_state={"runs_folder": "/etc"}))
    assert folders.runs_dirs() == [DEMO, mine]
    monkeypatch.setattr(folders, "st", SimpleNamespace(session_state={"runs_folder": "classroom"}))
    assert folders.runs_dirs() == [mine]


def test_new_runs_go_only_into_the_training_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("MODA_RUNS_DIR", os.pathsep.join([str(DEMO), str(tmp_path / "a"), str(tmp_path / "b")]))
    configured = folders.configured_folders()
    assert [f.trains_here for f in configured] == [False, True, False]
    assert folders.training_dir() == tmp_path / "a"
    monkeypatch.setenv("MODA_RUNS_DIR", str(DEMO))
    assert folders.training_dir() is None  # the bundled demo is never written to
    monkeypatch.setenv("MODA_RUNS_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("MODA_TRAINING", "off")
    assert folders.training_dir() is None
    app = open_page("runs", stopped_ok=True)
    assert any("Training from the browser is off" in i.value for i in app.info)
    assert not app.get("form")


def test_folder_labels_are_unique_and_messages_hide_server_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("MODA_RUNS_DIR", os.pathsep.join([str(tmp_path / "x" / "runs"), str(tmp_path / "y" / "runs")]))
    assert [f.label for f in folders.configured_folders()] == ["runs", "y/runs"]
    message = folders.public(f"corrupt JSON file {tmp_path}/y/runs/r1/config.json: line 1; also /etc/passwd "
                           f"and {ROOT}/assets/demo/vgg11-moda")
    assert "y/runs/r1/config.json" in message and "…/passwd" in message and str(tmp_path) not in message
    assert "/etc" not in message and str(ROOT) not in message
    assert folders.public("τ = 0.90, 3/4 epochs, a/b ratio") == "τ = 0.90, 3/4 epochs, a/b ratio"


# ----- one training at a time --------------------------------------------------------------------------

class FakeRun:
    def __init__(self, name: str):
        self.name, self.epoch, self.metrics = name, 3, {"test_accuracy": 0.5, "seconds": 1.0}


class BlockingRunner:
    """Stands in for moda_core.train.train: reports epoch 1 of 3, then waits until released (or, like the
    trainer, raises TrainingStopped keeping epoch 0 once its stop event is set)."""

    def __init__(self):
        self.release, self.started, self.calls = threading.Event(), threading.Event(), []

    def __call__(self, config, runs_dir, name, progress=None, stop=None):
        from moda_core.train import Progress

        self.calls.append((config.model, Path(runs_dir), name))
        progress(Progress("batch", 1, config.epochs, 2, 10))
        self.started.set()
        deadline = time.monotonic() + 30
        while not self.release.wait(0.02):
            if stop is not None and stop.is_set():
                raise TrainingStopped(Path(runs_dir) / (name or "default-name"), 0, config.epochs)
            assert time.monotonic() < deadline
        return FakeRun(name or "default-name")


def config(epochs: int = 3) -> TrainConfig:
    return TrainConfig(model="mlp", dataset="mnist5k", epochs=epochs, device="cpu")


def test_the_training_slot_takes_one_training_at_a_time(tmp_path):
    runner = BlockingRunner()
    slot = training.TrainingSlot(runner)
    slot.start(config(), tmp_path, "first", "runs")
    assert runner.started.wait(10)
    status = slot.status()
    assert status.busy and status.run == "runs/first" and (status.epoch, status.epochs) == (1, 3)
    with pytest.raises(training.TrainingBusy, match=r"busy: runs/first is training, epoch 1/3"):
        slot.start(config(), tmp_path, "second", "runs")
    assert not slot.wait(timeout=0.2)  # still training
    runner.release.set()
    assert slot.wait(timeout=10)
    done = slot.status()
    assert not done.busy and done.outcome == "done" and "runs/first" in done.message and "50.0%" in done.message
    assert [c[2] for c in runner.calls] == ["first"]  # the refused start never reached the trainer
    runner.release.clear()
    runner.started.clear()
    slot.start(config(), tmp_path, "second", "runs")  # free again
    runner.release.set()
    assert slot.wait(timeout=10) and [c[2] for c in runner.calls] == ["first", "second"]


def test_a_failing_training_frees_the_slot_and_tells_no_server_path(tmp_path):
    def failing(config, runs_dir, name, progress=None, stop=None):
        raise ModaError(f"run folder {runs_dir}/{name} already exists")

    slot = training.TrainingSlot(failing)
    slot.start(config(), tmp_path, "taken", "runs", shown=lambda text: text.replace(str(tmp_path), "runs"))
    assert slot.wait(10)
    status = slot.status()
    assert status.outcome == "failed" and "runs/taken already exists" in status.message
    assert str(tmp_path) not in status.message

    def crashing(config, runs_dir, name, progress=None, stop=None):
        raise RuntimeError(f"CUDA exploded in {runs_dir}")

    slot = training.TrainingSlot(crashing)
    slot.start(config(), tmp_path, None, "runs")
    assert slot.wait(10)
    status = slot.status()
    assert status.outcome == "failed" and "unexpected error" in status.message and "exploded" not in status.message


def test_a_training_folder_that_is_a_file_is_refused_with_a_message(monkeypatch, tmp_path):
    not_a_folder = tmp_path / "runs-file"
    not_a_folder.write_text("I am a file")
    with pytest.raises(ModaError, match="is a file, not a folder"):
        training.check_training_folder(not_a_folder, "runs-file")
    monkeypatch.setenv("MODA_RUNS_DIR", str(not_a_folder))
    app = open_page("runs", stopped_ok=True)
    assert any("is a file" in w.value for w in app.sidebar.warning)
    app.text_input(key="train_name").set_value("x")
    app.form_submit_button[0].click().run()
    assert not app.exception
    assert any("Training did not start" in e.value and "is a file, not a folder" in e.value for e in app.error)
    assert str(tmp_path) not in everything_shown(app)
    assert not training.slot().status().busy


def test_a_second_session_sees_busy_and_cannot_train(monkeypatch, tmp_path):
    monkeypatch.setenv("MODA_RUNS_DIR", str(tmp_path))
    slot = training.slot()  # the server's slot (st.cache_resource): what every session of this process shares
    assert slot.wait(timeout=300)
    runner = BlockingRunner()
    monkeypatch.setattr(slot, "_runner", runner)
    try:
        # two visitors with the Runs page open
        first, late = open_page("runs", stopped_ok=True), open_page("runs", stopped_ok=True)
        first.text_input(key="train_name").set_value("lesson-1")
        first.form_submit_button[0].click().run()
        assert not first.exception and runner.started.wait(10)
        assert first.form_submit_button[0].disabled

        # a visitor who opens the page now: the form is disabled, the status says why
        second = open_page("runs", stopped_ok=True)
        assert second.form_submit_button[0].disabled
        assert any("busy: " in shown(i.value) and "lesson-1 is training, epoch 1/5" in shown(i.value)
                   for i in second.info), \
            [i.value for i in second.info]
        # a visitor whose page was drawn before the training started presses Train: refused, not queued
        late.text_input(key="train_name").set_value("lesson-2")
        late.form_submit_button[0].click().run()
        assert not late.exception and late.form_submit_button[0].disabled
        assert any("lesson-1 is training" in shown(m.value) for m in [*late.info, *late.warning]), texts_of(late)
        assert [c[2] for c in runner.calls] == ["lesson-1"]
        with pytest.raises(training.TrainingBusy, match="lesson-1 is training"):  # what a page gets then
            slot.start(config(), tmp_path, "lesson-3", "runs")
    finally:
        runner.release.set()
        assert slot.wait(timeout=30)
    second.run()
    assert not second.form_submit_button[0].disabled
    assert any("lesson-1" in shown(s.value) for s in second.success)


# ----- broken runs: a message, never a traceback ----------------------------------------------------

def test_a_run_that_does_not_load_is_never_the_default_and_pages_say_why(monkeypatch, tmp_path):
    folder = tmp_path / "runs"
    shutil.copytree(DEMO / "swap-weak", folder / "a-good", ignore=shutil.ignore_patterns("checkpoints"))
    shutil.copytree(DEMO / "swap-weak", folder / "0-truncated", ignore=shutil.ignore_patterns("checkpoints"))
    weights = folder / "0-truncated" / run_store.MODEL
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    monkeypatch.setenv("MODA_RUNS_DIR", str(folder))
    for page in ("runs", "activations", "modules", "compose", "swap"):
        app = open_page(page, stopped_ok=True)
        boxes = [b for b in app.selectbox if b.key in RUN_PICKERS]
        assert boxes, page
        for box in boxes:
            assert box.value.startswith(str(folder / "a-good")), (page, box.key, box.value)
        assert not [e.value for e in app.error if e.value.startswith(PAGE_STOPPED)], page
        assert str(tmp_path) not in everything_shown(app), page


def test_a_mismatched_masks_file_shows_a_message_not_a_traceback(monkeypatch, tmp_path):
    folder = tmp_path / "runs"
    run_dir = folder / "vgg11-moda"
    shutil.copytree(DEMO / "vgg11-moda", run_dir, ignore=shutil.ignore_patterns("checkpoints"))
    masks_files = sorted(run_dir.glob("masks-*.safetensors"))
    assert masks_files
    for path in masks_files:  # right weights fingerprint and point names, wrong shapes
        masks, meta = io.load_tensors(path)
        io.save_tensors(path, {p: torch.ones(3, 2, dtype=torch.bool) for p in masks}, meta)
    monkeypatch.setenv("MODA_RUNS_DIR", str(folder))
    monkeypatch.setenv("MODA_TRAINING", "off")  # the folder stays as made here
    for page in ("activations", "compose", "modules"):
        app = open_page(page, stopped_ok=True)  # asserts that no exception reached the page
        errors = [e.value for e in app.error]
        if errors:  # the engine may also recompute masks that disagree with the model: then the page works
            assert any(PAGE_STOPPED in e or "does not load" in e for e in errors), errors
        assert "Traceback" not in everything_shown(app) and str(tmp_path) not in everything_shown(app), page


def test_a_page_error_becomes_a_short_message(monkeypatch, tmp_path):
    monkeypatch.setenv("MODA_RUNS_DIR", str(DEMO))

    def explode(*args, **kwargs):
        raise ValueError(f"secret detail in {tmp_path}/x.py")

    monkeypatch.setattr(engine, "class_names", explode)
    app = open_page("compose", stopped_ok=True)
    assert not app.exception
    assert any(e.value.startswith(PAGE_STOPPED) and "unexpected error" in e.value for e in app.error)
    assert "secret detail" not in everything_shown(app) and str(tmp_path) not in everything_shown(app)

    def refuse(*args, **kwargs):
        raise ModaError(f"masks file {tmp_path}/runs/r/masks.safetensors does not match the model")

    monkeypatch.setattr(engine, "class_names", refuse)
    app = open_page("compose", stopped_ok=True)
    assert any(e.value.startswith(PAGE_STOPPED) and "masks.safetensors does not match" in shown(e.value)
               for e in app.error)
    assert str(tmp_path) not in everything_shown(app)


# ----- local by default ----------------------------------------------------------------------------

def test_the_launcher_binds_loopback_unless_told_otherwise(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(serve, "run_streamlit", lambda argv, env: calls.append((argv, env)))
    monkeypatch.delenv("MODA_HOST", raising=False)
    serve.main(["--port", "8600"])
    argv, _ = calls[-1]
    assert argv[argv.index("--server.address") + 1] == "127.0.0.1"
    assert argv[argv.index("--client.showErrorDetails") + 1] == "none"
    assert argv[argv.index("--client.toolbarMode") + 1] == "viewer"
    assert capsys.readouterr().err == ""

    serve.main(["--host", "0.0.0.0", "--runs-dir", "/srv/a", "--runs-dir", "/srv/b", "--no-training"])
    argv, env = calls[-1]
    assert argv[argv.index("--server.address") + 1] == "0.0.0.0"
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1 and warning.startswith("warning:") and "0.0.0.0" in warning
    assert env["MODA_RUNS_DIR"] == os.pathsep.join(["/srv/a", "/srv/b"]) and env["MODA_TRAINING"] == "off"

    monkeypatch.setenv("MODA_HOST", "0.0.0.0")
    serve.main([])
    argv, _ = calls[-1]
    assert argv[argv.index("--server.address") + 1] == "0.0.0.0" and "warning:" in capsys.readouterr().err


def test_make_run_passes_no_address_unless_asked():
    if not shutil.which("make"):
        pytest.skip("no make")

    def dry_run(*args, **env):
        result = subprocess.run(["make", "-n", "run", *args], cwd=ROOT, capture_output=True, text=True,
                                env={**os.environ, **env}, check=True)
        return " ".join(result.stdout.split())

    plain = dry_run(HOST="my-laptop")  # a HOST that only comes from the environment does not count
    assert "bin/moda-studio --port" in plain and "--host" not in plain and "streamlit" not in plain
    assert "--host 0.0.0.0" in dry_run("HOST=0.0.0.0")
    assert "--runs-dir '/a' --runs-dir '/b'" in dry_run("RUNS_DIR=/a:/b")


def test_make_run_splits_runs_dir_on_colons_only_and_quotes_each_folder():
    if not shutil.which("make"):
        pytest.skip("no make")

    def arguments(runs_dir: str) -> list[str]:
        """The words the shell gives moda-studio for `make run RUNS_DIR=...` (make's dry run, parsed as sh)."""
        result = subprocess.run(["make", "-n", "run", f"RUNS_DIR={runs_dir}"], cwd=ROOT, capture_output=True,
                                text=True, check=True)
        line = next(line for line in result.stdout.splitlines() if "bin/moda-studio" in line)
        return shlex.split(line)[1:]

    assert arguments("/a b:/c") == ["--port", "8501", "--runs-dir", "/a b", "--runs-dir", "/c"]
    assert arguments("/it's  here::/x;y:") == ["--port", "8501", "--runs-dir", "/it's  here", "--runs-dir", "/x;y"]


def test_streamlit_config_holds_the_serving_defaults():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1" and config["server"]["headless"] is True
    assert config["client"] == {"showErrorDetails": "none", "toolbarMode": "viewer"}
    assert config["browser"]["gatherUsageStats"] is False
    from streamlit import config as streamlit_config

    options = streamlit_config.get_config_options()
    for section, values in config.items():
        for key in values:
            assert f"{section}.{key}" in options, f"{section}.{key} is not a streamlit option"


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) with a socket listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.add(address)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_the_real_server_listens_on_loopback_only():
    env = {k: v for k, v in os.environ.items() if k not in ("MODA_HOST", "HOST")}
    env["MODA_RUNS_DIR"] = str(DEMO)
    with ServedDashboard(env) as served:
        addresses = listening_addresses(served.port)
        assert addresses == {"0100007F"}, addresses  # 127.0.0.1 only: not 0.0.0.0, not ::
        # and another address of this machine, if it has one, does not answer
        others = [a for a in _local_addresses() if not a.startswith("127.")]
        for address in others[:2]:
            with socket.socket() as sock:
                sock.settimeout(2)
                assert sock.connect_ex((address, served.port)) != 0, address
    output = served.output
    assert "warning:" not in output


def _local_addresses() -> list[str]:
    """IPv4 addresses of this machine's interfaces (from /proc/net/fib_trie; empty if unreadable)."""
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        return []
    found = []
    for before, line in zip(lines, lines[1:], strict=False):
        if "/32 host LOCAL" in line:
            found.append(before.split()[-1])
    return sorted(set(found))


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt-get install chromium)")
def test_a_first_visit_to_a_page_link_goes_through_the_app():
    """Right after the server starts, a bookmarked /compose must still get app.py's sidebar and error guard
    (the pages live in dashboard/views/: a pages/ folder next to app.py would make Streamlit run compose.py
    alone)."""
    playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright python package is missing")
    env = {k: v for k, v in os.environ.items() if k not in ("MODA_HOST", "HOST")}
    env["MODA_RUNS_DIR"] = str(DEMO)
    with ServedDashboard(env) as served:
        url = served.url
        with playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                                 args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.set_default_timeout(120_000)
            page.goto(f"{url}/compose")  # the server's very first visit
            page.get_by_role("heading", name="Compose").wait_for()
            page.get_by_text("Runs folder").first.wait_for()  # drawn by app.py
            assert page.title() == "MODA Studio"
            browser.close()


def test_the_server_warms_up_once_it_listens_with_the_default_runs(monkeypatch):
    """moda-studio starts the dashboard's warm-up (torch, the engine) and then the default runs' as soon as its
    port accepts connections, not at the first page view; an address of every interface is reached through
    127.0.0.1."""
    from dashboard import lazy

    calls = []
    monkeypatch.setattr(lazy, "warm_up_engine", lambda: calls.append("engine"))
    monkeypatch.setattr(engine, "warm_up_runs", lambda: calls.append("runs"))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        waiting = serve.warm_up_when_listening("0.0.0.0", port, wait=10, grace=0)
        waiting.join(1.0)
        assert calls == []  # not listening yet
        listener.listen()
        waiting.join(10)
    assert calls == ["engine", "runs"] and not waiting.is_alive()
