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
import math
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import streamlit as st

from moda_core.data import DATASETS, load_dataset
from moda_core.errors import ModaError, TrainingStopped
from moda_core.methods import method_of
from moda_core.probe import TWIN_STATES, Probe, module_numbers, probe_rates, twin_states
from moda_core.store.names import RunRef
from moda_core.train import Progress, TrainConfig, train

if TYPE_CHECKING:
    import torch
    from torch import nn

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
    min_classes: int = 2  # a class subset keeps at least this many of the data set's classes
    fractions: tuple[float, float] = (0.05, 1.0)  # share of each class's training images (smallest, largest)
    # one class may be made scarce (``TrainConfig.class_fractions``: a weak model for Swap), down to this share
    scarce_fractions: tuple[float, float] = (0.01, 1.0)
    max_scarce_classes: int = 1
    lrs: tuple[float, float] = (1e-4, 0.5)  # the form trains at TrainConfig's 0.05; a stored run may differ
    momenta: tuple[float, float] = (0.0, 0.99)

    def refusal(self, config: TrainConfig) -> str | None:
        """Which limit ``config`` exceeds, as "it asks for …; the dashboard trains at most …" (None: none). A second,
        stricter check of a config that checked itself when it was built (types, bounds, known classes)."""
        checkpoints = config.epochs // config.checkpoint_every if config.checkpoint_every > 0 else 0
        low, high = self.batch_sizes
        data = self._data_refusal(config)
        if data:
            return data
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
        return self._optimizer_refusal(config)

    def _optimizer_refusal(self, config: TrainConfig) -> str | None:
        """The limits on how a run trains: learning rate, momentum, no compilation, nothing downloaded."""
        if config.compile:
            return "it asks to compile the model with torch.compile; the dashboard trains without compiling"
        if config.download or config.data_root:
            return "it asks to read or download a data set from a folder; the dashboard trains on the embedded one"
        low, high = self.lrs
        if not low <= config.lr <= high:
            return f"it asks for a learning rate of {config.lr}; the dashboard trains at {low:g} to {high:g}"
        low, high = self.momenta
        if not low <= config.momentum <= high:
            return f"it asks for a momentum of {config.momentum}; the dashboard trains at {low:g} to {high:g}"
        return None

    def _data_refusal(self, config: TrainConfig) -> str | None:
        """The limits on which training images a run may ask for: classes, data fraction, a scarce class."""
        info = DATASETS.get(config.dataset)
        every = list(range(info.num_classes)) if info is not None else None
        classes = list(config.classes) if config.classes is not None else every
        if classes is not None and len(set(classes)) < self.min_classes:
            return (f"it asks for {len(set(classes))} class{'es' if len(set(classes)) != 1 else ''}; the "
                    f"dashboard trains at least {self.min_classes}")
        low, high = self.fractions
        if not low <= config.train_fraction <= high:
            return (f"it asks for a data fraction of {config.train_fraction:g}; the dashboard trains on "
                    f"{low:g} to {high:g} of the training images")
        scarce = dict(config.class_fractions or {})
        if len(scarce) > self.max_scarce_classes:
            return (f"it asks for {len(scarce)} scarce classes; the dashboard makes at most "
                    f"{self.max_scarce_classes} class scarce")
        low, high = self.scarce_fractions
        for class_id, share in scarce.items():
            if not low <= float(share) <= high:
                return (f"it asks for {float(share):g} of class {class_id}'s images; the dashboard keeps "
                        f"{low:g} to {high:g} of a scarce class")
        return None


LIMITS = BrowserLimits()


def form_classes() -> list[int]:
    """The classes the training form offers: every class of the data set the browser trains on."""
    return list(range(DATASETS[LIMITS.datasets[0]].num_classes))


def form_config(model: str, epochs: int, alpha: float, beta: float, gamma: float, width: float, seed: int,
                checkpoint_every: int, classes: list[int], fraction: float, scarce: int | None,
                scarce_fraction: float) -> TrainConfig:
    """The training the Runs page's form asks for, on the data set the browser trains on: every class picked
    means no class subset (as on the command line); a scarce class gets its own data fraction
    (``TrainConfig.class_fractions``). Fewer than ``LIMITS.min_classes`` classes, or a scarce class that is not
    trained, is a ``ModaError`` in the form's words; the other limits are the training slot's (``LIMITS``). A
    checkpoint interval that would keep more than ``LIMITS.max_checkpoints`` checkpoints is raised to the
    smallest that keeps within it (20 epochs, every epoch asked: every 2)."""
    picked = sorted({int(c) for c in classes})
    if checkpoint_every > 0:
        checkpoint_every = max(checkpoint_every, math.ceil(epochs / LIMITS.max_checkpoints))
    if len(picked) < LIMITS.min_classes:
        raise ModaError(f"pick at least {LIMITS.min_classes} classes to learn (a model of one class has "
                        "nothing to tell apart)")
    if scarce is not None and int(scarce) not in picked:
        raise ModaError(f"the scarce class {int(scarce)} is not among the classes picked: add it, or pick another")
    return TrainConfig(model=model, dataset=LIMITS.datasets[0], epochs=epochs, alpha=alpha, beta=beta, gamma=gamma,
                       width=width, seed=seed, device="cpu", checkpoint_every=checkpoint_every,
                       classes=None if picked == form_classes() else picked, train_fraction=round(fraction, 4),
                       class_fractions=None if scarce is None else {int(scarce): round(scarce_fraction, 4)})


FEW_STEPS = 100  # fewer optimisation steps than this in all: the form warns that the model will be under-trained


def optimisation_steps(config: TrainConfig) -> int:
    """How many optimisation steps ``config`` takes in all: its epochs × the batches of its training split."""
    data = load_dataset(config.dataset, classes=config.classes, train_fraction=config.train_fraction,
                        seed=config.seed, class_fractions=config.class_fractions)
    return config.epochs * math.ceil(len(data.train) / config.batch_size)


@dataclass(frozen=True)
class Preset:
    """A lecture's training in one click: a MODA run (α, β, γ = 1, 1, 0.3), then its standard-trained twin (the
    same model, data and seed; α = β = γ = 0), each keeping a checkpoint every epoch. ``seconds`` (MODA run, twin)
    and ``accuracy`` (the lower test accuracy of the two) were measured on a quiet 2-core laptop CPU
    (bench/results/presets.md)."""

    title: str
    model: str
    width: float
    epochs: int
    batch_size: int
    seconds: tuple[int, int]
    accuracy: float
    shows: str

    def configs(self) -> list[TrainConfig]:
        common = dict(model=self.model, dataset=LIMITS.datasets[0], epochs=self.epochs, width=self.width, seed=0,
                      batch_size=self.batch_size, device="cpu", checkpoint_every=1)
        return [TrainConfig(**common, alpha=1.0, beta=1.0, gamma=0.3),
                TrainConfig(**common, alpha=0.0, beta=0.0, gamma=0.0)]


PRESETS = (
    Preset("VGG11 ×0.25, 10 epochs", "vgg11", 0.25, 10, 64, (27, 19), 0.98,
           "the MODA story: its modules end up about half the size of its twin's and overlap a third as much"),
    Preset("LeNet-5, 8 epochs", "lenet5", 1.0, 8, 64, (4, 4), 0.97,
           "in seconds; small modules either way, as LeNet-5 keeps most of its weights in its last layers"),
)


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
    checkpoint_every: int = 0  # the training's checkpoint interval (0: only its final weights are kept)
    queued: int = 0  # trainings that start after this one (a lecture preset's twin)

    @property
    def fraction(self) -> float:
        """Share of the training's batches done (0–1)."""
        total = self.epochs * self.steps
        return 0.0 if not total else min(1.0, ((self.epoch - 1) * self.steps + self.step) / total)

    def busy_message(self) -> str:
        if self.stopping:
            return f"busy: {self.run} is stopping after the current step"
        where = f"epoch {self.epoch}/{self.epochs}" if self.epoch else "starting"
        after = f" ({self.queued} more queued after it)" if self.queued else ""
        return f"busy: {self.run} is training, {where}{after}"


# ----- live module sizes: each saved state of the training decomposed on a few training images ------------

LIVE_TAUS = 3  # the live view keeps numbers at the τ values the sessions asked for last, at most this many
RUN, TWIN = "run", "twin"
# (run folder of the training, its method) → (a twin's run folder, its method), or None without a twin
TwinFinder = Callable[[Path, str], "tuple[str, str] | None"]


@dataclass
class LiveModules:
    """Mean module size and mean pairwise overlap at one τ (fractions of the weights) of the training's saved
    states, and of a twin's, as far as known now: columns ``epoch``, ``mean_module_size``, ``mean_overlap``."""

    tau: float
    run: dict[str, list[float]]
    method: str = ""  # the training's method (moda, standard, mwt)
    run_spec: str = ""  # the training's run folder once known (pages name it with folders.run_label)
    twin: dict[str, list[float]] | None = None  # None: no twin (yet)
    twin_spec: str = ""  # the twin's run folder (pages name it with folders.run_label)
    twin_method: str = ""
    pending: int = 0  # saved states whose numbers at τ are still being computed
    note: str = ""  # what went wrong, for visitors ("" when nothing did)


def find_twin(run_dir: Path, method: str) -> tuple[str, str] | None:
    """The partner of the run being trained in the server's runs folders (``study_jobs.twin``: the same model and
    data trained another way; the standard one for a MODA or MwT run, MODA's for a standard run): (spec, method)."""
    from dashboard import folders, study_jobs

    group = study_jobs.twins(folders.list_runs(every_folder=True), str(run_dir))
    other = study_jobs.partner(method)
    return (group[other], other) if other in group else None


class LiveProbe:
    """The live view's numbers for one training at a time: the states it saves (and a twin's) are decomposed on a
    few hundred training images and summarised at the τ the sessions ask for (``moda_core.probe`` computes them),
    by one background worker that runs while there is something to do. Here is only the scheduling: nothing runs
    in a page or holds up the training."""

    def __init__(self, twin_finder: TwinFinder) -> None:
        self._find_twin = twin_finder
        self._guard = threading.Lock()
        self._worker: threading.Thread | None = None
        self._generation = 0
        self.reset("")

    def reset(self, method: str) -> None:
        """Forget the last training's numbers: a new one (of ``method``) starts."""
        with self._guard:
            self._generation += 1
            self._method = method
            self._todo: list[tuple[str, int, str]] = []  # (source, epoch, spec) saved states to decompose
            self._rates: dict[str, dict[int, dict[str, torch.Tensor]]] = {RUN: {}, TWIN: {}}
            self._models: dict[str, nn.Module] = {}
            self._probes: dict[str, Probe] = {}
            self._numbers: dict[tuple[str, int, float], tuple[float, float]] = {}
            self._taus: list[float] = []  # most recently asked first
            self._run_dir: Path | None = None
            self._twin: tuple[str, str] | None = None
            self._twin_searched = False
            self._notes: list[str] = []

    def saved(self, epoch: int, spec: str) -> None:
        """The training saved ``spec`` (its state after ``epoch``) for good: decompose it."""
        with self._guard:
            self._run_dir = self._run_dir or RunRef.parse(spec).path
            self._todo.append((RUN, epoch, spec))
            self._wake()

    def view(self, tau: float) -> LiveModules:
        """What is known at ``tau`` now; the missing numbers are computed in the background."""
        tau = round(float(tau), 4)
        with self._guard:
            self._taus = [tau, *[t for t in self._taus if t != tau]][:LIVE_TAUS]
            columns = {source: {"epoch": [], "mean_module_size": [], "mean_overlap": []} for source in (RUN, TWIN)}
            pending = len(self._todo)
            for source, states in self._rates.items():
                for epoch in sorted(states):
                    numbers = self._numbers.get((source, epoch, tau))
                    if numbers is None:
                        pending += 1
                        continue
                    columns[source]["epoch"].append(epoch)
                    columns[source]["mean_module_size"].append(numbers[0])
                    columns[source]["mean_overlap"].append(numbers[1])
            twin_spec, twin_method = self._twin or ("", "")
            view = LiveModules(tau, columns[RUN], self._method, str(self._run_dir or ""),
                               columns[TWIN] if columns[TWIN]["epoch"] else None, twin_spec, twin_method, pending,
                               " ".join(dict.fromkeys(self._notes)))
            if pending:
                self._wake()
            return view

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the background worker has nothing left to do; True when it is idle."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._guard:
                worker = self._worker
            if worker is None:
                return True
            worker.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if deadline is not None and time.monotonic() >= deadline:
                with self._guard:
                    return self._worker is None

    def _wake(self) -> None:
        """Start the worker unless it runs (called with ``_guard`` held)."""
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="moda-dashboard-live-modules", daemon=True)
            self._worker.start()

    def _next(self) -> tuple | None:
        """The next job (called with ``_guard`` held): a saved state to decompose, the twin to look for once the
        run has a decomposed state, then numbers at the asked τ values (the latest first)."""
        if self._todo:
            return ("rates", self._generation, *self._todo[0])
        if self._run_dir is not None and self._rates[RUN] and not self._twin_searched:
            return ("twin", self._generation, self._run_dir, self._method)
        for tau in self._taus:
            for source, states in self._rates.items():
                for epoch in sorted(states):
                    if (source, epoch, tau) not in self._numbers:
                        return ("numbers", self._generation, source, epoch, tau)
        return None

    def _work(self) -> None:
        while True:
            with self._guard:
                job = self._next()
                if job is None:
                    self._worker = None
                    return
                probe, model = self._probes.get(job[2]), self._models.get(job[2])
                rates = self._rates[job[2]].get(job[3]) if job[0] == "numbers" else None
            kind, generation = job[0], job[1]
            try:
                if kind == "rates":
                    result: Any = probe_rates(job[4], probe)
                elif kind == "twin":
                    twin = self._find_twin(job[2], job[3])
                    result = twin, [] if twin is None else twin_states(twin[0], TWIN_STATES)
                else:
                    result = module_numbers(model, rates, job[4])
            except Exception as error:  # noqa: BLE001 - the live view is extra: it never stops the training
                LOG.warning("live module sizes: %s failed: %s", kind, error, exc_info=True)
                result, note = None, _live_failure(kind, error)
            else:
                note = ""
            with self._guard:
                if generation != self._generation:
                    continue  # a new training started meanwhile: this result belongs to the last one
                if note:
                    self._notes.append(note)
                if kind == "rates":
                    source, epoch = job[2], job[3]
                    self._todo.pop(0)
                    if result is not None:
                        self._rates[source][epoch] = result.rates
                        self._models.setdefault(source, result.model)
                        self._probes.setdefault(source, result.probe)
                elif kind == "twin":
                    self._twin_searched = True
                    if result is not None and result[0] is not None:
                        self._twin = result[0]
                        self._todo += [(TWIN, epoch, spec) for epoch, spec in result[1]]
                else:
                    self._numbers[(job[2], job[3], job[4])] = result or (math.nan, math.nan)
                    wanted = set(self._taus)
                    self._numbers = {k: v for k, v in self._numbers.items() if k[2] in wanted}


def _live_failure(kind: str, error: Exception) -> str:
    what = {"rates": "A saved state could not be decomposed", "twin": "The twin run could not be read",
            "numbers": "Module sizes could not be computed"}[kind]
    detail = f": {error}" if isinstance(error, ModaError) else f" ({type(error).__name__})"
    return f"{what}{detail}."


class TrainingSlot:
    """At most one training at a time; the status every session reads."""

    def __init__(self, runner: Runner = train, twin_finder: TwinFinder | None = None) -> None:
        self._runner = runner
        self._guard = threading.Lock()  # guards _status and _thread; held only for short updates
        self._status = TrainingStatus()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()  # the current training's; a new one for each training
        self._live = LiveProbe(twin_finder or find_twin)
        # the current training's settings and where its run folder is (found at its first saved epoch)
        self._config: TrainConfig | None = None
        self._target: tuple[Path, str | None, frozenset[str]] | None = None  # runs_dir, name, folders before it
        self._run_dir: Path | None = None

    def live_modules(self, tau: float) -> LiveModules:
        """Module size and overlap at ``tau`` of the current (or last) training's saved states, and of its twin,
        as far as known now; asking starts their computation in the background (never in the caller)."""
        return self._live.view(tau)

    def wait_live(self, timeout: float | None = None) -> bool:
        """Wait until the live numbers asked for so far are computed; True when nothing is left to do."""
        return self._live.wait(timeout)

    def status(self) -> TrainingStatus:
        """A copy of the current status (safe to read while the training goes on)."""
        with self._guard:
            return replace(self._status, history=copy.deepcopy(self._status.history))

    def start(self, config: TrainConfig, runs_dir: Path, name: str | None, label: str,
              shown: Callable[[str], str] = str, resume: bool = False,
              then: Sequence[TrainConfig] = ()) -> TrainingStatus:
        """Start training ``config`` into ``runs_dir`` (``name`` or a default name) in a background thread, and
        after it each of ``then`` (default names), one after the other, unless one fails or is stopped.

        ``label`` names the run for other sessions; ``shown`` turns messages into what visitors may read.
        Raises ``TrainingBusy`` while another training runs, ``ModaError`` for a training folder that
        cannot hold runs (a file, or not writable) or a config beyond ``LIMITS``. ``resume`` continues
        the interrupted run ``name`` (``config`` is then its stored settings)."""
        for each in (config, *then):  # a series is refused whole, before anything starts
            refusal = LIMITS.refusal(each)
            if refusal:
                raise ModaError(f"{refusal}. Train it on the command line instead")
        check_training_folder(runs_dir, label)
        with self._guard:
            if self._status.busy:
                raise TrainingBusy(self._status.busy_message())
            self._claim(config, Path(runs_dir), name, label, resume, len(then))
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._work, args=(config, runs_dir, name, label, shown, resume,
                                                                     self._stop, tuple(then)),
                                            name="moda-dashboard-training", daemon=True)
            self._thread.start()
            return replace(self._status)

    def _claim(self, config: TrainConfig, runs_dir: Path, name: str | None, label: str, resume: bool = False,
               queued: int = 0) -> None:
        """The status and live view of a training that starts now (the caller holds ``_guard``)."""
        try:
            method = method_of(config).name
        except ModaError:  # the trainer says so in its own words
            method = ""
        run = f"{label}/{name}" if name else f"a new {config.model} run in {label}"
        self._status = TrainingStatus(busy=True, run=run, epochs=config.epochs, started=time.time(),
                                      checkpoint_every=config.checkpoint_every, queued=queued)
        self._config, self._run_dir = config, None
        self._target = (runs_dir, name, frozenset(_folder_names(runs_dir)))
        self._live.reset(method)
        if resume and name:  # the checkpoints it kept before it was interrupted join the live view too
            self._resumed_checkpoints(runs_dir / name)

    def _resumed_checkpoints(self, run_dir: Path) -> None:
        from moda_core import runs

        try:
            kept = runs.list_checkpoints(run_dir)
        except (ModaError, OSError):
            return
        for epoch in kept:
            self._live.saved(epoch, str(RunRef(run_dir, epoch)))

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
        if event.stage == "epoch":  # committed: a checkpoint (or the final weights) joins the live view
            saved = self._saved_state(event.epoch, event.epochs)
            if saved is not None:
                self._live.saved(event.epoch, saved)

    def _saved_state(self, epoch: int, epochs: int) -> str | None:
        """The spec of the state the training just saved for good (``RUN@EPOCH`` for a periodic checkpoint,
        ``RUN`` after the last epoch), None after an epoch that keeps no checkpoint or when the run folder is
        not found."""
        every = self._config.checkpoint_every if self._config is not None else 0
        checkpoint = bool(every) and epoch % every == 0
        if not checkpoint and epoch != epochs:
            return None
        if self._run_dir is None and self._target is not None:
            self._run_dir = _training_into(*self._target)
        if self._run_dir is None:
            return None
        return str(RunRef(self._run_dir, epoch if checkpoint else None))

    def _work(self, config: TrainConfig, runs_dir: Path, name: str | None, label: str,
              shown: Callable[[str], str], resume: bool = False, stop: threading.Event | None = None,
              then: tuple[TrainConfig, ...] = ()) -> None:
        done: tuple[str, ...] = ()
        while True:
            outcome, message, run_name = self._train_one(config, runs_dir, name, label, shown, resume, stop)
            if outcome == "done":
                done += (message,)
            if outcome != "done" or not then:
                break
            config, name, resume, then = then[0], None, False, then[1:]
            with self._guard:
                self._claim(config, Path(runs_dir), None, label, queued=len(then))
        with self._guard:
            s = self._status
            s.busy, s.stopping, s.finished = False, False, time.time()
            s.outcome = outcome
            # what each training of the series said (a finished one's message is already the last of ``done``)
            s.message = " ".join(done if outcome == "done" else (*done, message)) or "Training stopped."
            if run_name:
                s.run = run_name

    def _train_one(self, config: TrainConfig, runs_dir: Path, name: str | None, label: str,
                   shown: Callable[[str], str], resume: bool, stop: threading.Event | None) -> tuple[str, str, str]:
        """Train one run; its outcome ("done", "stopped" or "failed"), a message for visitors and its name."""
        outcome, message, run_name = "failed", "", ""
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
        return outcome, message, run_name


def _folder_names(runs_dir: Path) -> list[str]:
    try:
        return [entry.name for entry in runs_dir.iterdir()]
    except OSError:
        return []


def _training_into(runs_dir: Path, name: str | None, before: frozenset[str]) -> Path | None:
    """The run folder a training of this process writes: ``runs_dir/name``, or (a default name) the new
    folder in ``runs_dir`` whose lock this process holds."""
    from moda_core import runs

    if name:
        return runs_dir / name
    for entry in sorted(set(_folder_names(runs_dir)) - before):
        if (runs_dir / entry).is_dir() and runs.training_pid(runs_dir / entry) == os.getpid():
            return runs_dir / entry
    return None


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
