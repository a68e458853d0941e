"""One trainer for every training method (standard, MODA, MwT: ``moda_core.methods``): the settings
(``TrainConfig``), then ``train``: setup (device, data, model, method, optimizer, a resumed run's state),
the epoch loop, and ``train_step``, one optimisation step (the benchmarks time exactly that). The run
store (``moda_core.runs``) owns the run folder: creating, locking, resuming and saving it.

SGD with Nesterov momentum 0.9, a per-step cosine learning-rate schedule and no weight decay, as in
the paper. Data stays on the device; each epoch's order and augmentation come from a generator seeded
by (seed, epoch), so a resumed run sees exactly the batches an uninterrupted run would have seen.
Per-batch figures are accumulated on the device and read once per epoch (no host sync per step).
"""
from __future__ import annotations

import contextlib
import math
import platform
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from moda_core import distributed, run_config, runs
from moda_core.data import Dataset, check_class_fractions, check_classes, dataset_info, load_dataset
from moda_core.errors import ModaError, TrainingStopped
from moda_core.evaluate import accuracy, predict_logits
from moda_core.import_policy import allowing
from moda_core.methods import METHODS, Method, StepLosses, method_of
from moda_core.models import MODELS, build_model
from moda_core.models.user import check_import_path, check_points, import_path_of, package_of


@dataclass
class TrainConfig:
    # a zoo name, or a model of your own: its builder's import path "package.module:function" (or the function,
    # turned into that path), called as fn(num_classes=, in_channels=, image_size=): moda_core.models.user
    model: str = "lenet5"
    dataset: str = "mnist5k"
    epochs: int = 10
    # loss weights; None = the method's defaults (moda_core.methods: MODA 1, 1, 0.3). MODA with α=β=γ=0: standard
    alpha: float | None = None
    beta: float | None = None
    gamma: float | None = None
    method: str = "moda"  # a name in moda_core.methods.METHODS; which method trains: methods.method_of
    width: float = 1.0
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    seed: int = 0
    classes: list[int] | None = None  # original class ids to learn; None = all
    train_fraction: float = 1.0
    # original class id -> share of that class's training data, overriding train_fraction for the classes it
    # names (e.g. {3: 0.02}: the scarce-target weak runs: docs/design.md, Module replacement)
    class_fractions: dict[int, float] | None = None
    augment: bool | None = None  # None: the data set's default (crop+flip for RGB sets)
    data_root: str | None = None
    download: bool = False
    checkpoint_every: int = 0  # also keep weights every N epochs (RUN@EPOCH); 0 = only the last
    device: str = "auto"
    compile: bool = False  # torch.compile the model (worth it on a GPU)
    track_modular_terms: bool = True  # log the modular terms of standard runs too (detached)
    # a model of your own: which activation calls are points ("relu"; "gelu", "silu" or "relu,gelu" opt in) and
    # the firing rule's threshold (a unit fires where its activation > threshold)
    points: str = "relu"
    threshold: float = 0.0

    def __post_init__(self) -> None:
        if callable(self.model):
            self.model = import_path_of(self.model)
        defaults = METHODS[self.method].defaults if self.method in METHODS else METHODS["moda"].defaults
        for name, value in zip(("alpha", "beta", "gamma"), defaults, strict=True):
            if getattr(self, name) is None:
                setattr(self, name, value)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> TrainConfig:
        """The config a stored run was trained with, from its config.json's ``train`` record (keys this
        version does not know are left out)."""
        return cls(**{key: value for key, value in record.items() if key in cls.__dataclass_fields__})

    def validate(self) -> None:
        method = method_of(self)  # a ModaError naming the known methods
        if self.model not in MODELS:
            if ":" not in str(self.model):
                raise ModaError(f"unknown model {self.model!r}: expected one of {', '.join(MODELS)}, or an import "
                                "path package.module:function of your own builder")
            check_import_path(self.model)
            if self.width != 1.0:
                raise ModaError(f"width multiplier {self.width} applies to zoo models only; model {self.model} is "
                                "built by its own function")
        self.points = check_points(self.points)
        if self.model in MODELS and self.points != "relu":
            raise ModaError(f"zoo model {self.model!r} has ReLU points only, got points={self.points!r}")
        if not (isinstance(self.threshold, (int, float)) and math.isfinite(self.threshold)
                and abs(self.threshold) <= 1e6):
            raise ModaError(f"firing threshold must be a finite number, got {self.threshold!r}")
        info = dataset_info(self.dataset)
        if self.classes is not None:
            self.classes = check_classes(self.classes, info.num_classes, f"data set {self.dataset!r}")
            if len(self.classes) < 2:
                raise ModaError(f"training needs at least 2 classes, got {self.classes}: a 1-class model has "
                                "nothing to tell apart and no modules to decompose")
        if not 1 <= self.epochs <= run_config.MAX_EPOCHS:
            raise ModaError(f"epochs must be from 1 to {run_config.MAX_EPOCHS:,}, got {self.epochs}")
        # the epoch generators are seeded with (seed·100003 + epoch)·1009 + rank, which must stay an int64
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= run_config.MAX_SEED:
            raise ModaError(f"seed must be a whole number from 0 to {run_config.MAX_SEED:,}, got {self.seed!r}")
        if not 2 <= self.batch_size <= run_config.MAX_BATCH:
            raise ModaError(f"batch size must be from 2 (the modular terms compare pairs) to {run_config.MAX_BATCH:,}, "
                            f"got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ModaError(f"learning rate must be a positive number, got {self.lr}")
        for name in ("alpha", "beta", "gamma"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ModaError(f"{name} must be a non-negative number, got {value}")
        if not 0 <= self.checkpoint_every <= run_config.MAX_EPOCHS:
            raise ModaError(f"checkpoint interval must be from 0 to {run_config.MAX_EPOCHS:,}, "
                            f"got {self.checkpoint_every}")
        method.validate(self)
        if self.class_fractions:
            learnt = self.classes if self.classes is not None else list(range(info.num_classes))
            self.class_fractions = check_class_fractions(self.class_fractions, learnt, f"data set {self.dataset!r}")


# the settings that make two trainings the same experiment (device, logging and checkpointing aside)
SAME_TRAINING = ("model", "dataset", "width", "epochs", "seed", "alpha", "beta", "gamma", "method", "classes",
                 "lr", "momentum", "batch_size", "train_fraction", "augment", "points", "threshold")


def setting_differences(stored: Mapping[str, Any], config: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """``SAME_TRAINING`` settings in which a stored run's ``train`` record (its config.json) differs from
    ``config``: name → (stored, wanted). A setting the record lacks counts as the same."""
    wanted = {key: getattr(config, key) for key in SAME_TRAINING}
    return {key: (stored.get(key), value) for key, value in wanted.items() if stored.get(key, value) != value}


@dataclass
class Progress:
    """What a progress callback receives: after every batch (``stage="batch"``) and epoch (``"epoch"``)."""

    stage: str
    epoch: int  # 1-based
    epochs: int
    step: int
    steps: int
    record: dict[str, float] = field(default_factory=dict)  # the history row, for stage="epoch"


ProgressCallback = Callable[[Progress], None]
# asked before every step whether to stop: an Event (set from another thread) or a callable returning True
StopSignal = threading.Event | Callable[[], bool]


def _stop_check(stop: StopSignal | None) -> Callable[[], bool]:
    if stop is None:
        return lambda: False
    if isinstance(stop, threading.Event):
        return stop.is_set
    if callable(stop):
        return lambda: bool(stop())
    raise TypeError(f"stop must be a threading.Event or a callable returning a bool, not {type(stop).__name__}")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ModaError(f"unknown device {device!r}: expected auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModaError(f"device {device!r} was asked for but no CUDA GPU is available",
                        hint="use --device cpu or auto")
    return resolved


def build_for(config: TrainConfig, in_channels: int, image_size: int, num_classes: int) -> torch.nn.Module:
    """The untrained model ``config`` describes (a model of the user's own comes back checked, its graph read)."""
    return build_model(config.model, in_channels, image_size, num_classes, config.width, config.points,
                       config.threshold)


def check_model(config: TrainConfig) -> None:
    """Build a model of the user's own once, on the CPU, before a run folder exists: a builder that fails to
    import or raises, a forward fx cannot trace without nn.ReLU modules to hook, no activation point or an
    output that is not [batch, classes] is a ``ModaError`` and nothing is written."""
    if config.model in MODELS:
        return
    info = dataset_info(config.dataset)
    classes = len(config.classes) if config.classes is not None else info.num_classes
    with torch.device("cpu"):
        build_for(config, info.in_channels, info.image_size, classes)


def make_config_record(config: TrainConfig, model: torch.nn.Module, data: Dataset,
                       device: torch.device) -> dict[str, Any]:
    train = asdict(config)
    return {
        "arch": model.arch,
        "data": {"name": config.dataset, "classes": data.classes, "class_names": data.class_names,
                 "train_fraction": config.train_fraction, "class_fractions": config.class_fractions,
                 "seed": config.seed, "data_root": config.data_root,
                 "train_size": len(data.train), "test_size": len(data.test)},
        "train": {k: v for k, v in train.items() if k not in ("download",)},
        "created": datetime.now().isoformat(timespec="seconds"),
        "device": str(device),
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }


def default_run_name(config: TrainConfig) -> str:
    """``model-dataset-method-YYYYmmdd-HHMMSS-mmm`` (milliseconds; the run store adds ``-2`` … on a clash)."""
    now = datetime.now()
    stamp = f"{now:%Y%m%d-%H%M%S}-{now.microsecond // 1000:03d}"
    model = config.model.rpartition(":")[2].replace(".", "-") if ":" in config.model else config.model
    return f"{model}-{config.dataset}-{method_of(config).name}-{stamp}"


def data_for_config(config: TrainConfig, device: torch.device) -> Dataset:
    return load_dataset(config.dataset, root=config.data_root, download=config.download, classes=config.classes,
                        train_fraction=config.train_fraction, seed=config.seed, device=device,
                        class_fractions=config.class_fractions)


def train(config: TrainConfig, runs_dir: str | Path = "runs", name: str | None = None,
          progress: ProgressCallback | None = None, resume: bool = False, overwrite: bool = False,
          stop: StopSignal | None = None, epochs: int | None = None) -> runs.Run:
    """Train into ``runs_dir/name`` and return the loaded run.

    The run store creates the folder atomically before any work (an existing name is an error) and
    holds its lock while training, so a run whose process dies is listed as interrupted
    (``runs.create_run``). ``resume=True`` continues the run with that name from its last committed
    epoch, with its stored config (``config`` gives only the device), up to its own epoch count, or up to
    ``epochs`` when that is more (a complete run is extended only so); ``overwrite=True`` replaces a run that
    is not training now. Under torchrun rank 0 opens
    the folder and tells the other ranks.

    ``stop`` (an Event or a callable) is asked before every step: once it says stop, the training ends
    without finishing the epoch under way, so the run keeps its last committed epoch, releases its lock
    and lists as interrupted; ``TrainingStopped`` says which epoch it kept, and ``resume=True``
    continues it bit for bit. Not under torchrun (the ranks would have to agree on the step).

    The package of a model of one's own named in ``config`` is allowed to be imported while this runs (the person
    named it); a resumed run's builder must come from it or from an allowed package (``moda_core.import_policy``).
    """
    with allowing(package_of(config.model) if ":" in str(config.model) else None):
        return _open_and_train(config, runs_dir, name, progress, resume, overwrite, stop, epochs)


def _open_and_train(config: TrainConfig, runs_dir: str | Path, name: str | None, progress: ProgressCallback | None,
                    resume: bool, overwrite: bool, stop: StopSignal | None, epochs: int | None) -> runs.Run:
    config.validate()
    if name is not None:
        runs.check_run_name(name)
    if not resume:
        check_model(config)
    if resume and name is None:
        raise ModaError("resuming needs the name of the run to continue")
    if resume and overwrite:
        raise ModaError("resume continues a run and overwrite replaces it: choose one")
    should_stop = _stop_check(stop)
    ctx = distributed.context()
    if stop is not None and ctx.active:
        raise ModaError("a training under torchrun cannot take a stop signal: stop it with Ctrl-C instead")
    opened, outcome = None, None
    if ctx.is_main:
        try:
            opened = (runs.open_for_resume(Path(runs_dir) / name) if resume else
                      runs.create_run(runs_dir, name, default_run_name(config), overwrite=overwrite))
            outcome = ("ok", str(opened.path))
        except ModaError as error:
            if not ctx.active:
                raise
            outcome = ("error", str(error))
    with opened or contextlib.nullcontext():
        status, value = distributed.broadcast_object(outcome, ctx)  # every rank trains into rank 0's folder
        if status == "error":
            raise ModaError(value)
        return _train(config, Path(value), opened, ctx, progress, resume, should_stop, epochs)


def _train(config: TrainConfig, run_dir: Path, opened: runs.OpenRun | None, ctx: distributed.Context,
           progress: ProgressCallback | None, resume: bool, should_stop: Callable[[], bool],
           epochs: int | None = None) -> runs.Run:
    """Setup, then the epoch loop. Rank 0 holds the open run and writes it; the other ranks get None."""
    # ----- setup: the settings (a resumed run's stored ones), device, data, model, method, optimizer
    resumed = runs.resume_state(run_dir) if resume else None
    start_epoch, history = 0, []
    if resumed is not None:
        wanted = config
        config = TrainConfig.from_record(resumed.train)
        config.epochs = max(config.epochs, epochs or 0)  # its own count, or more when asked
        config.device = wanted.device
        start_epoch, history = resumed.epoch, list(resumed.history)

    device = resolve_device(distributed.device_for(config.device, ctx))
    torch.manual_seed(config.seed)
    data = data_for_config(config, device)
    model = build_for(config, data.info.in_channels, data.info.image_size, data.num_classes)
    method = method_of(config)
    model = method.prepare(model)
    model.to(device)
    channels_last = device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=True,
                                weight_decay=0.0)
    if start_epoch > 0:
        resumed.restore(model, optimizer, device)
    elif opened is not None:
        record = make_config_record(config, model, data, device)
        record["world_size"] = ctx.world_size
        opened.write_config(record)
    network = method.network(model, config)  # the model's recorder over its own modules (or the model itself)
    if ctx.active:
        network = torch.nn.parallel.DistributedDataParallel(
            network, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        network = torch.compile(network)

    augment = data.info.augment if config.augment is None else config.augment
    steps = len(distributed.shard_batches(torch.arange(len(data.train)), config.batch_size, ctx))
    total_steps = config.epochs * steps
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    logged = method.logged_terms(config)
    seconds_total = sum(row["seconds"] for row in history)

    # ----- the epoch loop
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        model.train()
        # the same permutation on every rank; augmentation differs per rank
        order_generator = torch.Generator(device=device).manual_seed(config.seed * 100_003 + epoch)
        order = torch.randperm(len(data.train), device=device, generator=order_generator)
        generator = torch.Generator(device=device).manual_seed((config.seed * 100_003 + epoch) * 1_009 + ctx.rank)
        sums = torch.zeros(6, device=device)  # ce, affinity, dispersion, compactness, correct, seen
        for step, index in enumerate(distributed.shard_batches(order, config.batch_size, ctx)):
            if should_stop():  # after the step before (or the last commit): this epoch is never committed
                raise TrainingStopped(run_dir, epoch, config.epochs)
            for group in optimizer.param_groups:
                group["lr"] = 0.5 * config.lr * (1 + math.cos(math.pi * (epoch * steps + step) / total_steps))
            x, y = data.train.batch(index, augment=augment, generator=generator)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out = train_step(method, config, model, network, optimizer, x, y, autocast)
            n = y.numel()
            sums += torch.stack([out.ce.detach() * n, out.affinity.detach() * n, out.dispersion.detach() * n,
                                 out.compactness.detach() * n, (out.logits.argmax(1) == y).sum().float(),
                                 torch.full((), float(n), device=device)])
            if progress and ctx.is_main:
                progress(Progress("batch", epoch + 1, config.epochs, step + 1, steps))
        distributed.all_reduce_sum(sums, ctx)
        ce_sum, aff_sum, dis_sum, com_sum, correct, seen = sums.tolist()  # the one sync of the epoch
        train_seconds = time.perf_counter() - started
        if not all(math.isfinite(v) for v in (ce_sum, aff_sum, dis_sum, com_sum)):
            raise ModaError(
                f"the loss became NaN or infinite in epoch {epoch + 1} of run {run_dir} "
                f"(CE sum {ce_sum}, affinity {aff_sum}, dispersion {dis_sum}, compactness {com_sum}); the run store "
                f"keeps epoch {epoch} as it was; a lower learning rate or smaller loss weights should help",
                hint="try a lower --lr or smaller --alpha/--beta/--gamma")
        if opened is None:
            continue  # rank 0 evaluates and writes; the others go on to the next epoch
        test_accuracy = accuracy(predict_logits(model, data.test), data.test.labels)
        seconds = time.perf_counter() - started
        seconds_total += seconds
        row = {"epoch": epoch + 1, "ce": ce_sum / seen,
               "affinity": aff_sum / seen if logged[0] else float("nan"),
               "dispersion": dis_sum / seen if logged[1] else float("nan"),
               "compactness": com_sum / seen if logged[2] else float("nan"),
               "train_accuracy": correct / seen, "test_accuracy": test_accuracy, "seconds": seconds,
               "train_seconds": train_seconds}
        history.append(row)
        done = epoch + 1
        opened.save_epoch(done, model, optimizer, history, {
            "status": "complete" if done == config.epochs else "running", "epochs": config.epochs,
            "test_accuracy": test_accuracy, "train_accuracy": row["train_accuracy"], "seconds": seconds_total,
            "seconds_per_epoch": seconds_total / len(history), "device": str(device)},
            checkpoint=bool(config.checkpoint_every) and done % config.checkpoint_every == 0)
        if progress:
            progress(Progress("epoch", done, config.epochs, steps, steps, dict(row)))
    distributed.barrier(ctx)  # rank 0 has written the last epoch
    return runs.load_run(run_dir, device)


def train_step(method: Method, config: TrainConfig, model: torch.nn.Module, network: torch.nn.Module,
               optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               autocast: torch.autocast) -> StepLosses:
    """One optimisation step of ``method`` on the batch ``(x, y)``: forward pass and loss terms
    (``method.losses``), backward pass, optimizer step. ``network`` is ``model`` or its DDP/compiled
    wrapper. Returns the step's logits and (undetached) loss terms."""
    out = method.losses(config, model, network, x, y, autocast)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    optimizer.step()
    return out
