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
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Mapping, cast

import torch
from pydantic import model_validator

from moda_core import distributed, runs
from moda_core.config import TrainSettings
from moda_core.data import Dataset, check_class_fractions, check_classes, dataset_info, load_dataset
from moda_core.errors import ModaError, TrainingStopped
from moda_core.evaluate import accuracy, predict_logits
from moda_core.import_policy import allowing
from moda_core.methods import METHODS, Method, Step, StepFunction, method_of
from moda_core.methods.base import WEIGHT_SLOTS
from moda_core.models import MODELS, build_model
from moda_core.models.user import check_import_path, check_points, package_of


class TrainConfig(TrainSettings):
    """The settings of one training (``moda_core.config.TrainSettings``: every setting's type, bounds, default and
    help), checked when built, loaded (``from_record``) or changed: a ``ModaError`` names the first wrong setting.
    Weights left unset take the method's defaults (``Method.Weights``: MODA 1, 1, 0.3); MODA with α=β=γ=0 is
    recorded as ``standard``, standard training's one spelling. A model may be given as its builder function,
    which stands for its import path."""

    @model_validator(mode="after")
    def _settled(self) -> TrainConfig:
        values = self.__dict__  # written directly: an assignment here would validate again
        method = METHODS.get(values["method"]) or METHODS["moda"]
        for slot, value in method.Weights.defaults().items():
            if values[slot] is None:
                values[slot] = value
        if values["method"] == "moda" and not any(values[slot] for slot in WEIGHT_SLOTS):
            values["method"] = "standard"  # one spelling of standard training (moda_core.cli says so when it happens)
        self._check(values)
        return self

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> TrainConfig:
        """The config a stored run was trained with, from its config.json's ``train`` record (keys this
        version does not know are left out)."""
        return cls(**{key: value for key, value in record.items() if key in cls.model_fields})

    def validate(self) -> None:  # type: ignore[override]  # (pydantic's deprecated classmethod of that name)
        """Check the settings again (they were checked when built and at every change)."""
        self._check(self.__dict__)

    def record(self) -> dict[str, Any]:
        """The settings as config.json's ``train`` record stores them."""
        return self.model_dump()

    @staticmethod
    def _check(values: dict[str, Any]) -> None:
        """What the schema's bounds cannot say: the method, model, points, data set and classes are known and fit
        together. Normalised values (points, classes, class fractions) are written back into ``values``."""
        method = method_of(SimpleNamespace(**values))  # a ModaError naming the known methods
        model = values["model"]
        if model not in MODELS:
            if ":" not in model:
                raise ModaError(f"unknown model {model!r}: expected one of {', '.join(MODELS)}, or an import "
                                "path package.module:function of your own builder")
            check_import_path(model)
            if values["width"] != 1.0:
                raise ModaError(f"width multiplier {values['width']} applies to zoo models only; model {model} is "
                                "built by its own function")
        values["points"] = check_points(values["points"])
        if model in MODELS and values["points"] != "relu":
            raise ModaError(f"zoo model {model!r} has ReLU points only, got points={values['points']!r}")
        info = dataset_info(values["dataset"])
        if values["classes"] is not None:
            values["classes"] = check_classes(values["classes"], info.num_classes, f"data set {values['dataset']!r}")
            if len(values["classes"]) < 2:
                raise ModaError(f"training needs at least 2 classes, got {values['classes']}: a 1-class model has "
                                "nothing to tell apart and no modules to decompose")
        method.validate(SimpleNamespace(**values))
        if values["class_fractions"]:
            learnt = values["classes"] if values["classes"] is not None else list(range(info.num_classes))
            values["class_fractions"] = check_class_fractions(values["class_fractions"], learnt,
                                                              f"data set {values['dataset']!r}")


# the settings that make two trainings the same experiment (device, logging and checkpointing aside)
SAME_TRAINING = ("model", "dataset", "width", "epochs", "seed", "alpha", "beta", "gamma", "method", "classes",
                 "lr", "momentum", "batch_size", "train_fraction", "augment", "points", "threshold")


def setting_differences(stored: Mapping[str, Any], config: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """``SAME_TRAINING`` settings in which a stored run's ``train`` record (its config.json) differs from
    ``config``: name → (stored, wanted). A setting the record lacks counts as the same."""
    wanted = {key: getattr(config, key) for key in SAME_TRAINING}
    if stored.get("method") == "moda" and not any(stored.get(slot) for slot in ("alpha", "beta", "gamma")):
        stored = {**stored, "method": "standard"}  # recorded before standard training had one spelling
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
    train = config.record()
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
    opened: runs.OpenRun | None = None
    outcome = ("error", "rank 0 did not say")  # rank 0's, which every rank receives below
    if ctx.is_main:
        try:
            opened = (runs.open_for_resume(Path(runs_dir) / name) if resume and name is not None else
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
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs leave it out
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=True,
                                weight_decay=0.0)
    if resumed is not None and start_epoch > 0:
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
        network = cast(torch.nn.Module, torch.compile(network))  # an OptimizedModule, typed as a plain callable

    augment = data.info.augment if config.augment is None else config.augment
    steps = len(distributed.shard_batches(torch.arange(len(data.train)), config.batch_size, ctx))
    total_steps = config.epochs * steps
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    step_function = method.start(config, model, network, autocast)
    terms = list(method.terms(config))  # the history's loss columns, summed in this order
    seconds_total = sum(row["seconds"] for row in history)

    # ----- the epoch loop
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        model.train()
        # the same permutation on every rank; augmentation differs per rank
        order_generator = torch.Generator(device=device).manual_seed(config.seed * 100_003 + epoch)
        order = torch.randperm(len(data.train), device=device, generator=order_generator)
        generator = torch.Generator(device=device).manual_seed((config.seed * 100_003 + epoch) * 1_009 + ctx.rank)
        sums = torch.zeros(len(terms) + 1, device=device)  # each term × batch size, then correct predictions
        seen = 0
        for step, index in enumerate(distributed.shard_batches(order, config.batch_size, ctx)):
            if should_stop():  # after the step before (or the last commit): this epoch is never committed
                raise TrainingStopped(run_dir, epoch, config.epochs)
            for group in optimizer.param_groups:
                group["lr"] = 0.5 * config.lr * (1 + math.cos(math.pi * (epoch * steps + step) / total_steps))
            x, y = data.train.batch(index, augment=augment, generator=generator)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out = train_step(step_function, optimizer, x, y)
            n = y.numel()
            seen += n
            sums += torch.stack([*(out.terms[t].detach() * n for t in terms), (out.logits.argmax(1) == y).sum()])
            if progress and ctx.is_main:
                progress(Progress("batch", epoch + 1, config.epochs, step + 1, steps))
        totals = torch.cat([sums, torch.full((1,), float(seen), device=device)])
        distributed.all_reduce_sum(totals, ctx)
        *term_sums, correct, seen = totals.tolist()  # the one sync of the epoch
        train_seconds = time.perf_counter() - started
        if not all(math.isfinite(v) for v in term_sums):
            shown = ", ".join(f"{t} {v}" for t, v in zip(terms, term_sums, strict=True))
            raise ModaError(
                f"the loss became NaN or infinite in epoch {epoch + 1} of run {run_dir} (sums over the epoch: "
                f"{shown}); the run store keeps epoch {epoch} as it was; a lower learning rate or smaller loss "
                "weights should help", hint="try a lower --lr or smaller --alpha/--beta/--gamma")
        if opened is None:
            continue  # rank 0 evaluates and writes; the others go on to the next epoch
        test_accuracy = accuracy(predict_logits(model, data.test), data.test.labels)
        seconds = time.perf_counter() - started
        seconds_total += seconds
        row = {"epoch": epoch + 1, **{t: v / seen for t, v in zip(terms, term_sums, strict=True)},
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


def start_steps(method: Method, config: TrainConfig, model: torch.nn.Module, network: torch.nn.Module | None = None,
                autocast: torch.autocast | None = None) -> StepFunction:
    """``method``'s step function for ``model`` as the trainer builds it (``network``: by default the method's own;
    ``autocast``: off)."""
    return method.start(config, model, method.network(model, config) if network is None else network,
                        autocast or torch.autocast("cpu", enabled=False))


def train_step(step: StepFunction, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> Step:
    """One optimisation step on the batch ``(x, y)``: forward pass and loss terms (the method's step function,
    ``Method.start``), backward pass, optimizer step. Returns the step's logits, loss and (undetached) terms."""
    out = step(x, y)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    optimizer.step()
    return out
