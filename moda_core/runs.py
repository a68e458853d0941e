"""The run store: one human-readable folder per training run.

::

    RUN/config.json              everything needed to rebuild the model and the data
    RUN/model.safetensors        weights after the last committed epoch (metadata: epoch)
    RUN/optimizer.safetensors    optimizer state for resuming (metadata: epoch)
    RUN/history.csv              one row per epoch: losses, accuracies, seconds
    RUN/metrics.json             final figures of the last committed epoch
    RUN/commit.json              the commit record: which epoch the files above belong to
    RUN/checkpoints/epoch-0005.safetensors   periodic weights, addressed as ``RUN@5``
    RUN/.lock                    held (flock) by the process training into the run

Every file is written to a temporary name in the same folder and renamed into place, so a crash
never leaves a half-written file; weights are safetensors and metadata is JSON, so loading a run
never unpickles code. An epoch's files are saved as one commit (:func:`commit_epoch`): they are
first written under staged names (``.e0005.model.safetensors`` …), then ``commit.json`` is renamed
into place (the commit point), then the staged files are renamed to their readable names. Readers
resolve each file through the commit record, so they always see one epoch's consistent set; the
process that holds the run's lock finishes an interrupted commit or discards an uncommitted one
(:func:`recover`). A folder without ``commit.json`` (older runs, the bundled demo) is read as
before. A folder without ``model.safetensors`` (no epoch finished yet) does not load.

The store owns a run's whole life: :func:`create_run` makes a new folder and holds its lock
(:class:`OpenRun`: ``write_config`` once the model is built, ``save_epoch`` after every epoch),
:func:`open_for_resume` takes over an interrupted run and :func:`resume_state` reads what it continues
from, :func:`discard_run` removes a run that is not training (``--overwrite``, the dashboard's Delete),
:func:`load_run` and :func:`list_runs` read. Every run name passes :func:`check_run_name`.
"""
from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import re
import shutil
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import nn

from moda_core import io as store_io  # writes go through store_io.* at call time (tests inject failures)
from moda_core import run_config
from moda_core.data import Dataset, load_dataset
from moda_core.errors import ModaError
from moda_core.import_policy import allowed_packages, needs
from moda_core.io import (
    FILE_MODE,
    json_bytes,
    load_tensors,
    read_json,
    read_tensor_header,
    read_tensor_metadata,
    tensors_bytes,
)
from moda_core.methods import method_of
from moda_core.models import build_from_arch
from moda_core.models.user import package_of
from moda_core.run_config import check_config, is_real, kind_of

CONFIG, MODEL, OPTIMIZER, HISTORY, METRICS = (
    "config.json", "model.safetensors", "optimizer.safetensors", "history.csv", "metrics.json")
CHECKPOINTS = "checkpoints"
COMMIT, LOCK = "commit.json", ".lock"
COMMITTED_FILES = (OPTIMIZER, MODEL, HISTORY, METRICS)  # what one epoch's commit contains
_STAGED = re.compile(r"\.e(\d{4,})\.(.+)")
# a run name is one plain folder name: no '/', no '@' (``RUN@EPOCH`` addresses a checkpoint), no leading '-'
# (it would read as a flag) or '.' (hidden; the store's own temporary names start with one)
_RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


def check_run_name(name: str) -> str:
    """The one rule for run names, for the command line, ``train`` and the dashboard alike: letters, digits,
    '.', '_' and '-', not starting with '.' or '-', at most 100 characters. Returns ``name``; a ``ModaError``
    says why it cannot be used."""
    if not isinstance(name, str) or not _RUN_NAME.fullmatch(name):
        raise ModaError(f"run name {name!r} is not a plain folder name: use letters, digits, '.', '_' or '-' "
                        "(no '@', '/' or spaces), not starting with '.' or '-', at most 100 characters")
    return name


def check_plain_folder(run_dir: str | Path) -> None:
    """A ``ModaError`` when the run folder is a symbolic link or holds one (in the folder, in ``checkpoints/``
    or in a checkpoint's decomposition folder): a run folder must hold plain files, so that reading or
    writing a run never reaches outside it."""
    run_dir = Path(run_dir)
    if run_dir.is_symlink():
        raise ModaError(f"{run_dir} is a symbolic link: run folders must hold plain files")
    folders = [run_dir]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_symlink():
                        raise ModaError(f"{entry.path} is a symbolic link: run folders must hold plain files")
                    if entry.is_dir(follow_symlinks=False) and folder == run_dir and entry.name == CHECKPOINTS:
                        folders.append(Path(entry.path))
                    elif entry.is_dir(follow_symlinks=False) and folder.name == CHECKPOINTS and folder != run_dir:
                        folders.append(Path(entry.path))  # a checkpoint's decomposition files
        except (FileNotFoundError, NotADirectoryError):
            continue


def read_history(path: str | Path) -> list[dict[str, float]]:
    """The rows of a history.csv (none when it is missing): one number per column, and every row names its
    epoch (a whole number from 1). Only a regular file of at most ``MAX_HISTORY_BYTES`` is read; anything
    else is a ``ModaError``."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return []
    text = store_io.read_bounded(path, MAX_HISTORY_BYTES)
    try:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(text.decode()))]
    except (ValueError, TypeError, csv.Error, UnicodeDecodeError) as error:  # TypeError: a row with a cell too many
        raise ModaError(f"corrupt history file {path}: {error}") from None
    for number, row in enumerate(rows, 1):
        epoch = row.get("epoch")
        if epoch is None or not (math.isfinite(epoch) and 1 <= epoch <= run_config.MAX_EPOCHS and epoch == int(epoch)):
            raise ModaError(f"corrupt history file {path}: row {number} has no epoch number (epoch={epoch})")
        row["epoch"] = int(epoch)  # a whole number, as it is written again after a resume
    return rows


def check_history(rows: list[dict[str, float]], epoch: int, path: str | Path) -> None:
    """A ``ModaError`` unless the history holds one row for each epoch 1 … ``epoch``, in order (rows of later
    epochs are ignored: a crash before an older run's commit)."""
    epochs = [int(row["epoch"]) for row in rows if row["epoch"] <= epoch]
    if epochs != list(range(1, epoch + 1)):
        shown = epochs if len(epochs) <= 6 else [*epochs[:3], "…", *epochs[-2:]]
        raise ModaError(f"corrupt history file {path}: it should hold epochs 1 to {epoch} in order, "
                        f"it holds {shown or 'none'}")


def history_bytes(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    if rows:
        fields = list(dict.fromkeys(key for row in rows for key in row))  # rows from older versions may lack some
        writer = csv.DictWriter(buffer, fieldnames=fields, restval="nan", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue().encode()


# ----- one epoch = one commit ---------------------------------------------------------------------

def staged_name(name: str, epoch: int) -> str:
    """The name an epoch's file has until its commit is finished: ``.e0005.model.safetensors``."""
    return f".e{epoch:04d}.{name}"


def read_commit(run_dir: str | Path) -> dict[str, Any] | None:
    """The commit record of a run (``{"epoch": E, "files": [...]}``), or None for a run without one."""
    path = Path(run_dir) / COMMIT
    if not path.exists():
        return None
    record = read_json(path)
    if not (isinstance(record, dict) and isinstance(record.get("epoch"), int)
            and isinstance(record.get("files"), list)):
        raise ModaError(f"corrupt commit record {path}: expected an epoch and a list of files")
    return record


def resolve_files(run_dir: str | Path) -> tuple[int | None, dict[str, Path]]:
    """The committed epoch (None without a commit record) and where each of its files is now.

    After the commit point and before the staged files are renamed, a file's current version is
    still under its staged name; otherwise it is under its readable name."""
    run_dir = Path(run_dir)
    record = read_commit(run_dir)
    files = {name: run_dir / name for name in COMMITTED_FILES}
    if record is None:
        return None, files
    epoch = record["epoch"]
    for name in record["files"]:
        if name in files:
            staged = run_dir / staged_name(name, epoch)
            if staged.exists():
                files[name] = staged
    return epoch, files


def commit_epoch(run_dir: str | Path, epoch: int, files: dict[str, bytes],
                 extra: dict[str, bytes] | None = None) -> None:
    """Save one epoch as one commit.

    ``files`` maps readable names in the run folder (``model.safetensors`` …) to their contents;
    ``extra`` maps paths relative to the run folder that already carry the epoch in their name
    (periodic checkpoints) to theirs. A crash at any point leaves either the previous commit or this
    one, never a mix; leftovers of a kill are removed by the next :func:`recover`. Every file stays in
    ``run_dir`` (no symbolic link is followed, the folder is never recreated: ``store_io.check_write_target``).
    When a write fails before the commit point (a full disk), the files this call wrote are removed
    again and the error is raised: the run keeps its last commit and nothing of this epoch."""
    run_dir = Path(run_dir)
    written: list[Path] = []
    try:
        for relative, data in (extra or {}).items():
            written.append(run_dir / relative)
            store_io.atomic_write_bytes(run_dir / relative, data, inside=run_dir)
        for name, data in files.items():
            written.append(run_dir / staged_name(name, epoch))
            store_io.atomic_write_bytes(run_dir / staged_name(name, epoch), data, inside=run_dir)
        # the commit point
        store_io.write_json(run_dir / COMMIT, {"epoch": epoch, "files": sorted(files)}, inside=run_dir)
    except BaseException:
        for path in written:
            try:
                if not path.is_symlink():
                    path.unlink(missing_ok=True)
            except OSError:
                pass
        raise
    recover(run_dir)


def _is_temporary(name: str) -> bool:
    """Temporary files of :func:`atomic_write_bytes` / :func:`atomic_write_with` left by a crash."""
    return name.startswith(".") and (name.endswith(".tmp") or ".tmp-" in name)


def recover(run_dir: str | Path) -> int:
    """Finish an interrupted commit or discard an uncommitted one; returns the committed epoch (0: none).

    Only the process that holds the run's lock may call this (it renames and deletes files)."""
    run_dir = Path(run_dir)
    record = read_commit(run_dir)
    if record is not None:
        epoch, names = record["epoch"], set(record["files"])
    else:  # an older run, or a new one whose first commit never happened
        epoch, names = (weights_epoch(run_dir / MODEL) if (run_dir / MODEL).exists() else 0), set()
    for path in sorted(run_dir.iterdir()):
        match = _STAGED.fullmatch(path.name)
        if match and int(match.group(1)) == epoch and match.group(2) in names:
            os.replace(path, run_dir / match.group(2))  # roll the committed epoch forward
        elif match or _is_temporary(path.name):
            path.unlink(missing_ok=True)  # an epoch that never committed, or a half-written file
    folder = run_dir / CHECKPOINTS
    if folder.is_dir():
        for path in folder.iterdir():
            number = _checkpoint_epoch(path.name)
            uncommitted = number is not None and number > epoch and (record is not None or epoch == 0)
            if _is_temporary(path.name) or uncommitted:
                path.unlink(missing_ok=True)
    return epoch


def weights_epoch(path: str | Path, metadata: dict[str, str] | None = None) -> int:
    """The epoch a weights file says it holds (its own metadata, read from ``path`` unless the caller has
    read it already); a file without one is an error."""
    value = (read_tensor_metadata(path) if metadata is None else metadata).get("epoch")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ModaError(f"weights file {path} does not say which epoch it holds (metadata epoch={value!r})") from None


# ----- the training lock --------------------------------------------------------------------------

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # a .lock that is a symbolic link is never opened

class RunLock:
    """An exclusive ``flock`` on ``RUN/.lock`` held while a process trains into the run.

    The kernel releases it when the process dies (kill -9 included), so a run whose lock is free
    and whose epochs are not all done is *interrupted*, never "running" forever. The file stays."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK
        self.fd: int | None = None

    def acquire(self, attempts: int = 20) -> bool:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, FILE_MODE)  # never through a link
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
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0))  # a FIFO never blocks
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


def _lock_or_refuse(run_dir: Path) -> RunLock:
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


# ----- a run's life: create, resume, save, discard ------------------------------------------------

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
            self._folder: int | None = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW)
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
                OPTIMIZER: tensors_bytes(_momentum_buffers(optimizer), {"epoch": epoch}), MODEL: weights,
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
    :func:`resume_state`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ModaError(f"cannot resume: no run at {run_dir}")
    check_plain_folder(run_dir)
    lock = _lock_or_refuse(run_dir)
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
    lock = _lock_or_refuse(run_dir)
    aside = run_dir.with_name(f".{run_dir.name}.discarded-{os.getpid()}-{time.time_ns()}")
    try:
        os.rename(run_dir, aside)
    except OSError as error:
        raise ModaError(f"cannot remove {run_dir}: {error.strerror}") from None
    finally:
        lock.release()
    shutil.rmtree(aside, ignore_errors=True)


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """A run's config.json: ``arch`` (the model), ``data``, ``train`` (the training settings) …, checked by
    :func:`check_config`; a missing, unreadable, oversized or malformed file is a ``ModaError``."""
    path = Path(run_dir) / CONFIG
    try:
        config = read_json(path)
    except OSError as error:  # exists but cannot be read (permissions, a folder in its place)
        raise ModaError(f"cannot read {path}: {error.strerror}") from None
    return check_config(config, path)


# ----- limits on what a run may hold ----------------------------------------------------------------

MAX_PARAMETERS = 2**31  # about 8 GB of float32 weights: far beyond any run of this tool
MAX_HISTORY_BYTES = 32 << 20  # history.csv: about 150 bytes per epoch


@dataclass
class ResumeState:
    """What an interrupted run continues from: its stored training settings and last committed epoch."""

    path: Path
    train: dict[str, Any]  # the ``train`` record of its config.json
    epoch: int  # the last committed epoch; 0: none finished, training starts again from epoch 1
    history: list[dict[str, float]]
    momentum: dict[str, torch.Tensor]  # the optimizer's momentum buffers (empty when epoch is 0)

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
        """Load the committed weights into ``model`` and the momentum buffers into ``optimizer``."""
        load_weights(model, self.path / MODEL)
        model.to(device)
        state_dict = optimizer.state_dict()
        state_dict["state"] = {int(key.split(".")[0]): {"momentum_buffer": value.to(device)}
                               for key, value in self.momentum.items()}
        optimizer.load_state_dict(state_dict)


def _momentum_buffers(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    state = optimizer.state_dict()["state"]
    return {f"{index}.momentum_buffer": s["momentum_buffer"] for index, s in state.items()
            if s.get("momentum_buffer") is not None}


def resume_state(run_dir: str | Path) -> ResumeState:
    """What the run continues from (read after :func:`open_for_resume`; under torchrun by every rank)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).exists():
        raise ModaError(f"cannot resume {run_dir}: it has no {CONFIG} (it died as it started)",
                        hint="start it again with --overwrite")
    train = read_config(run_dir).get("train")
    if not isinstance(train, dict):
        raise ModaError(f"cannot resume: {run_dir / CONFIG} has no training section")
    if not (run_dir / MODEL).exists():
        return ResumeState(run_dir, train, 0, [], {})
    _, model_meta = load_tensors(run_dir / MODEL)
    momentum, optimizer_meta = load_tensors(run_dir / OPTIMIZER)
    epoch = int(model_meta.get("epoch", -1))
    if epoch < 1 or optimizer_meta.get("epoch") != str(epoch):
        raise ModaError(f"cannot resume {run_dir}: weights (epoch {model_meta.get('epoch')}) and optimizer state "
                        f"(epoch {optimizer_meta.get('epoch')}) disagree")
    history = [row for row in read_history(run_dir / HISTORY) if row["epoch"] <= epoch]
    if len(history) != epoch:
        raise ModaError(f"cannot resume {run_dir}: history.csv has {len(history)} rows for {epoch} "
                        f"epoch{'s' if epoch != 1 else ''}")
    return ResumeState(run_dir, train, epoch, history, momentum)


# ----- loading ------------------------------------------------------------------------------------

def load_weights(model: torch.nn.Module, path: str | Path) -> dict[str, str]:
    """Load safetensors weights into ``model`` strictly; returns the file's metadata.

    Missing keys, unexpected keys, shape differences or non-finite values are a ``ModaError`` that
    names them.
    """
    tensors, metadata = load_tensors(path)
    check_shapes({k: tuple(v.shape) for k, v in model.state_dict().items()},
                 {k: tuple(v.shape) for k, v in tensors.items()}, path)
    bad = non_finite(tensors)
    if bad:
        raise ModaError(f"checkpoint {path} holds non-finite weights (NaN or infinity) in "
                        f"{bad[:5]}{' …' if len(bad) > 5 else ''}: it cannot be used")
    model.load_state_dict(tensors)
    return metadata


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors that hold NaN or infinity (numpy's check where it can: much faster
    than torch's on a first call)."""
    bad = []
    for name, value in tensors.items():
        if not value.is_floating_point():
            continue
        if value.dtype in (torch.float16, torch.float32, torch.float64):
            finite = bool(np.isfinite(value.detach().cpu().numpy()).all())
        else:
            finite = bool(torch.isfinite(value).all())
        if not finite:
            bad.append(name)
    return bad


def check_shapes(expected: dict[str, tuple[int, ...]], shapes: dict[str, tuple[int, ...]], path: str | Path) -> None:
    """A ``ModaError`` naming the differences if a file's tensors (name → shape) are not the model's."""
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = [f"{k}: file {shapes[k]}, model {expected[k]}"
             for k in expected if k in shapes and shapes[k] != expected[k]]
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"missing {missing[:5]}{' …' if len(missing) > 5 else ''}")
        if unexpected:
            details.append(f"unexpected {unexpected[:5]}{' …' if len(unexpected) > 5 else ''}")
        if wrong:
            details.append(f"shape mismatch {wrong[:3]}{' …' if len(wrong) > 3 else ''}")
        raise ModaError(f"checkpoint {path} does not match the model in its config: {'; '.join(details)}")


def checkpoint_path(run_dir: str | Path, epoch: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"epoch-{epoch:04d}.safetensors"


def _checkpoint_epoch(name: str) -> int | None:
    match = re.fullmatch(r"epoch-(\d+)\.safetensors", name)
    return int(match.group(1)) if match else None


def split_run_spec(spec: str | Path) -> tuple[Path, int | None]:
    """``"runs/a@5"`` → (``runs/a``, 5); ``"runs/a"`` → (``runs/a``, None)."""
    match = re.fullmatch(r"(.+)@([0-9]+)", str(spec))  # ASCII digits only (not ``RUN@１``)
    if match:
        return Path(match.group(1)), int(match.group(2))
    return Path(spec), None


@dataclass
class Run:
    """A loaded run: its folder, config, model (eval mode) and records.

    ``weights_path`` is the file the weights came from; ``latest`` says whether they are the run's
    latest weights (then ``spec`` is ``RUN``, else ``RUN@EPOCH``)."""

    path: Path
    config: dict[str, Any]
    model: nn.Module  # a zoo model, or a model of the user's own (its graph: moda_core.graph)
    epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    weights_path: Path | None = None
    latest: bool | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def spec(self) -> str:
        """``RUN`` or ``RUN@EPOCH``, the string that loads this exact state again (derived from the
        weights files' own metadata, never from ``metrics.json``)."""
        latest = self.latest
        if latest is None:
            try:
                latest = weights_epoch(resolve_files(self.path)[1][MODEL]) == self.epoch
            except ModaError:
                latest = False
        return str(self.path) if latest else f"{self.path}@{self.epoch}"


def _build(config: dict[str, Any], where: str | Path, check: bool = True) -> nn.Module:
    """The model of a checked config (:func:`check_config`); any failure is a ``ModaError``. ``check=False``
    builds a model of the user's own as its builder returns it (for its shapes)."""
    try:
        model = build_from_arch(config["arch"], check=check)
        return method_of(config).prepare(model)  # e.g. MwT's gated blocks
    except ModaError:
        raise
    except (KeyError, TypeError) as error:
        raise ModaError(f"config in {where} does not describe a model (missing {error})") from None
    except Exception as error:  # e.g. channels that a grouped convolution cannot split
        raise ModaError(f"config in {where} does not describe a model that can be built: "
                        f"{_one_line(error)}") from None


def model_shapes(config: dict[str, Any], where: str | Path = "config") -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of the model a config describes, built on the meta device (no weights are
    allocated); a ``ModaError`` when it cannot be built or would hold more than ``MAX_PARAMETERS`` numbers.
    Kept per architecture and method, so listing many runs of one model builds it once."""
    arch = check_config(config, where)["arch"]
    key = (arch["name"], arch["in_channels"], arch["image_size"], arch["num_classes"], float(arch.get("width", 1.0)),
           method_of(config).name)
    if key not in _SHAPES:
        with torch.device("meta"):
            model = _build(config, where, check=False)
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        count = sum(math.prod(shape) for shape in shapes.values())
        if count > MAX_PARAMETERS:
            raise ModaError(f"config in {where} describes a model of {count:,} numbers, more than the "
                            f"{MAX_PARAMETERS:,} a run may hold: it is not built")
        if len(_SHAPES) > 256:
            _SHAPES.clear()
        _SHAPES[key] = shapes
    return dict(_SHAPES[key])


_SHAPES: dict[tuple, dict[str, tuple[int, ...]]] = {}  # model_shapes by architecture and method


def _one_line(error: BaseException) -> str:
    """An exception as one short line: its message (or its type), newlines folded, at most 300 characters."""
    text = " ".join(str(error).split()) if isinstance(error, (ModaError, OSError)) else \
        f"{type(error).__name__}: {' '.join(str(error).split())}".rstrip(": ")
    return text if len(text) <= 300 else text[:299] + "…"


def read_metrics(path: str | Path) -> dict[str, Any]:
    """A run's metrics.json ({} when it is missing); a ``ModaError`` when it is not a JSON object."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return {}
    metrics = read_json(path)
    if not isinstance(metrics, dict):
        raise ModaError(f"corrupt metrics file {path}: expected a JSON object, got {kind_of(metrics)}")
    return metrics


def load_run(spec: str | Path, device: str | torch.device = "cpu") -> Run:
    """Load ``RUN`` (last committed epoch) or ``RUN@EPOCH`` (a periodic checkpoint)."""
    path, epoch = split_run_spec(spec)
    if not path.is_dir():
        raise ModaError(f"no run folder at {path}")
    _check_folder_name(path)
    check_plain_folder(path)  # nothing is read through a symbolic link
    for _ in range(2):  # a trainer may finish a commit (rename staged files) while we read: try again
        try:
            return _load_run(path, epoch, device)
        except ModaError:
            if not _moved_meanwhile(path):
                raise
    return _load_run(path, epoch, device)


def _moved_meanwhile(path: Path) -> bool:
    """Whether a trainer holds the run (its files may have been renamed under a reader)."""
    return training_pid(path) is not None


def _load_run(path: Path, epoch: int | None, device: str | torch.device) -> Run:
    config = read_config(path)
    expected = model_shapes(config, path / CONFIG)
    committed, files = resolve_files(path)
    latest_file = files[MODEL]
    latest_epoch = weights_epoch(latest_file) if latest_file.exists() else None
    if committed is not None and latest_epoch is not None and latest_epoch != committed:
        raise ModaError(f"run {path}: {latest_file.name} holds epoch {latest_epoch} but the commit record says "
                        f"epoch {committed}")
    if epoch is None or epoch == latest_epoch:
        weights = latest_file
        if latest_epoch is None:
            raise ModaError(f"run {path} has no weights yet ({MODEL} is missing): training has not finished an epoch")
    else:
        weights = checkpoint_path(path, epoch)
        available = list_checkpoints(path, valid_only=False)  # committed checkpoints (a corrupt one: below)
        if epoch not in available:
            raise ModaError(f"run {path} has no checkpoint for epoch {epoch}; "
                            f"available epochs: {list_checkpoints(path) or 'none'}")
    header = read_tensor_header(weights)  # before the model is allocated: its sizes must be the file's
    check_shapes(expected, _header_shapes(header), weights)
    history = read_history(files[HISTORY])  # it must parse (the listing also checks that it covers every epoch)
    metrics = read_metrics(files[METRICS])
    model = _build(config, path / CONFIG)
    metadata = load_weights(model, weights)
    value = metadata.get("epoch", epoch or 0)
    try:
        loaded_epoch = int(value)
    except ValueError:
        raise ModaError(f"weights file {weights} does not say which epoch it holds "
                        f"(metadata epoch={value!r})") from None
    model.to(device).eval()
    return Run(path, config, model, loaded_epoch, history, metrics, weights_path=weights, latest=weights == latest_file)


def _committed_history(path: Path, epoch: int | None) -> list[dict[str, float]]:
    """The history of a run whose weights hold ``epoch``: it must be there and hold epochs 1 … ``epoch``."""
    if epoch is not None and not path.exists() and not path.is_symlink():
        raise ModaError(f"{HISTORY} is missing but the run's weights hold epoch {epoch}")
    history = read_history(path)
    if epoch is not None:
        check_history(history, epoch, path)
    return history


def _header_shapes(header: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def dataset_name(run: Run) -> str | None:
    """The registered name of the data set a run was trained on."""
    return run.config.get("train", {}).get("dataset", run.config.get("data", {}).get("name"))


def run_dataset(run: Run, device: str | torch.device | None = None) -> Dataset:
    """The data set a run was trained on (same classes, training fraction and seed), on ``device``."""
    train = run.config.get("train", {})
    if device is None:
        device = next(run.model.parameters()).device
    return load_dataset(dataset_name(run), root=train.get("data_root"),
                        classes=train.get("classes"), train_fraction=train.get("train_fraction", 1.0),
                        seed=train.get("seed", 0), device=device, class_fractions=train.get("class_fractions"))


def list_checkpoints(run_dir: str | Path, valid_only: bool = True) -> list[int]:
    """Epochs of the run's committed periodic checkpoints (``RUN@EPOCH``); with ``valid_only`` only those whose
    file is a regular file with a valid header whose tensors fit in it (cheap: no tensor data is read)."""
    folder = Path(run_dir) / CHECKPOINTS
    try:
        committed = read_commit(run_dir)
    except ModaError:
        committed = None
    last = committed["epoch"] if committed else None
    found = {_checkpoint_epoch(p.name): p for p in folder.glob("epoch-*.safetensors")} if folder.is_dir() else {}
    return sorted(e for e, p in found.items() if e is not None and (last is None or e <= last)
                  and (not valid_only or _valid_tensor_file(p)))


def _valid_tensor_file(path: Path) -> bool:
    """Whether a checkpoint can be offered: a valid header, and finite weights (checked once per version)."""
    try:
        read_tensor_header(path)
        _checked_once("finite", path, _check_finite_weights)
        return True
    except (ModaError, OSError):  # corrupt, or gone meanwhile
        return False


def _finite(value: Any) -> float | None:
    if not is_real(value):
        return None
    try:
        return float(value) if math.isfinite(value) else None
    except OverflowError:
        return None


MAX_CHECKED_WEIGHTS = 64 << 20  # the listing reads weights files up to this size to check they are finite
_CHECKED: dict[tuple, str | None] = {}  # (what, path, file identity) → why it is not usable, or None


def _checked_once(what: str, path: Path, check: Any) -> None:
    """Run ``check(path)`` (which raises a ``ModaError``) once per version of the file: the result is kept
    by the file's identity, size and modification time, so listing stays fast."""
    info = os.stat(path)
    key = (what, str(path), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    if key not in _CHECKED:
        if len(_CHECKED) > 4096:
            _CHECKED.clear()
        try:
            check(path)
            _CHECKED[key] = None
        except ModaError as error:
            _CHECKED[key] = str(error)
    if _CHECKED[key] is not None:
        raise ModaError(_CHECKED[key])


def _check_finite_weights(path: Path) -> None:
    """A ``ModaError`` when a weights file (up to ``MAX_CHECKED_WEIGHTS`` bytes) holds NaN or infinity; larger
    files are checked when they are loaded (:func:`load_weights`)."""
    if os.stat(path).st_size > MAX_CHECKED_WEIGHTS:
        return
    tensors, _ = load_tensors(path)
    bad = non_finite(tensors)
    if bad:
        raise ModaError(f"weights file {path} holds non-finite weights (NaN or infinity) in "
                        f"{bad[:5]}{' …' if len(bad) > 5 else ''}: it cannot be used")


class _NoFinishedEpoch(ModaError):
    """A run folder whose trainer has not committed an epoch yet: running or interrupted, not broken."""


def summarize_run(path: str | Path) -> dict[str, Any]:
    """One ``list_runs`` entry (fields documented there). Reads the JSON files, the history, safetensors
    headers, and weights files up to ``MAX_CHECKED_WEIGHTS`` (checked once per version: finite weights).

    A run folder is untrusted input: whatever goes wrong while reading it (a malformed config, a FIFO, a
    truncated file …) makes its entry *broken* with a one-line ``error``; it never stops the listing."""
    path = Path(path)
    summary: dict[str, Any] = {
        "name": path.name, "path": str(path), "status": "broken", "error": None, "loadable": False,
        "epochs_done": 0, "epochs": None, "model": None, "dataset": None, "method": None, "alpha": None,
        "beta": None, "gamma": None, "test_accuracy": None, "checkpoints": [], "pid": None}
    try:
        summary["pid"] = training_pid(path)
    except Exception:  # an unreadable lock: nothing is known to be training
        pass
    running = summary["pid"] is not None
    for attempt in range(3):
        try:
            _filled_once(path, summary)
            break
        except Exception as error:  # any failure reading one folder makes that folder broken, never the listing
            if attempt < 2 and running:
                continue  # the trainer may have renamed a staged file under us
            summary["error"] = _one_line(error)
            if isinstance(error, _NoFinishedEpoch):
                summary["status"] = "running" if running else "interrupted"
            else:
                summary["status"] = "broken"
            return summary
    summary["loadable"] = True
    builder = summary["model"] if ":" in str(summary["model"]) else None
    if builder is not None and package_of(builder) not in allowed_packages():  # listed, never imported
        summary.update(status="needs-models", loadable=False, needs=package_of(builder),
                       error=needs(package_of(builder)))
    elif running:
        summary["status"] = "running"
    elif summary["epochs"] is not None and summary["epochs_done"] >= summary["epochs"]:
        summary["status"] = "complete"
    else:
        summary["status"] = "interrupted"
    return summary


_FILLED: OrderedDict[tuple, dict[str, Any]] = OrderedDict()  # folder state → what _fill_summary found there
_FILLED_MAX = 512
_FILLED_LOCK = threading.Lock()


_SETTLED_NS = 2_000_000_000  # a folder written to less than this long ago is read afresh


def _folder_state(path: Path) -> tuple | None:
    """Every entry of a run folder and of the folders in it (checkpoints), by name, kind, identity, size and
    modification and change times: any write the store makes (a new file renamed into place) changes it. None
    while something in it changed in the last two seconds: a file rewritten in place within the clock's
    granularity can keep its times, so only a settled folder is recognised by its state."""
    state = []
    newest = 0
    for folder in (path, *sorted(p for p in path.iterdir() if p.is_dir() and not p.is_symlink())):
        info = os.stat(folder, follow_symlinks=False)
        state.append((str(folder), info.st_ino, info.st_mtime_ns, info.st_ctime_ns))
        newest = max(newest, info.st_mtime_ns, info.st_ctime_ns)
        with os.scandir(folder) as entries:
            for entry in entries:
                stat = entry.stat(follow_symlinks=False)
                state.append((entry.name, stat.st_mode, stat.st_ino, stat.st_size, stat.st_mtime_ns,
                              stat.st_ctime_ns))
                newest = max(newest, stat.st_mtime_ns, stat.st_ctime_ns)
    if time.time_ns() - newest < _SETTLED_NS:
        return None
    return tuple(sorted(state, key=repr))


def _filled_once(path: Path, summary: dict[str, Any]) -> None:
    """``_fill_summary``, kept per state of the folder (``_folder_state``) so that listing a folder nothing has
    written to reads no file again (pages list the runs on every view). A folder that fails to read is read again
    next time."""
    try:
        state = _folder_state(path)
    except OSError:
        state = None
    key = None if state is None else (str(path), summary["pid"] is not None, state)
    if key is not None:
        with _FILLED_LOCK:
            known = _FILLED.get(key)
            if known is not None:
                _FILLED.move_to_end(key)
        if known is not None:
            summary.update(copy.deepcopy(known))
            return
    _fill_summary(path, summary)
    if key is not None:
        filled = {k: copy.deepcopy(summary[k]) for k in _FILLED_FIELDS}
        with _FILLED_LOCK:
            _FILLED[key] = filled
            while len(_FILLED) > _FILLED_MAX:
                _FILLED.popitem(last=False)


_FILLED_FIELDS = ("model", "dataset", "alpha", "beta", "gamma", "method", "epochs", "epochs_done", "test_accuracy",
                  "checkpoints", "error")


def _check_folder_name(path: Path) -> None:
    """A ``ModaError`` when a run folder's name breaks the run name rule (``RUN@EPOCH`` could not name it)."""
    try:
        check_run_name(path.name)
    except ModaError as error:
        raise ModaError(f"not a valid run name, so nothing can open it: {error}") from None


def _fill_summary(path: Path, summary: dict[str, Any]) -> None:
    _check_folder_name(path)
    check_plain_folder(path)  # a run folder that is, or holds, a symbolic link is broken
    if not (path / CONFIG).exists() and (summary["pid"] is not None or (path / LOCK).exists()):
        raise _NoFinishedEpoch("no finished epoch yet (the run is starting, or stopped as it started)")
    config = read_config(path)
    train, data = config.get("train", {}), config.get("data", {})
    summary.update(model=config["arch"]["name"], dataset=data.get("name", train.get("dataset")),
                   alpha=train.get("alpha"), beta=train.get("beta"), gamma=train.get("gamma"),
                   method=method_of(config).name, epochs=train.get("epochs"))
    committed, files = resolve_files(path)
    weights = files[MODEL]
    if not weights.exists() and not weights.is_symlink():
        recorded = [name for name in (HISTORY, METRICS) if files[name].exists() or files[name].is_symlink()]
        if committed or recorded:  # an epoch was committed, so its weights must be there
            raise ModaError(f"{MODEL} is missing but {' and '.join(recorded) or COMMIT} "
                            f"{'record' if len(recorded) > 1 else 'records'} a finished epoch")
        raise _NoFinishedEpoch(f"no finished epoch yet ({MODEL} is missing)")
    header = read_tensor_header(weights)
    expected = None
    if ":" not in config["arch"]["name"]:  # a model of one's own would have to be built: its shapes wait for loading
        expected = model_shapes(config, path / CONFIG)
        check_shapes(expected, _header_shapes(header), weights)
    epoch = weights_epoch(weights, header.get("__metadata__") or {})
    if committed is not None and committed != epoch:
        raise ModaError(f"{weights.name} holds epoch {epoch} but the commit record says epoch {committed}")
    summary["epochs_done"] = epoch
    _checked_once("finite", weights, _check_finite_weights)
    history = _committed_history(files[HISTORY], epoch)
    metrics = read_metrics(files[METRICS])
    if metrics.get("epochs_done") == epoch:
        summary["test_accuracy"] = _finite(metrics.get("test_accuracy"))
    else:  # metrics.json from another epoch (an older run's crash): take the history row of this one
        rows = [r for r in history if r.get("epoch") == epoch]
        summary["test_accuracy"] = _finite(rows[-1].get("test_accuracy")) if rows else None
    summary["checkpoints"] = [e for e in list_checkpoints(path)  # offered only if its shapes are the model's
                              if expected is None or _shapes_fit(expected, checkpoint_path(path, e))]
    summary["error"] = None


def _shapes_fit(expected: dict[str, tuple[int, ...]], weights: Path) -> bool:
    try:
        check_shapes(expected, _header_shapes(read_tensor_header(weights)), weights)
        return True
    except (ModaError, OSError):
        return False


def list_runs(runs_dir: str | Path) -> list[dict[str, Any]]:
    """Summaries of every run folder under ``runs_dir`` (:func:`summarize_run`): status complete / running /
    interrupted / broken / needs-models (a model of one's own from a package not allowed: ``needs`` names it;
    listing never imports a builder), ``error`` (why it does not load, or None), ``loadable``, ``epochs_done`` (from the
    weights' own metadata), ``epochs``, model, data set, ``method`` (standard, moda or mwt: ``method_of``),
    α β γ, test accuracy, committed checkpoints, and the trainer's pid."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():  # absent, or a file (the command line says so; pages just show no runs)
        return []
    try:
        folders = sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as error:
        raise ModaError(f"cannot read runs folder {runs_dir}: {error.strerror}") from None
    return [summarize_run(p) for p in folders]
