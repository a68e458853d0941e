"""A run's records as the store reads and writes them: config.json (checked by ``run_config.check_config``),
history.csv (one row per epoch, every row naming its epoch) and metrics.json (a JSON object). A run folder is
untrusted input: anything malformed is a ``ModaError`` that names the file."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from moda_core import io as store_io  # reads go through store_io.* at call time
from moda_core.errors import ModaError
from moda_core.io import read_json
from moda_core.run_config import check_config, kind_of
from moda_core.store.names import CONFIG, HISTORY, epoch_number

MAX_HISTORY_BYTES = 32 << 20  # history.csv: about 150 bytes per epoch


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """A run's config.json: ``arch`` (the model), ``data``, ``train`` (the training settings) …, checked by
    :func:`check_config`; a missing, unreadable, oversized or malformed file is a ``ModaError``."""
    path = Path(run_dir) / CONFIG
    try:
        config = read_json(path)
    except OSError as error:  # exists but cannot be read (permissions, a folder in its place)
        raise ModaError(f"cannot read {path}: {error.strerror}") from None
    return check_config(config, path)


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
        epoch = epoch_number(row.get("epoch"))
        if epoch is None:
            raise ModaError(f"corrupt history file {path}: row {number} has no epoch number "
                            f"(epoch={row.get('epoch')})")
        row["epoch"] = epoch  # a whole number, as it is written again after a resume
    return rows


def check_history(rows: list[dict[str, float]], epoch: int, path: str | Path) -> None:
    """A ``ModaError`` unless the history holds one row for each epoch 1 … ``epoch``, in order (rows of later
    epochs are ignored: a crash before an older run's commit)."""
    epochs = [int(row["epoch"]) for row in rows if row["epoch"] <= epoch]
    if epochs != list(range(1, epoch + 1)):
        shown = epochs if len(epochs) <= 6 else [*epochs[:3], "…", *epochs[-2:]]
        raise ModaError(f"corrupt history file {path}: it should hold epochs 1 to {epoch} in order, "
                        f"it holds {shown or 'none'}")


def committed_history(path: Path, epoch: int | None) -> list[dict[str, float]]:
    """The history of a run whose weights hold ``epoch`` (None: unknown, the rows are only read): it must be there
    and hold epochs 1 … ``epoch`` (:func:`check_history`)."""
    if epoch is not None and not path.exists() and not path.is_symlink():
        raise ModaError(f"{HISTORY} is missing but the run's weights hold epoch {epoch}")
    history = read_history(path)
    if epoch is not None:
        check_history(history, epoch, path)
    return history


def history_bytes(rows: list[dict[str, Any]]) -> bytes:
    """history.csv's contents for ``rows`` (a column any row has; a row without it: ``nan``)."""
    buffer = io.StringIO()
    if rows:
        fields = list(dict.fromkeys(key for row in rows for key in row))  # rows from older versions may lack some
        writer = csv.DictWriter(buffer, fieldnames=fields, restval="nan", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue().encode()


def read_metrics(path: str | Path) -> dict[str, Any]:
    """A run's metrics.json ({} when it is missing); a ``ModaError`` when it is not a JSON object."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return {}
    metrics = read_json(path)
    if not isinstance(metrics, dict):
        raise ModaError(f"corrupt metrics file {path}: expected a JSON object, got {kind_of(metrics)}")
    return metrics
