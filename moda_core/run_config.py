"""The schema of a run's ``config.json``, checked before anything is built from it: a run folder is
untrusted input (it may come from anyone), so a config must be an object of the expected shape, every
size within bounds and every name known (docs/design.md, Run store and its commit protocol). The run
store (``moda_core.runs.read_config``) checks every config it reads through :func:`check_config`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from moda_core.data import DATASETS
from moda_core.errors import ModaError
from moda_core.methods import method_of
from moda_core.models import MODELS
from moda_core.models.user import check_points, is_import_path

MAX_IN_CHANNELS, MAX_IMAGE_SIZE, MAX_CLASSES, MAX_WIDTH = 4096, 4096, 100_000, 8.0  # width: as build_model
MAX_SEED = 2**32 - 1  # the trainer seeds with (seed·100003 + epoch)·1009 + rank, which must stay an int64
MAX_EPOCHS, MAX_BATCH = 100_000, 1_000_000  # beyond any real training; a stored count past them is corrupt
_TYPE_NAMES = {str: "a string", int: "a whole number", float: "a number", bool: "true or false", list: "a list",
               dict: "an object"}


def kind_of(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _bad(where: Path | str, key: str, value: Any, expected: str) -> ModaError:
    shown = repr(value) if isinstance(value, (int, float, bool)) or value is None else f"a {kind_of(value)}"
    if isinstance(value, str):
        shown = repr(value if len(value) <= 40 else value[:40] + "…")
    return ModaError(f"corrupt config {where}: {key} must be {expected}, got {shown}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int_in(value: Any, key: str, low: int, high: int | None, where: Path | str) -> int:
    if not _is_int(value) or value < low or (high is not None and value > high):
        raise _bad(where, key, value, f"a whole number from {low}" + (f" to {high:,}" if high is not None else ""))
    return value


def _real_in(value: Any, key: str, low: float, high: float | None, where: Path | str, low_open: bool = False) -> float:
    if is_real(value):
        try:
            ok = (math.isfinite(value) and (value > low if low_open else value >= low)
                  and (high is None or value <= high))
        except OverflowError:  # an int too large for a float
            ok = False
        if ok:
            return value
    interval = f"{'(' if low_open else '['}{low:g}, {'∞)' if high is None else f'{high:g}]'}"
    raise _bad(where, key, value, f"a finite number in {interval}")


def _class_list(value: Any, key: str, where: Path | str) -> list[int]:
    if not isinstance(value, list) or len(value) > MAX_CLASSES or not all(
            _is_int(c) and 0 <= c < MAX_CLASSES for c in value):
        raise _bad(where, key, value, f"a list of class ids (whole numbers from 0 to {MAX_CLASSES - 1:,})")
    return value


# what a stored ``train`` record may hold: key → (check, None allowed); the TrainConfig fields whose default is
# None may be null
_TRAIN_FIELDS: dict[str, tuple[Any, bool]] = {
    "method": (str, False), "model": (str, False), "dataset": (str, False), "device": (str, False),
    "data_root": (str, True), "seed": ((0, MAX_SEED), False), "epochs": ((1, MAX_EPOCHS), False),
    "batch_size": ((1, MAX_BATCH), False), "checkpoint_every": ((0, MAX_EPOCHS), False),
    "alpha": ((0.0, None, False), True), "beta": ((0.0, None, False), True), "gamma": ((0.0, None, False), True),
    "lr": ((0.0, None, True), False), "momentum": ((0.0, None, False), False),
    "width": ((0.0, MAX_WIDTH, True), False), "train_fraction": ((0.0, 1.0, True), False),
    "augment": (bool, True), "compile": (bool, False), "download": (bool, False),
    "track_modular_terms": (bool, False), "classes": (list, True), "class_fractions": (dict, True),
    "points": (str, False), "threshold": ((-1e6, 1e6, False), False),
}
_DATA_FIELDS: dict[str, tuple[Any, bool]] = {
    "name": (str, False), "data_root": (str, True), "seed": ((0, MAX_SEED), False),
    "train_fraction": ((0.0, 1.0, True), False), "train_size": ((0, None), False), "test_size": ((0, None), False),
    "classes": (list, False), "class_names": ("names", False), "class_fractions": (dict, True),
}


def _check_fields(record: dict[str, Any], section: str, fields: dict[str, tuple[Any, bool]],
                  where: Path | str) -> None:
    for key, (check, nullable) in fields.items():
        if key not in record or (record[key] is None and nullable):
            continue
        value, name = record[key], f"{section}.{key}"
        if check == "names":
            if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
                raise _bad(where, name, value, "a list of class names (strings)")
        elif check is list:
            _class_list(value, name, where)
        elif check is bool:
            if not isinstance(value, bool):
                raise _bad(where, name, value, _TYPE_NAMES[bool])
        elif isinstance(check, type):
            if not isinstance(value, check):
                raise _bad(where, name, value, _TYPE_NAMES[check])
        elif len(check) == 2:
            _int_in(value, name, *check, where)
        else:
            low, high, low_open = check
            _real_in(value, name, low, high, where, low_open)


def check_config(config: Any, where: str | Path = "config") -> dict[str, Any]:
    """Check a run's config (config.json, already parsed) before anything is built from it: an object whose
    ``arch`` names a known model with positive, bounded sizes (channels ≤ 4096, image size 8 … 4096, classes ≤
    100,000, width in (0, 8]), whose ``data`` and ``train`` records, when present, are objects whose settings
    have the types and bounds the trainer accepts, and whose sizes agree with its data set's. Returns
    ``config``; a ``ModaError`` names the first problem. The one check for listing, loading, resuming,
    decomposing and the command line (:func:`read_config`)."""
    if not isinstance(config, dict):
        raise ModaError(f"corrupt config {where}: expected a JSON object, got {kind_of(config)}")
    arch = config.get("arch")
    if not isinstance(arch, dict):
        raise ModaError(f"corrupt config {where}: arch (the model) must be an object, got {kind_of(arch)}")
    name = arch.get("name")
    if not isinstance(name, str) or (name not in MODELS and not is_import_path(name)):
        raise _bad(where, "arch.name", name, f"a known model ({', '.join(MODELS)}) or an import path "
                                             "package.module:function")
    if name not in MODELS:  # a model of the user's own: how its points were chosen
        points = arch.get("points", "relu")
        if not isinstance(points, str):
            raise _bad(where, "arch.points", points, "activation kinds such as 'relu' or 'relu,gelu'")
        try:
            check_points(points)
        except ModaError as error:
            raise ModaError(f"corrupt config {where}: {error}") from None
        _real_in(arch.get("threshold", 0.0), "arch.threshold", -1e6, 1e6, where)
        if arch.get("width", 1.0) != 1.0:
            raise _bad(where, "arch.width", arch.get("width"), "1 for a model built by an import path")
    in_channels = _int_in(arch.get("in_channels"), "arch.in_channels", 1, MAX_IN_CHANNELS, where)
    image_size = _int_in(arch.get("image_size"), "arch.image_size", 8, MAX_IMAGE_SIZE, where)
    num_classes = _int_in(arch.get("num_classes"), "arch.num_classes", 1, MAX_CLASSES, where)
    _real_in(arch.get("width", 1.0), "arch.width", 0.0, MAX_WIDTH, where, low_open=True)
    for section, fields in (("data", _DATA_FIELDS), ("train", _TRAIN_FIELDS)):
        if section in config:
            if not isinstance(config[section], dict):
                raise ModaError(f"corrupt config {where}: {section} must be an object, got {kind_of(config[section])}")
            _check_fields(config[section], section, fields, where)
    data, train = config.get("data", {}), config.get("train", {})
    for key in ("classes", "class_names"):
        if key in data and len(data[key]) != num_classes:
            raise ModaError(f"corrupt config {where}: data.{key} lists {len(data[key])} classes but the model "
                            f"has {num_classes}")
    method_of(config)  # a known training method, or a ModaError naming them
    dataset = train.get("dataset", data.get("name"))
    info = DATASETS.get(dataset) if isinstance(dataset, str) else None
    if info is not None:  # a known data set: the model's input and classes must be its own
        if (in_channels, image_size) != (info.in_channels, info.image_size):
            raise ModaError(f"corrupt config {where}: the model takes {in_channels}×{image_size}×{image_size} "
                            f"inputs but data set {dataset!r} has {info.in_channels}×{info.image_size}×"
                            f"{info.image_size} images")
        classes = data.get("classes", train.get("classes"))
        if classes is not None and any(c >= info.num_classes for c in classes):
            raise ModaError(f"corrupt config {where}: classes {classes[:10]} are not all classes of data set "
                            f"{dataset!r} (0 to {info.num_classes - 1})")
        if num_classes > info.num_classes:
            raise ModaError(f"corrupt config {where}: the model has {num_classes} classes but data set "
                            f"{dataset!r} has {info.num_classes}")
    return config
