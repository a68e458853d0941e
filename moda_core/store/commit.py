"""One epoch = one commit: how an epoch's files are saved together and how readers find the committed set.

An epoch's files are first written under staged names (``.e0005.model.safetensors`` …), then ``commit.json`` is
renamed into place (the commit point), then the staged files are renamed to their readable names. Readers resolve
each file through the commit record (:func:`resolve_files`), so they always see one epoch's consistent set; the
process that holds the run's lock finishes an interrupted commit or discards an uncommitted one (:func:`recover`).
A folder without ``commit.json`` (older runs, the bundled demo) is read as before.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from moda_core import io as store_io  # writes go through store_io.* at call time (tests inject failures)
from moda_core.errors import ModaError
from moda_core.io import read_json, read_tensor_metadata
from moda_core.store.names import CHECKPOINTS, COMMIT, COMMITTED_FILES, MODEL, checkpoint_epoch, epoch_number

_STAGED = re.compile(r"\.e(\d{4,})\.(.+)")


def staged_name(name: str, epoch: int) -> str:
    """The name an epoch's file has until its commit is finished: ``.e0005.model.safetensors``."""
    return f".e{epoch:04d}.{name}"


def weights_epoch(path: str | Path, metadata: dict[str, str] | None = None, default: int | None = None) -> int:
    """The epoch a weights file says it holds (its own metadata, read from ``path`` unless the caller has
    read it already). A file that says none is an error, unless a ``default`` is given (a checkpoint is named by
    its epoch); one that says something else than an epoch number is an error."""
    value = (read_tensor_metadata(path) if metadata is None else metadata).get("epoch")
    if value is None and default is not None:
        return default
    epoch = epoch_number(value)
    if epoch is None:
        raise ModaError(f"weights file {path} does not say which epoch it holds (metadata epoch={value!r})")
    return epoch


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
            number = checkpoint_epoch(path.name)
            uncommitted = number is not None and number > epoch and (record is not None or epoch == 0)
            if _is_temporary(path.name) or uncommitted:
                path.unlink(missing_ok=True)
    return epoch
