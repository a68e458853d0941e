"""The run store: one human-readable folder per training run.

::

    RUN/config.json              everything needed to rebuild the model and the data
    RUN/model.safetensors        weights after the last finished epoch (metadata: epoch)
    RUN/optimizer.safetensors    optimizer state for resuming (metadata: epoch)
    RUN/history.csv              one row per epoch: losses, accuracies, seconds
    RUN/metrics.json             status and final figures
    RUN/checkpoints/epoch-0005.safetensors   periodic weights, addressed as ``RUN@5``

Every file is written to a temporary name in the same folder and renamed into place, so a crash
never leaves a half-written file; weights are safetensors and metadata is JSON, so loading a run
never unpickles code. A folder without ``model.safetensors`` (no epoch finished yet) does not load.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from moda_core.data import Dataset, load_dataset
from moda_core.errors import ModaError
from moda_core.models import ZooNet, build_model

CONFIG, MODEL, OPTIMIZER, HISTORY, METRICS = (
    "config.json", "model.safetensors", "optimizer.safetensors", "history.csv", "metrics.json")
CHECKPOINTS = "checkpoints"


def _plain_file_mode() -> int:
    """The mode a plainly created file gets under this process's umask (mkstemp's files are 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _plain_file_mode()  # read once at import: os.umask is process-wide, not thread-safe


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_with(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Let ``writer`` write a temporary file next to ``path``, then rename it into place.

    The temporary name keeps ``path``'s suffix, for writers that insist on one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        writer(Path(tmp))
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise ModaError(f"missing file {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModaError(f"corrupt JSON file {path}: {error}") from None


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    tensors = {key: value.detach().cpu().contiguous() for key, value in tensors.items()}
    atomic_write_bytes(path, save(tensors, metadata={k: str(v) for k, v in (metadata or {}).items()}))


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file; a missing or corrupt file is a ``ModaError``."""
    path = Path(path)
    if not path.exists():
        raise ModaError(f"missing tensor file {path}")
    metadata = read_tensor_metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ModaError(f"corrupt tensor file {path}: {error}") from None
    return tensors, metadata


def read_tensor_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors file from its JSON header alone (cheap: no tensor data is read)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            header_size = int.from_bytes(handle.read(8), "little")
            if not 2 <= header_size <= min(100_000_000, path.stat().st_size - 8):
                raise ValueError(f"header size {header_size} does not fit the file")
            header = json.loads(handle.read(header_size))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise ModaError(f"corrupt tensor file {path}: {error}") from None
    return header.get("__metadata__") or {}


def write_history(path: str | Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    if rows:
        fields = list(dict.fromkeys(key for row in rows for key in row))  # rows from older versions may lack some
        writer = csv.DictWriter(buffer, fieldnames=fields, restval="nan", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_bytes(path, buffer.getvalue().encode())


def read_history(path: str | Path) -> list[dict[str, float]]:
    path = Path(path)
    if not path.exists():
        return []
    try:
        with open(path, newline="") as handle:
            return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    except (ValueError, csv.Error) as error:
        raise ModaError(f"corrupt history file {path}: {error}") from None


def load_weights(model: torch.nn.Module, path: str | Path) -> dict[str, str]:
    """Load safetensors weights into ``model`` strictly; returns the file's metadata.

    Missing keys, unexpected keys or shape differences are a ``ModaError`` that names them.
    """
    tensors, metadata = load_tensors(path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [f"{k}: file {tuple(tensors[k].shape)}, model {tuple(expected[k].shape)}"
             for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"missing {missing[:5]}{' …' if len(missing) > 5 else ''}")
        if unexpected:
            details.append(f"unexpected {unexpected[:5]}{' …' if len(unexpected) > 5 else ''}")
        if wrong:
            details.append(f"shape mismatch {wrong[:3]}{' …' if len(wrong) > 3 else ''}")
        raise ModaError(f"checkpoint {path} does not match the model in its config: {'; '.join(details)}")
    model.load_state_dict(tensors)
    return metadata


def checkpoint_path(run_dir: str | Path, epoch: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"epoch-{epoch:04d}.safetensors"


def split_run_spec(spec: str | Path) -> tuple[Path, int | None]:
    """``"runs/a@5"`` → (``runs/a``, 5); ``"runs/a"`` → (``runs/a``, None)."""
    match = re.fullmatch(r"(.+)@(\d+)", str(spec))
    if match:
        return Path(match.group(1)), int(match.group(2))
    return Path(spec), None


@dataclass
class Run:
    """A loaded run: its folder, config, model (eval mode) and records."""

    path: Path
    config: dict[str, Any]
    model: ZooNet
    epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def spec(self) -> str:
        """``RUN`` or ``RUN@EPOCH``, the string that loads this exact state again."""
        last = self.metrics.get("epochs_done")
        return str(self.path) if last == self.epoch else f"{self.path}@{self.epoch}"


def build_model_from_config(config: dict[str, Any], where: str | Path = "config") -> ZooNet:
    try:
        arch = config["arch"]
        model = build_model(arch["name"], arch["in_channels"], arch["image_size"], arch["num_classes"],
                            arch.get("width", 1.0))
        if arch.get("mwt"):
            from moda_core.baselines.mwt import to_mwt

            model = to_mwt(model)
        return model
    except (KeyError, TypeError) as error:
        raise ModaError(f"config in {where} does not describe a model (missing {error})") from None


def load_run(spec: str | Path, device: str | torch.device = "cpu") -> Run:
    """Load ``RUN`` (last finished epoch) or ``RUN@EPOCH`` (a periodic checkpoint)."""
    path, epoch = split_run_spec(spec)
    if not path.is_dir():
        raise ModaError(f"no run folder at {path}")
    config = read_json(path / CONFIG)
    model = build_model_from_config(config, path / CONFIG)
    if epoch is None:
        weights = path / MODEL
        if not weights.exists():
            raise ModaError(f"run {path} has no weights yet ({MODEL} is missing): training has not finished an epoch")
    else:
        weights = checkpoint_path(path, epoch)
        if not weights.exists():
            available = list_checkpoints(path)
            raise ModaError(f"run {path} has no checkpoint for epoch {epoch}; "
                            f"available epochs: {available or 'none'}")
    metadata = load_weights(model, weights)
    metrics = read_json(path / METRICS) if (path / METRICS).exists() else {}
    model.to(device).eval()
    return Run(path, config, model, int(metadata.get("epoch", epoch or 0)),
               read_history(path / HISTORY), metrics)


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
                        seed=train.get("seed", 0), device=device)


def list_checkpoints(run_dir: str | Path) -> list[int]:
    folder = Path(run_dir) / CHECKPOINTS
    return sorted(int(m.group(1)) for p in folder.glob("epoch-*.safetensors")
                  if (m := re.fullmatch(r"epoch-(\d+)\.safetensors", p.name)))


def list_runs(runs_dir: str | Path) -> list[dict[str, Any]]:
    """Summaries of every run folder under ``runs_dir``; a folder that does not load is listed with its error."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    summaries = []
    for path in sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        summary: dict[str, Any] = {"name": path.name, "path": str(path)}
        try:
            config = read_json(path / CONFIG)
            metrics = read_json(path / METRICS) if (path / METRICS).exists() else {}
            if not (path / MODEL).exists():
                raise ModaError(f"{MODEL} is missing (no finished epoch)")
            read_tensor_metadata(path / MODEL)
            summary.update(model=config["arch"]["name"], dataset=config["data"]["name"],
                           alpha=config["train"]["alpha"], beta=config["train"]["beta"],
                           gamma=config["train"]["gamma"], method=config["train"].get("method", "moda"),
                           status=metrics.get("status", "unknown"),
                           epochs_done=metrics.get("epochs_done"), test_accuracy=metrics.get("test_accuracy"),
                           checkpoints=list_checkpoints(path), error=None)
        except (ModaError, KeyError, TypeError) as error:
            summary["error"] = str(error)
        summaries.append(summary)
    return summaries
