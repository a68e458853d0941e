"""The schema of a run's ``config.json``, checked before anything is built from it: a run folder is
untrusted input (it may come from anyone), so a config must be an object of the expected shape, every
size within bounds and every name known (docs/design.md, Run store and its commit protocol). The run
store (``moda_core.runs.read_config``) checks every config it reads through :func:`check_config`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from moda_core.config import (
    MAX_CLASSES,
    MAX_EPOCHS,
    MAX_IMAGE_SIZE,
    MAX_IN_CHANNELS,
    MAX_SEED,
    MAX_THRESHOLD,
    MAX_WIDTH,
    STRICT,
    ClassIds,
    TrainSettings,
    check_fields,
    kind_of,
    setting,
    shown,
)
from moda_core.data import DATASETS
from moda_core.errors import ModaError
from moda_core.methods import method_of
from moda_core.models import MODELS
from moda_core.models.user import check_points, is_import_path

__all__ = ["MAX_EPOCHS", "MAX_SEED", "check_config", "is_real", "kind_of"]


def is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class ArchRecord(BaseModel):
    """config.json's ``arch`` sizes (its ``name`` and ``points`` are checked against the registries)."""

    model_config = STRICT.copy() | {"extra": "ignore"}

    in_channels: int = setting(..., ge=1, le=MAX_IN_CHANNELS)
    image_size: int = setting(..., ge=8, le=MAX_IMAGE_SIZE)
    num_classes: int = setting(..., ge=1, le=MAX_CLASSES)
    width: float = setting(1.0, gt=0.0, le=MAX_WIDTH)
    threshold: float = setting(0.0, ge=-MAX_THRESHOLD, le=MAX_THRESHOLD)


class DataRecord(BaseModel):
    """config.json's ``data`` record: the data a run was trained on (a missing key: an older run)."""

    model_config = STRICT.copy() | {"extra": "ignore"}

    name: str = setting(None)
    data_root: str | None = setting(None)
    seed: int = setting(None, ge=0, le=MAX_SEED)
    train_fraction: float = setting(None, gt=0.0, le=1.0)
    train_size: int = setting(None, ge=0)
    test_size: int = setting(None, ge=0)
    classes: ClassIds = setting(None, expected=f"a list of class ids (whole numbers from 0 to {MAX_CLASSES - 1:,})")
    class_names: list[str] = setting(None, expected="a list of class names (strings)")
    class_fractions: dict[Any, Any] | None = setting(None)


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
        raise ModaError(f"corrupt config {where}: arch.name must be a known model ({', '.join(MODELS)}) or an import "
                        f"path package.module:function, got {shown(name)}")
    sizes: dict[str, Any] = {key: arch.get(key) for key in ("in_channels", "image_size", "num_classes")}
    sizes.update({key: arch[key] for key in ("width", "threshold") if key in arch})
    check_fields(ArchRecord, sizes, str(where), "arch")
    if name not in MODELS:  # a model of the user's own: how its points were chosen
        points = arch.get("points", "relu")
        if not isinstance(points, str):
            raise ModaError(f"corrupt config {where}: arch.points must be activation kinds such as 'relu' or "
                            f"'relu,gelu', got {shown(points)}")
        try:
            check_points(points)
        except ModaError as error:
            raise ModaError(f"corrupt config {where}: {error}") from None
        if arch.get("width", 1.0) != 1.0:
            raise ModaError(f"corrupt config {where}: arch.width must be 1 for a model built by an import path, got "
                            f"{shown(arch.get('width'))}")
    in_channels, image_size, num_classes = sizes["in_channels"], sizes["image_size"], sizes["num_classes"]
    for section, schema in (("data", DataRecord), ("train", TrainSettings)):
        if section in config:
            if not isinstance(config[section], dict):
                raise ModaError(f"corrupt config {where}: {section} must be an object, got {kind_of(config[section])}")
            known = {key: value for key, value in config[section].items() if key in schema.model_fields}
            check_fields(schema, known, str(where), section)
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
