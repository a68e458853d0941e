"""One trainer for standard (α=β=γ=0) and MODA training, writing into the run store.

SGD with Nesterov momentum 0.9, a per-step cosine learning-rate schedule and no weight decay, as in
the paper. Data stays on the device; each epoch's order and augmentation come from a generator seeded
by (seed, epoch), so a resumed run sees exactly the batches an uninterrupted run would have seen.
Per-batch figures are accumulated on the device and read once per epoch (no host sync per step).
"""
from __future__ import annotations

import math
import platform
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from moda_core import distributed, runs
from moda_core.activations import record_activations
from moda_core.baselines.mwt import mwt_loss, record_masks, to_mwt
from moda_core.data import Dataset, check_classes, dataset_info, load_dataset
from moda_core.errors import ModaError
from moda_core.losses import modular_losses
from moda_core.metrics import accuracy, predict_logits
from moda_core.models import MODELS, ZooNet, build_model


METHOD_DEFAULTS = {"moda": (1.0, 1.0, 0.3), "mwt": (0.5, 1.5, 0.0)}  # (alpha, beta, gamma)


@dataclass
class TrainConfig:
    model: str = "lenet5"
    dataset: str = "mnist5k"
    epochs: int = 10
    # loss weights; None = the method's defaults (MODA: 1, 1, 0.3; MwT: 0.5, 1.5, 0). α=β=γ=0: standard
    alpha: float | None = None
    beta: float | None = None
    gamma: float | None = None
    method: str = "moda"  # "moda" (activation terms; standard when α=β=γ=0) or "mwt" (the mask baseline)
    width: float = 1.0
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    seed: int = 0
    classes: list[int] | None = None  # original class ids to learn; None = all
    train_fraction: float = 1.0
    augment: bool | None = None  # None: the data set's default (crop+flip for RGB sets)
    data_root: str | None = None
    download: bool = False
    checkpoint_every: int = 0  # also keep weights every N epochs (RUN@EPOCH); 0 = only the last
    device: str = "auto"
    compile: bool = False  # torch.compile the model (worth it on a GPU)
    track_modular_terms: bool = True  # log the modular terms of standard runs too (detached)

    def __post_init__(self) -> None:
        defaults = METHOD_DEFAULTS.get(self.method, METHOD_DEFAULTS["moda"])
        for name, value in zip(("alpha", "beta", "gamma"), defaults):
            if getattr(self, name) is None:
                setattr(self, name, value)

    @property
    def modular(self) -> bool:
        return bool(self.alpha or self.beta or self.gamma)

    @property
    def kind(self) -> str:
        """The kind of training, as run names and tables call it: standard, moda or mwt."""
        if self.method == "mwt":
            return "mwt"
        return "moda" if self.modular else "standard"

    def validate(self) -> None:
        if self.method not in METHOD_DEFAULTS:
            raise ModaError(f"unknown training method {self.method!r}: expected one of {', '.join(METHOD_DEFAULTS)}")
        if self.method == "mwt" and self.gamma:
            raise ModaError(f"MwT has no compactness term: gamma must be 0, got {self.gamma}")
        if self.model not in MODELS:
            raise ModaError(f"unknown model {self.model!r}: expected one of {', '.join(MODELS)}")
        info = dataset_info(self.dataset)
        if self.classes is not None:
            self.classes = check_classes(self.classes, info.num_classes, f"data set {self.dataset!r}")
        if self.epochs < 1:
            raise ModaError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 2:
            raise ModaError(f"batch size must be at least 2 (the modular terms compare pairs), got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ModaError(f"learning rate must be a positive number, got {self.lr}")
        for name in ("alpha", "beta", "gamma"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ModaError(f"{name} must be a non-negative number, got {value}")
        if self.checkpoint_every < 0:
            raise ModaError(f"checkpoint interval must be >= 0, got {self.checkpoint_every}")


@dataclass
class Progress:
    """What a progress callback receives: after every batch (``kind="batch"``) and epoch (``"epoch"``)."""

    kind: str
    epoch: int  # 1-based
    epochs: int
    step: int
    steps: int
    record: dict[str, float] = field(default_factory=dict)  # the history row, for kind="epoch"


ProgressCallback = Callable[[Progress], None]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ModaError(f"unknown device {device!r}: expected auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModaError(f"device {device!r} was asked for but no CUDA GPU is available; use --device cpu or auto")
    return resolved


def make_config_record(config: TrainConfig, model: ZooNet, data: Dataset, device: torch.device) -> dict[str, Any]:
    train = asdict(config)
    return {
        "arch": model.arch,
        "data": {"name": config.dataset, "classes": data.classes, "class_names": data.class_names,
                 "train_fraction": config.train_fraction, "seed": config.seed, "data_root": config.data_root,
                 "train_size": len(data.train), "test_size": len(data.test)},
        "train": {k: v for k, v in train.items() if k not in ("download",)},
        "created": datetime.now().isoformat(timespec="seconds"),
        "device": str(device),
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }


def default_run_name(config: TrainConfig) -> str:
    kind = config.kind
    return f"{config.model}-{config.dataset}-{kind}-{datetime.now():%Y%m%d-%H%M%S}"


def data_for_config(config: TrainConfig, device: torch.device) -> Dataset:
    return load_dataset(config.dataset, root=config.data_root, download=config.download, classes=config.classes,
                        train_fraction=config.train_fraction, seed=config.seed, device=device)


def train(config: TrainConfig, runs_dir: str | Path = "runs", name: str | None = None,
          progress: ProgressCallback | None = None, resume: bool = False) -> runs.Run:
    """Train into ``runs_dir/name`` and return the loaded run.

    ``resume=True`` continues an interrupted run with the same name from its last finished epoch
    (its stored config wins over ``config``, except for ``epochs``, which may be raised).
    """
    config.validate()
    if name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ModaError(f"run name {name!r} must use letters, digits, '.', '_' or '-'")
    ctx = distributed.context()
    if ctx.active and name is None:
        raise ModaError("under torchrun every process must agree on the run folder: pass --name")
    run_dir = Path(runs_dir) / (name or default_run_name(config))
    if name is None and not resume:
        base, number = run_dir, 2
        while run_dir.exists():  # two default names in the same second
            run_dir, number = base.with_name(f"{base.name}-{number}"), number + 1
    start_epoch, history, optimizer_state = 0, [], None
    if resume:
        config, start_epoch, history, optimizer_state = _resume_state(run_dir, config)
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise ModaError(f"run folder {run_dir} already exists: pick another --name, or --resume to continue it")
    distributed.barrier(ctx)  # every rank has checked the folder before rank 0 writes into it

    device = resolve_device(distributed.device_for(config.device, ctx))
    torch.manual_seed(config.seed)
    data = data_for_config(config, device)
    model = build_model(config.model, data.info.in_channels, data.info.image_size, data.num_classes, config.width)
    if config.method == "mwt":
        model = to_mwt(model)
    model.to(device)
    channels_last = device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=True,
                                weight_decay=0.0)
    if resume:
        runs.load_weights(model, run_dir / runs.MODEL)
        model.to(device)
        optimizer.load_state_dict(_optimizer_state_dict(optimizer, optimizer_state, device))
    elif ctx.is_main:
        record = make_config_record(config, model, data, device)
        record["world_size"] = ctx.world_size
        runs.write_json(run_dir / runs.CONFIG, record)
        runs.write_json(run_dir / runs.METRICS, {"status": "running", "epochs_done": 0})
    network: torch.nn.Module = model
    if ctx.active:
        network = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        network = torch.compile(network)

    augment = data.info.augment if config.augment is None else config.augment
    steps = len(distributed.shard_batches(torch.arange(len(data.train)), config.batch_size, ctx))
    total_steps = config.epochs * steps
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    record_terms = config.modular or config.track_modular_terms
    mwt = config.method == "mwt"
    seconds_total = sum(row["seconds"] for row in history)

    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        model.train()
        # the same permutation on every rank; augmentation differs per rank
        order_generator = torch.Generator(device=device).manual_seed(config.seed * 100_003 + epoch)
        order = torch.randperm(len(data.train), device=device, generator=order_generator)
        generator = torch.Generator(device=device).manual_seed((config.seed * 100_003 + epoch) * 1_009 + ctx.rank)
        sums = torch.zeros(6, device=device)  # ce, affinity, dispersion, compactness, correct, seen
        for step, index in enumerate(distributed.shard_batches(order, config.batch_size, ctx)):
            for group in optimizer.param_groups:
                group["lr"] = 0.5 * config.lr * (1 + math.cos(math.pi * (epoch * steps + step) / total_steps))
            x, y = data.train.batch(index, augment=augment, generator=generator)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits, ce, loss, affinity, dispersion, compactness = forward_losses(
                config, model, network, x, y, autocast, record_terms)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n = y.numel()
            sums += torch.stack([ce.detach() * n, affinity.detach() * n, dispersion.detach() * n,
                                 compactness.detach() * n, (logits.argmax(1) == y).sum().float(),
                                 torch.full((), float(n), device=device)])
            if progress and ctx.is_main:
                progress(Progress("batch", epoch + 1, config.epochs, step + 1, steps))
        distributed.all_reduce_sum(sums, ctx)
        ce_sum, aff_sum, dis_sum, com_sum, correct, seen = sums.tolist()  # the one sync of the epoch
        train_seconds = time.perf_counter() - started
        if not all(math.isfinite(v) for v in (ce_sum, aff_sum, dis_sum, com_sum)):
            raise ModaError(
                f"the loss became NaN or infinite in epoch {epoch + 1} of run {run_dir} "
                f"(CE sum {ce_sum}, affinity {aff_sum}, dispersion {dis_sum}, compactness {com_sum}); "
                f"try a lower --lr or smaller loss weights. The run store keeps epoch {epoch} as it was.")
        if not ctx.is_main:
            continue  # rank 0 evaluates and writes; the others go on to the next epoch
        test_accuracy = accuracy(predict_logits(model, data.test), data.test.labels)
        seconds = time.perf_counter() - started
        seconds_total += seconds
        row = {"epoch": epoch + 1, "ce": ce_sum / seen,
               "affinity": aff_sum / seen if record_terms or mwt else float("nan"),
               "dispersion": dis_sum / seen if record_terms or mwt else float("nan"),
               "compactness": com_sum / seen if record_terms and not mwt else float("nan"),
               "train_accuracy": correct / seen, "test_accuracy": test_accuracy, "seconds": seconds,
               "train_seconds": train_seconds}
        history.append(row)
        _save_epoch(run_dir, model, optimizer, history, epoch + 1, config, seconds_total, device)
        if progress:
            progress(Progress("epoch", epoch + 1, config.epochs, steps, steps, dict(row)))
    distributed.barrier(ctx)  # rank 0 has written the last epoch
    return runs.load_run(run_dir, device)


def forward_losses(config: TrainConfig, model: ZooNet, network: torch.nn.Module, x: torch.Tensor,
                    y: torch.Tensor, autocast: torch.autocast, record_terms: bool) -> tuple[torch.Tensor, ...]:
    """One forward pass: ``(logits, ce, loss, affinity, dispersion, compactness)``.

    MODA adds its activation terms to the loss (standard training only logs them, detached, when
    ``record_terms``); MwT adds its mask terms, which then fill the affinity and dispersion columns.
    """
    zero = torch.zeros((), device=x.device)
    if config.method == "mwt":
        with record_masks(model) as masks, autocast:
            logits = network(x)
        ce = F.cross_entropy(logits.float(), y)
        mask_loss, affinity, dispersion = mwt_loss([m.float() for m in masks.values()], y, config.alpha, config.beta)
        return logits, ce, ce + mask_loss, affinity, dispersion, zero
    if not record_terms:
        with autocast:
            logits = network(x)
        ce = F.cross_entropy(logits.float(), y)
        return logits, ce, ce, zero, zero, zero
    with record_activations(model, detach=not config.modular) as recorder, autocast:
        logits = network(x)
    ce = F.cross_entropy(logits.float(), y)
    with torch.set_grad_enabled(config.modular):
        affinity, dispersion, compactness = modular_losses(recorder.values(), y, nonnegative=True)  # ReLU outputs
    loss = ce + config.alpha * affinity + config.beta * dispersion + config.gamma * compactness if config.modular else ce
    return logits, ce, loss, affinity, dispersion, compactness


def _save_epoch(run_dir: Path, model: ZooNet, optimizer: torch.optim.Optimizer, history: list[dict],
                epoch: int, config: TrainConfig, seconds_total: float, device: torch.device) -> None:
    # Order matters for resuming: optimizer, then weights, then the records that point at them.
    state = optimizer.state_dict()["state"]
    buffers = {f"{index}.momentum_buffer": s["momentum_buffer"] for index, s in state.items()
               if s.get("momentum_buffer") is not None}
    runs.save_tensors(run_dir / runs.OPTIMIZER, buffers, {"epoch": epoch})
    weights = model.state_dict()
    runs.save_tensors(run_dir / runs.MODEL, weights, {"epoch": epoch})
    if config.checkpoint_every and epoch % config.checkpoint_every == 0:
        runs.save_tensors(runs.checkpoint_path(run_dir, epoch), weights, {"epoch": epoch})
    runs.write_history(run_dir / runs.HISTORY, history)
    last = history[-1]
    runs.write_json(run_dir / runs.METRICS, {
        "status": "complete" if epoch == config.epochs else "running", "epochs_done": epoch,
        "epochs": config.epochs, "test_accuracy": last["test_accuracy"],
        "train_accuracy": last["train_accuracy"], "seconds": seconds_total,
        "seconds_per_epoch": seconds_total / len(history), "device": str(device)})


def _optimizer_state_dict(optimizer: torch.optim.Optimizer, buffers: dict[str, torch.Tensor],
                          device: torch.device) -> dict:
    state_dict = optimizer.state_dict()
    state_dict["state"] = {int(key.split(".")[0]): {"momentum_buffer": value.to(device)}
                           for key, value in buffers.items()}
    return state_dict


def _resume_state(run_dir: Path, config: TrainConfig) -> tuple[TrainConfig, int, list[dict], dict]:
    if not (run_dir / runs.CONFIG).exists():
        raise ModaError(f"cannot resume: no run at {run_dir} (missing {runs.CONFIG})")
    stored = runs.read_json(run_dir / runs.CONFIG)
    try:
        fields = {k: v for k, v in stored["train"].items() if k in TrainConfig.__dataclass_fields__}
    except (KeyError, AttributeError):
        raise ModaError(f"cannot resume: {run_dir / runs.CONFIG} has no training section") from None
    resumed = TrainConfig(**fields)
    resumed.epochs = max(resumed.epochs, config.epochs)
    resumed.device = config.device
    if not (run_dir / runs.MODEL).exists():
        raise ModaError(f"cannot resume {run_dir}: no finished epoch to resume from; start it again")
    _, model_meta = runs.load_tensors(run_dir / runs.MODEL)
    buffers, optimizer_meta = runs.load_tensors(run_dir / runs.OPTIMIZER)
    epoch = int(model_meta.get("epoch", -1))
    if epoch < 1 or optimizer_meta.get("epoch") != str(epoch):
        raise ModaError(f"cannot resume {run_dir}: weights (epoch {model_meta.get('epoch')}) and optimizer state "
                        f"(epoch {optimizer_meta.get('epoch')}) disagree")
    history = [row for row in runs.read_history(run_dir / runs.HISTORY) if row["epoch"] <= epoch]
    if len(history) != epoch:
        raise ModaError(f"cannot resume {run_dir}: history.csv has {len(history)} rows for {epoch} epochs")
    return resumed, epoch, history, buffers
