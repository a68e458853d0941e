"""A run's life in the store: :func:`create_run` makes a new folder and holds its lock (:class:`OpenRun`:
``write_config`` once the model is built, ``save_epoch`` after every epoch), :func:`open_for_resume` takes over an
interrupted run (what it continues from: ``loading.resume_state``), :func:`discard_run` removes a run that is not
training (``--overwrite``, the dashboard's Delete).
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from torch import nn

from moda_core import io as store_io  # writes go through store_io.* at call time (tests inject failures)
from moda_core.errors import ModaError
from moda_core.io import json_bytes, tensors_bytes
from moda_core.store.commit import commit_epoch, recover
from moda_core.store.lock import NOFOLLOW, RunLock, lock_or_refuse
from moda_core.store.names import (
    CONFIG,
    HISTORY,
    LOCK,
    METRICS,
    MODEL,
    OPTIMIZER,
    check_plain_folder,
    check_run_name,
    checkpoint_path,
)
from moda_core.store.records import history_bytes


class OpenRun:
    """A run folder this process trains into, its lock held (rank 0 under torchrun).

    Use it as a context manager: leaving releases the lock, and when a run this process created fails
    before :meth:`write_config` (a bad device, a data set that does not load) its folder is removed, so
    nothing is left behind.

    The folder itself is held open while the run is open: before every write the store checks that the
    folder at :attr:`path` is still the one it opened (renamed, deleted or replaced: a ``ModaError``, and
    nothing is written or recreated anywhere)."""

    def __init__(self, path: Path, lock: RunLock, created: bool) -> None:
        self.path = path
        self.created = created  # a new folder (False: an interrupted run taken over to resume it)
        self._lock = lock
        try:  # held, so the folder's identity (device, inode) stays its own while it is open
            self._folder: int | None = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | NOFOLLOW)
        except OSError as error:
            raise ModaError(f"cannot open run folder {path}: {error.strerror}") from None

    def still_in_place(self) -> bool:
        """Whether the folder at :attr:`path` is still the one this run opened (not moved, deleted or replaced)."""
        if self._folder is None:
            return False
        try:
            now, held = os.lstat(self.path), os.fstat(self._folder)
        except OSError:
            return False
        return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)

    def _moved(self, what: str) -> ModaError:
        return ModaError(f"run folder {self.path} was moved or deleted during training; {what}")

    def write_config(self, record: dict[str, Any]) -> None:
        """Write config.json: everything needed to rebuild the model and the data (the run has started)."""
        if not self.still_in_place():
            raise self._moved("its config.json was not written")
        store_io.write_json(self.path / CONFIG, record, inside=self.path)

    def save_epoch(self, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                   history: list[dict[str, float]], metrics: dict[str, Any], checkpoint: bool = False) -> None:
        """Save epoch ``epoch`` as one commit (:func:`commit_epoch`): the weights, the optimizer's momentum
        buffers (for resuming), the history and ``metrics`` (with ``epochs_done``); with ``checkpoint`` also
        a periodic checkpoint (``RUN@EPOCH``). A crash leaves this epoch or the last one."""
        if not self.still_in_place():
            raise self._moved(f"epoch {epoch} was not saved")
        weights = tensors_bytes(model.state_dict(), {"epoch": epoch})
        extra = {str(checkpoint_path(".", epoch)): weights} if checkpoint else {}
        try:
            commit_epoch(self.path, epoch, {
                OPTIMIZER: tensors_bytes(momentum_buffers(optimizer), {"epoch": epoch}), MODEL: weights,
                HISTORY: history_bytes(history), METRICS: json_bytes({**metrics, "epochs_done": epoch})}, extra)
        except (ModaError, OSError):
            if not self.still_in_place():  # moved while this epoch was being written
                raise self._moved(f"epoch {epoch} was not saved") from None
            raise

    def close(self, failed: bool = False) -> None:
        """Release the lock; after a failure, first remove a folder this process created that never started
        (only while it is still in place: a folder moved away, or another one put in its place, stays)."""
        if failed and self.created and self.still_in_place() and not (self.path / CONFIG).exists():
            _remove_unstarted(self.path)
        if self._folder is not None:
            os.close(self._folder)
            self._folder = None
        self._lock.release()

    def __enter__(self) -> OpenRun:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close(failed=exc_type is not None)


def _check_runs_dir(runs_dir: Path) -> None:
    """Create the runs folder if needed; a ``ModaError`` when it cannot hold new runs."""
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ModaError(f"runs folder {runs_dir} is a file, not a folder") from None
    except OSError as error:
        raise ModaError(f"cannot create runs folder {runs_dir}: {error.strerror}") from None
    if not runs_dir.is_dir():
        raise ModaError(f"runs folder {runs_dir} is a file, not a folder")
    if not os.access(runs_dir, os.W_OK | os.X_OK):
        raise ModaError(f"runs folder {runs_dir} is not writable")


def _remove_unstarted(run_dir: Path) -> None:
    """Remove a folder this process created that holds nothing but its lock (a run that never started)."""
    (run_dir / LOCK).unlink(missing_ok=True)
    try:
        run_dir.rmdir()
    except OSError:
        pass


def _make_folder(run_dir: Path) -> bool:
    """``os.mkdir`` without exist_ok: True if this call created the folder, False if it existed."""
    try:
        os.mkdir(run_dir)
        return True
    except FileExistsError:
        return False
    except OSError as error:
        raise ModaError(f"cannot create run folder {run_dir}: {error.strerror}") from None


def create_run(runs_dir: str | Path, name: str | None, default_name: str, overwrite: bool = False) -> OpenRun:
    """Create the run folder ``runs_dir/name`` atomically and hold its lock; nothing is touched when this fails.

    An existing name is an error, unless ``overwrite``: then that run is discarded first (:func:`discard_run`,
    refused while it trains). Without a name the folder is ``default_name``, or ``default_name-2``, ``-3`` …
    when that is taken (two processes never get the same folder)."""
    runs_dir = Path(runs_dir)
    check_run_name(default_name if name is None else name)
    _check_runs_dir(runs_dir)
    if name is None:
        number = 1
        while not _make_folder(run_dir := runs_dir / (default_name if number == 1 else f"{default_name}-{number}")):
            number += 1
    else:
        run_dir = runs_dir / name
        if overwrite and (run_dir.exists() or run_dir.is_symlink()):
            discard_run(run_dir)
        if not _make_folder(run_dir):
            raise ModaError(f"run folder {run_dir} already exists",
                            hint="pick another --name, --resume to continue it, or --overwrite to replace it")
    lock = RunLock(run_dir)
    try:
        acquired = lock.acquire()
    except OSError:  # a full disk: the name stays free
        _remove_unstarted(run_dir)
        raise
    if not acquired:
        raise ModaError(f"run folder {run_dir} was taken by another process as it was created")
    try:
        return OpenRun(run_dir, lock, created=True)
    except BaseException:
        lock.release()
        raise


def open_for_resume(run_dir: str | Path) -> OpenRun:
    """Take over an interrupted run to continue it: hold its lock (refused while it trains) and finish or
    discard an epoch's commit that a crash interrupted (:func:`recover`). What it continues from:
    :func:`moda_core.store.loading.resume_state`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ModaError(f"cannot resume: no run at {run_dir}")
    check_plain_folder(run_dir)
    lock = lock_or_refuse(run_dir)
    try:
        recover(run_dir)
        return OpenRun(run_dir, lock, created=False)
    except BaseException:
        lock.release()
        raise


def discard_run(run_dir: str | Path) -> None:
    """Remove a run that is not training now (``--overwrite``, the dashboard's Delete button): moved aside
    atomically under its lock, then deleted. A ``ModaError`` while a process trains into it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or run_dir.is_symlink():
        raise ModaError(f"cannot remove {run_dir}: it is not a run folder")
    lock = lock_or_refuse(run_dir)
    aside = run_dir.with_name(f".{run_dir.name}.discarded-{os.getpid()}-{time.time_ns()}")
    try:
        os.rename(run_dir, aside)
    except OSError as error:
        raise ModaError(f"cannot remove {run_dir}: {error.strerror}") from None
    finally:
        lock.release()
    shutil.rmtree(aside, ignore_errors=True)


def momentum_buffers(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimizer's momentum buffers as optimizer.safetensors stores them (``loading.ResumeState`` restores
    them)."""
    state = optimizer.state_dict()["state"]
    return {f"{index}.momentum_buffer": s["momentum_buffer"] for index, s in state.items()
            if s.get("momentum_buffer") is not None}
