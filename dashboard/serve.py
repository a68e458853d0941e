"""Start the dashboard server (the ``moda-studio`` command, which `make run` calls): local by default,
opened to a network only on request.

    moda-studio [--host ADDRESS] [--port PORT] [--runs-dir DIR ...] [--models PACKAGE ...] [--no-training]
    python -m dashboard.serve ...   (the same)

``--host`` (or ``$MODA_HOST``) defaults to 127.0.0.1, so only this machine can open the dashboard; any
other address (``0.0.0.0`` opens it to every network this machine is on) prints a one-line warning.
``--runs-dir`` (repeatable) sets the runs folders visitors may look at (``$MODA_RUNS_DIR``); new runs go
into the first one that is not the bundled demo, unless ``--no-training``. Every serving setting (no
error details, no Deploy button, no usage statistics) is passed on Streamlit's command line, so the
server behaves the same from any folder; a ``.streamlit/config.toml`` in the current folder cannot
loosen them. ``--models`` (repeatable, ``$MODA_MODELS``) names the top-level packages whose model builders the
server may import for runs of models of one's own (``package.module:function``); without it, such runs are listed
as needing ``--models PKG`` and nothing is imported, since a runs folder must never choose what code runs.
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"
HOST_ENV = "MODA_HOST"
MODELS_ENV = "MODA_MODELS"  # as moda_core.import_policy.ALLOW_ENV
LOCAL = "127.0.0.1"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def streamlit_command(host: str, port: int, python: str = sys.executable) -> list[str]:
    """The ``streamlit run`` command line for the dashboard on ``host``:``port`` with the serving settings."""
    return [python, "-m", "streamlit", "run", str(APP), "--server.address", host, "--server.port", str(port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--client.showErrorDetails", "none", "--client.toolbarMode", "viewer", "--runner.postScriptGC", "false",
            "--runner.magicEnabled", "false"]


def exposure_warning(host: str, port: int) -> str | None:
    """One line for the terminal when ``host`` is not a loopback address; None when it is."""
    if host in LOOPBACK or host.startswith("127."):
        return None
    return (f"warning: the dashboard listens on {host}:{port}, so anyone who can reach this machine can open it "
            "(no login): they can browse the configured runs folders and start one training at a time.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="moda-studio", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=os.environ.get(HOST_ENV) or LOCAL,
                        help=f"address to listen on (default: ${HOST_ENV} or {LOCAL}, this machine only)")
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument("--runs-dir", action="append", default=[], metavar="DIR",
                        help="a runs folder visitors may look at (repeat for several; default: $MODA_RUNS_DIR, "
                             "else the bundled demo and runs/)")
    parser.add_argument("--models", action="append", default=[], metavar="PACKAGE",
                        help="a top-level package whose model builders runs may name (repeat for several; "
                             "default: $MODA_MODELS, else none); the current folder is searched too")
    parser.add_argument("--no-training", action="store_true", help="no training from the browser")
    args = parser.parse_args(argv)
    host = args.host.strip()
    if not host:
        parser.error("--host is empty: give an address such as 127.0.0.1 or 0.0.0.0")
    env = dict(os.environ)
    if args.runs_dir:
        env["MODA_RUNS_DIR"] = os.pathsep.join(str(Path(p).expanduser().resolve()) for p in args.runs_dir)
    if args.no_training:
        env["MODA_TRAINING"] = "off"
    if args.models:
        env[MODELS_ENV] = ",".join(part.strip() for value in args.models for part in value.split(",") if part.strip())
    warning = exposure_warning(host, args.port)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    warm_up_when_listening(host, args.port)
    run_streamlit(streamlit_command(host, args.port), env)


def warm_up_when_listening(host: str, port: int, wait: float = 120.0, grace: float = 3.0) -> threading.Thread:
    """In the background: once the server accepts connections on ``port`` (and ``grace`` seconds later, so that a
    first page sent meanwhile is not slowed by torch loading), the warm-up that the first page view would otherwise
    start (``dashboard.lazy.warm_up_engine``), then the runs the pages open first (``engine.warm_up_runs``): a
    class arriving after the lecturer has started the server finds them ready."""
    address = LOCAL if host in ("0.0.0.0", "::", "") else host

    def when_listening() -> None:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((address, port), timeout=1):
                    break
            except OSError:
                time.sleep(0.25)
        else:
            return
        time.sleep(grace)
        from dashboard import lazy

        lazy.warm_up_engine()
        try:
            from dashboard import engine

            engine.warm_up_runs()
        except Exception:  # noqa: BLE001 - a warm-up is an optimisation; the pages report their own errors
            logging.getLogger("moda.dashboard").warning("warm-up of the default runs failed", exc_info=True)

    thread = threading.Thread(target=when_listening, name="moda-warm-up-start", daemon=True)
    thread.start()
    return thread


def run_streamlit(command: list[str], env: dict[str, str]) -> None:
    """Run ``python -m streamlit ...`` (``command``) in this process, with ``env`` as the environment. (The pages
    live in ``dashboard/views/``, not ``pages/``, so a bare ``streamlit run dashboard/app.py`` behaves the same.)"""
    from streamlit.web.cli import main as streamlit_main

    os.environ.clear()
    os.environ.update(env)
    sys.argv = ["streamlit", *command[3:]]
    streamlit_main()

if __name__ == "__main__":
    main()
