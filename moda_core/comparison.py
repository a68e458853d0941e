"""The comparison table of bench/compare.py (MODA vs MwT vs standard) and the step-overhead JSON of
bench/train_overhead.py: their columns, writers and checked readers, owned here so that the benchmarks
write and the dashboard reads one format.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from moda_core.errors import ModaError
from moda_core.io import atomic_write_bytes

# One row per model × width × method.
COMPARE_COLUMNS = ("model", "width", "method", "epochs", "seed", "test_accuracy", "seconds_per_epoch",
                   "time_ratio_vs_standard", "mean_module_size", "mean_overlap", "pair_params_fraction",
                   "pair_composed_accuracy", "pair_standard_accuracy")
PERCENT_COLUMNS = ("test_accuracy", "mean_module_size", "mean_overlap", "pair_params_fraction",
                   "pair_composed_accuracy", "pair_standard_accuracy")


class CompareFileError(ModaError, ValueError):
    """A comparison file that exists but cannot be used; the message names the file and what is wrong."""


def compare_markdown(table: pd.DataFrame) -> str:
    """The table as Markdown, fractions shown as percentages."""
    shown = table.copy()
    for column in PERCENT_COLUMNS:
        shown[column] = (100 * shown[column]).map("{:.1f}%".format)
    shown["seconds_per_epoch"] = shown["seconds_per_epoch"].map("{:.2f}".format)
    shown["time_ratio_vs_standard"] = shown["time_ratio_vs_standard"].map("{:.2f}x".format)
    header = "| " + " | ".join(shown.columns) + " |\n|" + "---|" * len(shown.columns) + "\n"
    return header + "".join("| " + " | ".join(map(str, row)) + " |\n" for row in shown.itertuples(index=False))


def write_compare_table(path: str | Path, rows: Iterable[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Write the table to ``path`` (CSV) and its Markdown next to it (``.md``), atomically; returns it."""
    table = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows), columns=list(COMPARE_COLUMNS))
    path = Path(path)
    atomic_write_bytes(path, table.to_csv(index=False).encode())
    atomic_write_bytes(path.with_suffix(".md"), compare_markdown(table).encode())
    return table


def read_compare_table(path: str | Path) -> pd.DataFrame:
    """bench/compare.py's table, checked: every column of ``COMPARE_COLUMNS``, numbers where numbers belong,
    at least one row, one row per model × width × method (methods lower-cased). Raises ``CompareFileError``."""
    path = Path(path)
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise CompareFileError(f"`{path}` is empty: no header, no rows.") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as error:
        raise CompareFileError(f"`{path}` is not a readable CSV file: {error}") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in COMPARE_COLUMNS if c not in table.columns]
    if missing:
        raise CompareFileError(f"`{path}` lacks the column(s) {', '.join(missing)}. Expected the columns "
                               f"{', '.join(COMPARE_COLUMNS)}.")
    if table.empty:
        raise CompareFileError(f"`{path}` has a header but no rows.")
    for column in ("model", "method"):
        values = table[column].astype("string").str.strip()
        if values.isna().any() or (values == "").any():
            row = int(np.flatnonzero((values.isna() | (values == "")).to_numpy())[0])
            raise CompareFileError(f"`{path}`: row {row + 2} has no {column}.")
        table[column] = values.astype(str)
    table["method"] = table["method"].str.lower()
    for column in COMPARE_COLUMNS:
        if column in ("model", "method"):
            continue
        numbers = pd.to_numeric(table[column], errors="coerce")
        bad = numbers.isna() & table[column].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise CompareFileError(f"`{path}`: column `{column}` must hold numbers, but row {row + 2} has "
                                   f"{table[column].iloc[row]!r}.")
        table[column] = numbers.astype(float)
    twice = table.duplicated(["model", "width", "method"], keep=False)
    if twice.any():
        first = table[twice].iloc[0]
        raise CompareFileError(f"`{path}` has more than one row for model {first['model']} (width "
                               f"{first['width']:g}) and method {first['method']}.")
    return table[list(COMPARE_COLUMNS) + [c for c in table.columns if c not in COMPARE_COLUMNS]]


def write_train_overhead(path: str | Path, result: Mapping[str, Any]) -> None:
    """Write bench/train_overhead.py's result (``{model: {"moda_ratio": r, ...}, "device": ...}``) atomically."""
    atomic_write_bytes(path, (json.dumps(result, indent=2) + "\n").encode())


def read_train_overhead(path: str | Path) -> tuple[str | None, dict[str, dict[str, float]]]:
    """bench's ``train_overhead.json``: ``{"device": ..., MODEL: {"moda_ratio": r, "mwt_ratio": r}, ...}`` →
    (device, ``{model: {"moda_ratio": r, ...}}``). Only the ``*_ratio`` numbers of object-valued entries
    are kept (other keys are ignored). Raises ``CompareFileError``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CompareFileError(f"`{path}` is not readable JSON: {error}") from None
    if not isinstance(data, dict):
        raise CompareFileError(f"`{path}` should hold a JSON object, not {type(data).__name__}.")
    device = data.get("device")
    ratios: dict[str, dict[str, float]] = {}
    for model, values in data.items():
        if not isinstance(values, dict):
            continue
        for key, ratio in values.items():
            if not str(key).endswith("_ratio"):
                continue
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
                raise CompareFileError(f"`{path}`: `{model}` → `{key}` should be a number, not {ratio!r}.")
            ratios.setdefault(str(model), {})[str(key)] = float(ratio)
    if not ratios:
        raise CompareFileError(f"`{path}` holds no step-time ratios (expected e.g. "
                               '{"lenet5": {"moda_ratio": 1.3, "mwt_ratio": 1.1}}).')
    return (None if device is None else str(device)), ratios
