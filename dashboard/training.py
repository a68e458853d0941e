"""Training from the browser: one training at a time for the whole server, in a background thread.

Every session of the dashboard shares one ``TrainingSlot`` (``slot()``, kept by ``st.cache_resource``).
``start`` claims it or raises ``TrainingBusy`` ("busy: RUN is training, epoch k/n"); the training runs
``moda_core.train.train`` in a thread, and any session can read its progress with ``status()`` and
wait for it to free the slot. Pages never call ``train`` themselves. Any session may ask the training
to stop (``stop``): it ends after its current step and its run is left interrupted, to resume later.
Every training the browser starts, from the form or Resume, keeps within ``LIMITS``.
"""
from __future__ import annotations

import copy
import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import streamlit as st

from moda_core.errors import ModaError, TrainingStopped
from moda_core.train import Progress, TrainConfig, train

LOG = logging.getLogger("moda.dashboard")

# train(config, runs_dir, name, progress=callback, stop=event) -> a run with .name/.metrics/.epoch
Runner = Callable[..., Any]


@dataclass(frozen=True)
class BrowserLimits:
    """What a training started from the browser may ask for, the Train form's fields and Resume alike: the
    server has one training slot, so larger trainings belong on the command line."""

    models: tuple[str, ...] = ("lenet5", "mlp", "vgg11", "resnet18", "mobilenet", "vit")
    datasets: tuple[str, ...] = ("mnist5k",)  # the embedded data set: nothing to download
    widths: tuple[float, ...] = (0.25, 0.5, 1.0)
    max_epochs: int = 20
    max_checkpoints: int = 10  # periodic checkpoint files (RUN@EPOCH) one run may write
    batch_sizes: tuple[int, int] = (32, 1024)  # smallest and largest

    def refusal(self, config: TrainConfig) -> str | None:
        """Which limit ``config`` exceeds, as "it asks for …; the dashboard trains at most …" (None: none)."""
        checkpoints = config.epochs // config.checkpoint_every if config.checkpoint_every > 0 else 0
        low, high = self.batch_sizes
        if config.model not in self.models:
            return f"it asks for the model {config.model}; the dashboard trains {', '.join(self.models)}"
        if config.dataset not in self.datasets:
            return f"it asks for the data set {config.dataset}; the dashboard trains on {', '.join(self.datasets)}"
        if config.width not in self.widths:
            return (f"it asks for width ×{config.width:g}; the dashboard trains widths "
                    + ", ".join(f"×{w:g}" for w in self.widths))
        if config.epochs > self.max_epochs:
            return f"it asks for {config.epochs} epochs; the dashboard trains at most {self.max_epochs}"
        if checkpoints > self.max_checkpoints:
            every = "epoch" if config.checkpoint_every == 1 else f"{config.checkpoint_every} epochs"
            return (f"it asks for {checkpoints} checkpoints (one every {every}); the "
                    f"dashboard keeps at most {self.max_checkpoints}")
        if not low <= config.batch_size <= high:
            return f"it asks for batches of {config.batch_size}; the dashboard trains batches of {low} to {high}"
        return None


LIMITS = BrowserLimits()


class TrainingBusy(ModaError):
    """Another training holds the slot; the message says which run and how far it is."""


@dataclass
class TrainingStatus:
    """What every session sees of the current (or last) training."""

    busy: bool = False
    run: str = ""  # the run's public name: FOLDER/NAME, or "a new MODEL run" until its name is known
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0
    history: list[dict[str, float]] = field(default_factory=list)  # one row per finished epoch
    outcome: str = ""  # "" while training or before the first one; "done", "stopped" or "failed" afterwards
    stopping: bool = False  # a session asked it to stop: it ends after its current step
    message: str = ""  # what happened, for visitors (no server paths)
    started: float = 0.0
    finished: float = 0.0

    @property
    def fraction(self) -> float:
        """Share of the training's batches done (0–1)."""
        total = self.epochs * self.steps
        return 0.0 if not total else min(1.0, ((self.epoch - 1) * self.steps + self.step) / total)

    def busy_message(self) -> str:
        if self.stopping:
            return f"busy: {self.run} is stopping after the current step"
        where = f"epoch {self.epoch}/{self.epochs}" if self.epoch else "starting"
        return f"busy: {self.run} is training, {where}"


class TrainingSlot:
    """At most one training at a time; the status every session reads."""

    def __init__(self, runner: Runner = train) -> None:
        self._runner = runner
        self._guard = threading.Lock()  # guards _status and _thread; held only for short updates
        self._status = TrainingStatus()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()  # the current training's; a new one for each training

    def status(self) -> TrainingStatus:
        """A copy of the current status (safe to read while the training goes on)."""
        with self._guard:
            return replace(self._status, history=copy.deepcopy(self._status.history))

    def start(self, config: TrainConfig, runs_dir: Path, name: str | None, label: str,
              shown: Callable[[str], str] = str, resume: bool = False) -> TrainingStatus:
        """Start training ``config`` into ``runs_dir`` (``name`` or a default name) in a background thread.

        ``label`` names the run for other sessions; ``shown`` turns messages into what visitors may read.
        Raises ``TrainingBusy`` while another training runs, ``ModaError`` for a training folder that
        cannot hold runs (a file, or not writable) or a ``config`` beyond ``LIMITS``. ``resume`` continues
        the interrupted run ``name`` (``config`` is then its stored settings)."""
        refusal = LIMITS.refusal(config)
        if refusal:
            raise ModaError(f"{refusal}. Train it on the command line instead")
        check_training_folder(runs_dir, label)
        with self._guard:
            if self._status.busy:
                raise TrainingBusy(self._status.busy_message())
            run = f"{label}/{name}" if name else f"a new {config.model} run in {label}"
            self._status = TrainingStatus(busy=True, run=run, epochs=config.epochs, started=time.time())
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._work, args=(config, runs_dir, name, label, shown, resume,
                                                                     self._stop),
                                            name="moda-dashboard-training", daemon=True)
            self._thread.start()
            return replace(self._status)

    def stop(self) -> bool:
        """Ask the training in progress to end after its current step, leaving its run interrupted with its
        last finished epoch (any session may: the server has one training, like a shared lab machine).
        False when no training runs."""
        with self._guard:
            if not self._status.busy:
                return False
            self._status.stopping = True
            self._stop.set()
            return True

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the current training (if any) ends; True when the slot is free."""
        with self._guard:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.status().busy

    def _progress(self, event: Progress) -> None:
        with self._guard:
            s = self._status
            s.epoch, s.epochs, s.step, s.steps = event.epoch, event.epochs, event.step, event.steps
            if event.stage == "epoch":
                s.history.append(dict(event.record))

    def _work(self, config: TrainConfig, runs_dir: Path, name: str | None, label: str,
              shown: Callable[[str], str], resume: bool = False, stop: threading.Event | None = None) -> None:
        outcome, message, run_name = "failed", "", None
        try:
            extra = {"resume": True} if resume else {}
            run = self._runner(config, runs_dir, name, progress=self._progress, stop=stop, **extra)
        except TrainingStopped as error:
            outcome, run_name = "stopped", f"{label}/{error.path.name}"
            message = (f"Stopped {run_name}: it keeps {error.epoch} of {error.epochs} epochs and is listed as "
                       "interrupted, to resume or delete.")
        except ModaError as error:
            message = f"Training did not start or stopped: {shown(str(error))}"
        except Exception:  # noqa: BLE001 - the server's terminal gets the traceback, visitors a short message
            LOG.exception("training from the dashboard failed")
            message = "Training stopped on an unexpected error; the details are in the server's terminal."
        else:
            outcome, run_name = "done", f"{label}/{run.name}"
            accuracy = run.metrics.get("test_accuracy")
            seconds = run.metrics.get("seconds")
            message = (f"Trained {run_name}"
                       + (f": test accuracy {accuracy:.1%}" if isinstance(accuracy, (int, float)) else "")
                       + f" after {run.epoch} epoch{'s' if run.epoch != 1 else ''}"
                       + (f" ({seconds:.0f} s)" if isinstance(seconds, (int, float)) else "") + ".")
        finally:
            with self._guard:
                s = self._status
                s.busy, s.stopping, s.finished = False, False, time.time()
                s.outcome = outcome
                s.message = message or "Training stopped."
                if run_name:
                    s.run = run_name


def check_training_folder(runs_dir: Path, label: str) -> None:
    """The training folder must be a writable folder, or not exist yet (the first training creates it)."""
    runs_dir = Path(runs_dir)
    if runs_dir.exists() and not runs_dir.is_dir():
        raise ModaError(f"the training folder '{label}' is a file, not a folder: the server must be started "
                        "with a folder for new runs")
    if runs_dir.is_dir() and not _writable(runs_dir):
        raise ModaError(f"the training folder '{label}' is not writable: new runs cannot be saved there")
    parent = next((p for p in runs_dir.parents if p.exists()), None)
    if not runs_dir.exists() and parent is not None and (not parent.is_dir() or not _writable(parent)):
        raise ModaError(f"the training folder '{label}' cannot be created: the server must be started with a "
                        "writable folder for new runs")


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


@st.cache_resource(show_spinner=False)
def slot() -> TrainingSlot:
    """The server's one training slot, shared by every session."""
    return TrainingSlot()
