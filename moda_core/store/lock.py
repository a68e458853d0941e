"""The training lock: an exclusive ``flock`` on ``RUN/.lock`` held by the one process that trains into a run.

:func:`training_pid` says who holds it (listing, the dashboard); :func:`lock_or_refuse` takes it for a resume or a
removal, refused while a training holds it.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from moda_core.errors import ModaError
from moda_core.io import FILE_MODE
from moda_core.store.names import LOCK

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # a .lock that is a symbolic link is never opened


class RunLock:
    """An exclusive ``flock`` on ``RUN/.lock`` held while a process trains into the run.

    The kernel releases it when the process dies (kill -9 included), so a run whose lock is free
    and whose epochs are not all done is *interrupted*, never "running" forever. The file stays."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK
        self.fd: int | None = None

    def acquire(self, attempts: int = 20) -> bool:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | NOFOLLOW, FILE_MODE)  # never through a link
        for attempt in range(attempts):  # a reader's brief shared lock may be in the way
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == attempts - 1:
                    os.close(fd)
                    return False
                time.sleep(0.05)
        try:
            same_file = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except OSError:
            same_file = False
        if not same_file:  # the folder was moved or replaced while we waited (an overwrite)
            os.close(fd)
            return False
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        except OSError as error:  # a full disk: give the lock up again, naming the file
            os.close(fd)
            error.filename = error.filename or str(self.path)
            raise
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)  # no stale pid left behind
            except OSError:
                pass
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def _holder_pid(fd: int) -> int | None:
    """The pid recorded in an open lock file (None if it cannot be read)."""
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return int(record["pid"])
    except (ValueError, KeyError, TypeError, OSError, RecursionError):
        return None


def training_pid(run_dir: str | Path) -> int | None:
    """The pid of the process training into ``run_dir`` now, 0 if one does but its pid is unknown,
    None if none does (the lock is free or absent)."""
    try:
        import fcntl
    except ImportError:  # no flock on this platform: nothing is known to be running
        return None
    path = Path(run_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY | NOFOLLOW | getattr(os, "O_NONBLOCK", 0))  # a FIFO never blocks
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder_pid(fd) or 0
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def lock_or_refuse(run_dir: Path) -> RunLock:
    """The run's lock, held; a ``ModaError`` while another process trains into the run."""
    lock = RunLock(run_dir)
    try:
        acquired = lock.acquire()
    except OSError as error:
        raise ModaError(f"cannot lock run {run_dir}: {error.strerror}") from None
    if not acquired:
        pid = training_pid(run_dir)
        raise ModaError(f"run {run_dir} is training now{f' (process {pid})' if pid else ''}: wait for it to finish")
    return lock
