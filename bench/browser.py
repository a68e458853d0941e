"""The local browser and server processes the dashboard benches and the browser tests share: Debian's Chromium and
the flags it runs with (headless, nothing that reaches outside this machine), a free port, and stopping a server.
``tests/helpers.py`` takes them from here, so no bench needs the tests folder on its path."""
from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
# Debian's Chromium, headless, with nothing that reaches outside this machine
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen) -> None:
    """Stop a server process: terminate, and kill it if it has not ended within 15 s."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
