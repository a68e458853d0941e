"""Listing runs: :func:`list_runs` summarizes every run folder of a runs folder (:func:`summarize_run`, a
:class:`~moda_core.store.summary.RunSummary` each) without building a model or loading weights.

A run folder is untrusted input: whatever goes wrong while reading one makes its entry *broken*, never the listing.
Pages list the runs on every view, so what was read of a folder is kept per state of the folder (every entry's
name, identity, size and times): a folder nothing has written to is not read again.
"""
from __future__ import annotations

import math
import os
import threading
import time
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any

from moda_core.errors import ModaError
from moda_core.import_policy import allowed_packages, needs
from moda_core.io import read_tensor_header
from moda_core.methods import method_of
from moda_core.models.user import package_of
from moda_core.run_config import is_real
from moda_core.store.checks import check_finite_weights, check_shapes, checked_once, header_shapes, one_line
from moda_core.store.commit import resolve_files, weights_epoch
from moda_core.store.loading import list_checkpoints, model_shapes
from moda_core.store.lock import training_pid
from moda_core.store.names import (
    COMMIT,
    CONFIG,
    HISTORY,
    LOCK,
    METRICS,
    MODEL,
    check_folder_name,
    check_plain_folder,
    checkpoint_path,
)
from moda_core.store.records import committed_history, read_config, read_metrics
from moda_core.store.summary import RunStatus, RunSummary

_FILLED: OrderedDict[tuple, dict[str, Any]] = OrderedDict()  # folder state → what _fill_summary found there
_FILLED_MAX = 512
_FILLED_LOCK = threading.Lock()
_SETTLED_NS = 2_000_000_000  # a folder written to less than this long ago is read afresh


class _NoFinishedEpoch(ModaError):
    """A run folder whose trainer has not committed an epoch yet: running or interrupted, not broken."""


def list_runs(runs_dir: str | Path) -> list[RunSummary]:
    """Summaries of every run folder under ``runs_dir`` (:func:`summarize_run`), by name; none when ``runs_dir`` is
    absent or a file (the command line says so; pages just show no runs)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    try:
        folders = sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as error:
        raise ModaError(f"cannot read runs folder {runs_dir}: {error.strerror}") from None
    return [summarize_run(p) for p in folders]


def summarize_run(path: str | Path) -> RunSummary:
    """One run folder's :class:`RunSummary`. Reads the JSON files, the history, safetensors headers, and weights
    files up to ``checks.MAX_CHECKED_WEIGHTS`` (checked once per version: finite weights).

    Its status: *complete*, *running* (a process holds its lock), *interrupted*, *broken* (whatever goes wrong
    while reading it: a malformed config, a FIFO, a truncated file … with a one-line ``error``) or *needs-models* (a
    model of one's own from a package not allowed: ``needs`` names it; listing never imports a builder)."""
    path = Path(path)
    try:
        pid = training_pid(path)
    except Exception:  # an unreadable lock: nothing is known to be training
        pid = None
    running = pid is not None
    found: dict[str, Any] = {}  # the fields read so far (a broken run keeps what was read before it failed)
    for attempt in range(3):
        try:
            _filled_once(path, running, found)
            break
        except Exception as error:  # any failure reading one folder makes that folder broken, never the listing
            if attempt < 2 and running:
                continue  # the trainer may have renamed a staged file under us
            if isinstance(error, _NoFinishedEpoch):
                status = RunStatus.RUNNING if running else RunStatus.INTERRUPTED
            else:
                status = RunStatus.BROKEN
            return RunSummary(path.name, path, **{**found, "status": status, "error": one_line(error), "pid": pid})
    summary = RunSummary(path.name, path, **found, loadable=True, pid=pid)
    builder = summary.model if ":" in str(summary.model) else None
    if builder is not None and package_of(builder) not in allowed_packages():  # listed, never imported
        return replace(summary, status=RunStatus.NEEDS_MODELS, loadable=False, needs=package_of(builder),
                       error=needs(package_of(builder)))
    if running:
        return replace(summary, status=RunStatus.RUNNING)
    done = summary.epochs is not None and summary.epochs_done >= summary.epochs
    return replace(summary, status=RunStatus.COMPLETE if done else RunStatus.INTERRUPTED)


def _folder_state(path: Path) -> tuple | None:
    """Every entry of a run folder and of the folders in it (checkpoints), by name, kind, identity, size and
    modification and change times: any write the store makes (a new file renamed into place) changes it. None
    while something in it changed in the last two seconds: a file rewritten in place within the clock's
    granularity can keep its times, so only a settled folder is recognised by its state."""
    state: list[tuple[str | int, ...]] = []
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


def _filled_once(path: Path, running: bool, found: dict[str, Any]) -> None:
    """``_fill_summary``, kept per state of the folder (``_folder_state``) so that listing a folder nothing has
    written to reads no file again (pages list the runs on every view). A folder that fails to read is read again
    next time. What is kept is immutable (a summary's fields), so every caller may be handed it."""
    try:
        state = _folder_state(path)
    except OSError:
        state = None
    key = None if state is None else (str(path), running, state)
    if key is not None:
        with _FILLED_LOCK:
            known = _FILLED.get(key)
            if known is not None:
                _FILLED.move_to_end(key)
        if known is not None:
            found.update(known)
            return
    _fill_summary(path, running, found)
    if key is not None:
        with _FILLED_LOCK:
            _FILLED[key] = dict(found)
            while len(_FILLED) > _FILLED_MAX:
                _FILLED.popitem(last=False)


def _fill_summary(path: Path, running: bool, found: dict[str, Any]) -> None:
    """Read a run folder into ``found`` (:class:`RunSummary` fields), as far as it reads; a ``ModaError`` (or any
    other error) says why it stopped there (``_NoFinishedEpoch``: no epoch committed yet, not broken)."""
    check_folder_name(path)
    check_plain_folder(path)  # a run folder that is, or holds, a symbolic link is broken
    if not (path / CONFIG).exists() and (running or (path / LOCK).exists()):
        raise _NoFinishedEpoch("no finished epoch yet (the run is starting, or stopped as it started)")
    config = read_config(path)
    train, data = config.get("train", {}), config.get("data", {})
    found.update(model=config["arch"]["name"], dataset=data.get("name", train.get("dataset")),
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
        check_shapes(expected, header_shapes(header), weights)
    epoch = weights_epoch(weights, header.get("__metadata__") or {})
    if committed is not None and committed != epoch:
        raise ModaError(f"{weights.name} holds epoch {epoch} but the commit record says epoch {committed}")
    found["epochs_done"] = epoch
    checked_once("finite", weights, check_finite_weights)
    history = committed_history(files[HISTORY], epoch)
    metrics = read_metrics(files[METRICS])
    if metrics.get("epochs_done") == epoch:
        found["test_accuracy"] = _finite(metrics.get("test_accuracy"))
    else:  # metrics.json from another epoch (an older run's crash): take the history row of this one
        rows = [r for r in history if r.get("epoch") == epoch]
        found["test_accuracy"] = _finite(rows[-1].get("test_accuracy")) if rows else None
    found["checkpoints"] = tuple(e for e in list_checkpoints(path)  # offered only if its shapes are the model's
                                 if expected is None or _shapes_fit(expected, checkpoint_path(path, e)))
    found["error"] = None


def _finite(value: Any) -> float | None:
    if not is_real(value):
        return None
    try:
        return float(value) if math.isfinite(value) else None
    except OverflowError:
        return None


def _shapes_fit(expected: dict[str, tuple[int, ...]], weights: Path) -> bool:
    try:
        check_shapes(expected, header_shapes(read_tensor_header(weights)), weights)
        return True
    except (ModaError, OSError):
        return False
