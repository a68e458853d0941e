"""Reading a run back: :func:`load_run` (``RUN`` or ``RUN@EPOCH``, a :class:`~moda_core.store.names.RunRef`) builds
its model and loads its weights, :func:`resume_state` is what an interrupted run continues from, :func:`run_dataset`
the data it was trained on, :func:`list_checkpoints` its periodic checkpoints. A model's tensor shapes are known
before it is allocated (:func:`model_shapes`, built on the meta device and kept per architecture), so a file of other
sizes is refused before anything is read into memory.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from moda_core.data import Dataset, load_dataset
from moda_core.errors import ModaError
from moda_core.io import load_tensors, read_tensor_header
from moda_core.methods import method_of
from moda_core.models import build_from_arch
from moda_core.run_config import check_config
from moda_core.store.checks import (
    check_finite,
    check_finite_weights,
    check_shapes,
    checked_once,
    header_shapes,
    one_line,
)
from moda_core.store.commit import read_commit, resolve_files, weights_epoch
from moda_core.store.lock import training_pid
from moda_core.store.names import (
    CHECKPOINTS,
    CONFIG,
    HISTORY,
    METRICS,
    MODEL,
    OPTIMIZER,
    RunRef,
    check_folder_name,
    check_plain_folder,
    checkpoint_epoch,
    checkpoint_path,
)
from moda_core.store.records import committed_history, read_config, read_history, read_metrics

MAX_PARAMETERS = 2**31  # about 8 GB of float32 weights: far beyond any run of this tool
_SHAPES: dict[tuple, dict[str, tuple[int, ...]]] = {}  # model_shapes by architecture and method


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
    def ref(self) -> RunRef:
        """What loads this exact state again: the run (its latest weights) or ``RUN@EPOCH`` (derived from the
        weights files' own metadata, never from ``metrics.json``)."""
        latest = self.latest
        if latest is None:
            try:
                latest = weights_epoch(resolve_files(self.path)[1][MODEL]) == self.epoch
            except ModaError:
                latest = False
        return RunRef(self.path, None if latest else self.epoch)

    @property
    def spec(self) -> str:
        """``RUN`` or ``RUN@EPOCH``: :attr:`ref` as a string."""
        return str(self.ref)


def load_weights(model: torch.nn.Module, path: str | Path) -> dict[str, str]:
    """Load safetensors weights into ``model`` strictly; returns the file's metadata.

    Missing keys, unexpected keys, shape differences or non-finite values are a ``ModaError`` that
    names them.
    """
    tensors, metadata = load_tensors(path)
    check_shapes({k: tuple(v.shape) for k, v in model.state_dict().items()},
                 {k: tuple(v.shape) for k, v in tensors.items()}, path)
    check_finite(tensors, path)
    model.load_state_dict(tensors)
    return metadata


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
                        f"{one_line(error)}") from None


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


def load_run(spec: str | Path | RunRef, device: str | torch.device = "cpu") -> Run:
    """Load ``RUN`` (last committed epoch) or ``RUN@EPOCH`` (a periodic checkpoint)."""
    ref = RunRef.parse(spec)
    path = ref.path
    if not path.is_dir():
        raise ModaError(f"no run folder at {path}")
    check_folder_name(path)
    check_plain_folder(path)  # nothing is read through a symbolic link
    for _ in range(2):  # a trainer may finish a commit (rename staged files) while we read: try again
        try:
            return _load_run(path, ref.epoch, device)
        except ModaError:
            if training_pid(path) is None:  # no trainer holds the run: its files were not renamed under us
                raise
    return _load_run(path, ref.epoch, device)


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
    check_shapes(expected, header_shapes(header), weights)
    history = read_history(files[HISTORY])  # it must parse (the listing also checks that it covers every epoch)
    metrics = read_metrics(files[METRICS])
    model = _build(config, path / CONFIG)
    loaded_epoch = weights_epoch(weights, load_weights(model, weights), default=epoch or 0)
    model.to(device).eval()
    return Run(path, config, model, loaded_epoch, history, metrics, weights_path=weights, latest=weights == latest_file)


def dataset_name(run: Run) -> str:
    """The registered name of the data set a run was trained on (a ``ModaError`` when its config names none)."""
    name = run.config.get("train", {}).get("dataset", run.config.get("data", {}).get("name"))
    if name is None:
        raise ModaError(f"run {run.path} names no data set: its config.json has neither train.dataset nor data.name")
    return name


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
    found = {checkpoint_epoch(p.name): p for p in folder.glob("epoch-*.safetensors")} if folder.is_dir() else {}
    return sorted(e for e, p in found.items() if e is not None and (last is None or e <= last)
                  and (not valid_only or _valid_tensor_file(p)))


def _valid_tensor_file(path: Path) -> bool:
    """Whether a checkpoint can be offered: a valid header, and finite weights (checked once per version)."""
    try:
        read_tensor_header(path)
        checked_once("finite", path, check_finite_weights)
        return True
    except (ModaError, OSError):  # corrupt, or gone meanwhile
        return False


@dataclass
class ResumeState:
    """What an interrupted run continues from: its stored training settings and last committed epoch."""

    path: Path
    train: dict[str, Any]  # the ``train`` record of its config.json
    epoch: int  # the last committed epoch; 0: none finished, training starts again from epoch 1
    history: list[dict[str, float]]
    momentum: dict[str, torch.Tensor]  # the optimizer's momentum buffers (empty when epoch is 0)

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
        """Load the committed weights into ``model`` and the momentum buffers into ``optimizer`` (as
        ``lifecycle.momentum_buffers`` stored them)."""
        load_weights(model, self.path / MODEL)
        model.to(device)
        state_dict = optimizer.state_dict()
        state_dict["state"] = {int(key.split(".")[0]): {"momentum_buffer": value.to(device)}
                               for key, value in self.momentum.items()}
        optimizer.load_state_dict(state_dict)


def resume_state(run_dir: str | Path) -> ResumeState:
    """What the run continues from (read after ``lifecycle.open_for_resume``; under torchrun by every rank)."""
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
    epoch = weights_epoch(run_dir / MODEL, model_meta)
    if optimizer_meta.get("epoch") != str(epoch):
        raise ModaError(f"cannot resume {run_dir}: weights (epoch {model_meta.get('epoch')}) and optimizer state "
                        f"(epoch {optimizer_meta.get('epoch')}) disagree")
    history = [row for row in committed_history(run_dir / HISTORY, epoch) if row["epoch"] <= epoch]
    return ResumeState(run_dir, train, epoch, history, momentum)
