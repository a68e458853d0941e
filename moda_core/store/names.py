"""Names in the run store: a run folder's files, run names, epoch numbers and ``RUN@EPOCH`` specs.

:class:`RunRef` is a run (``RUN``: its last committed epoch) or one of its periodic checkpoints (``RUN@EPOCH``);
``RunRef.parse`` reads a spec and ``str()`` gives it back, so no caller splits a spec on ``@`` itself. Every run name
passes :func:`check_run_name`, every epoch number :func:`epoch_number`. This module imports no torch: the dashboard's
sidebar uses it before torch is loaded.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moda_core.errors import ModaError

CONFIG, MODEL, OPTIMIZER, HISTORY, METRICS = (
    "config.json", "model.safetensors", "optimizer.safetensors", "history.csv", "metrics.json")
CHECKPOINTS = "checkpoints"
COMMIT, LOCK = "commit.json", ".lock"
COMMITTED_FILES = (OPTIMIZER, MODEL, HISTORY, METRICS)  # what one epoch's commit contains
# a run name is one plain folder name: no '/', no '@' (``RUN@EPOCH`` addresses a checkpoint), no leading '-'
# (it would read as a flag) or '.' (hidden; the store's own temporary names start with one)
_RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
_CHECKPOINT = re.compile(r"epoch-([0-9]+)\.safetensors")


def max_epochs() -> int:
    """The largest epoch number a run may hold (``run_config.MAX_EPOCHS``, read when first needed: the run
    config's schema imports torch, this module does not)."""
    from moda_core.run_config import MAX_EPOCHS

    return MAX_EPOCHS


def epoch_number(value: Any) -> int | None:
    """``value`` as an epoch number, a whole number from 1 to ``max_epochs()``: an int, a whole float (a history
    row) or ASCII digits (a spec, a file's metadata, a checkpoint's file name; not ``１`` or ``²``); None when it
    is not one. The one reading of an epoch number in the store."""
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit()) or len(value.lstrip("0")) > len(str(max_epochs())):
            return None  # (a long string of digits is never converted)
        value = int(value)
    elif isinstance(value, float):
        if not (math.isfinite(value) and value == int(value)):
            return None
        value = int(value)
    elif not isinstance(value, int) or isinstance(value, bool):
        return None
    return value if 1 <= value <= max_epochs() else None


def check_run_name(name: str) -> str:
    """The one rule for run names, for the command line, ``train`` and the dashboard alike: letters, digits,
    '.', '_' and '-', not starting with '.' or '-', at most 100 characters. Returns ``name``; a ``ModaError``
    says why it cannot be used."""
    if not isinstance(name, str) or not _RUN_NAME.fullmatch(name):
        raise ModaError(f"run name {name!r} is not a plain folder name: use letters, digits, '.', '_' or '-' "
                        "(no '@', '/' or spaces), not starting with '.' or '-', at most 100 characters")
    return name


def check_folder_name(path: Path) -> None:
    """A ``ModaError`` when a run folder's name breaks the run name rule (``RUN@EPOCH`` could not name it)."""
    try:
        check_run_name(path.name)
    except ModaError as error:
        raise ModaError(f"not a valid run name, so nothing can open it: {error}") from None


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


def checkpoint_path(run_dir: str | Path, epoch: int) -> Path:
    """Where a run's periodic checkpoint of ``epoch`` lies: ``RUN/checkpoints/epoch-0005.safetensors``."""
    return Path(run_dir) / CHECKPOINTS / f"epoch-{epoch:04d}.safetensors"


def checkpoint_epoch(name: str) -> int | None:
    """The epoch of a checkpoint's file name (``epoch-0005.safetensors`` → 5); None for any other name."""
    match = _CHECKPOINT.fullmatch(name)
    return epoch_number(match.group(1)) if match else None


@dataclass(frozen=True)
class RunRef:
    """A run: ``path``, its folder, and ``epoch``, None for its last committed weights (``RUN``) or the epoch of
    one of its periodic checkpoints (``RUN@EPOCH``). ``RunRef.parse(spec)`` reads a spec, ``str(ref)`` writes it."""

    path: Path
    epoch: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if self.epoch is not None and (type(self.epoch) is not int or epoch_number(self.epoch) is None):
            raise ModaError(f"epoch {self.epoch!r} of run {self.path} is not a whole number from 1 to "
                            f"{max_epochs():,}")

    @classmethod
    def parse(cls, spec: str | Path | RunRef) -> RunRef:
        """``"runs/a"`` → ``RunRef(runs/a)``, ``"runs/a@5"`` → ``RunRef(runs/a, 5)``. The part after the last '@'
        of the spec's last path part is the epoch (run names hold no '@'): a ``ModaError`` naming the spec when it
        is not a whole number from 1 to ``max_epochs()`` in ASCII digits, or when no run is named before it."""
        if isinstance(spec, RunRef):
            return spec
        text = str(spec)
        run, at, epoch = text.rpartition("@")
        if not at or "/" in epoch or os.sep in epoch:
            return cls(Path(text))
        number = epoch_number(epoch)
        if number is None or not run or run.endswith(("/", os.sep)):
            raise ModaError(f"{text!r} is not a run spec: RUN names a run folder, RUN@EPOCH one of its "
                            f"checkpoints, with EPOCH a whole number from 1 to {max_epochs():,}")
        return cls(Path(run), number)

    def __str__(self) -> str:
        return str(self.path) if self.epoch is None else f"{self.path}@{self.epoch}"

    @property
    def name(self) -> str:
        """The run's name (its folder's name)."""
        return self.path.name

    def at(self, epoch: int | None) -> RunRef:
        """The same run at another epoch (None: its last committed weights)."""
        return RunRef(self.path, epoch)
