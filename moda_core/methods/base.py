"""The interface every training method implements (standard training, MODA, MwT).

A method has a name, its hyperparameters (a small frozen dataclass of its own, ``Method.Weights``: each field
named for what it weights and stored in a run's config under one of the generic slots ``alpha``, ``beta``,
``gamma``), a check of a training config, a way to prepare a freshly built zoo model (add the modules it needs,
e.g. MwT's gates, through its own block subclasses), the network the trainer runs (by default the model's
recorder: logits and every point's activation, ``moda_core.activations.recorder``), the named loss terms its
steps report, a step function built once per run (``start``) and which units of each point "fire" on a batch
(what decomposition counts). The trainer, the run store and decomposition call these and name no method: the
trainer sums and logs whatever terms a step reports.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, ContextManager, Protocol

import torch
from torch import nn

from moda_core.activations import firing_threshold, modular_points, recorder, units_firing
from moda_core.errors import ModaError

# firing(x) → {point: B×N bool} for every modular point (MwT reports its ungated points as all firing)
Firing = Callable[[torch.Tensor], dict[str, torch.Tensor]]

# the config slots a method's weights are stored in (config.json's train.alpha, .beta, .gamma; --alpha …)
WEIGHT_SLOTS = ("alpha", "beta", "gamma")


class MethodSettings(Protocol):
    """What a method reads from a training config (``moda_core.train.TrainConfig`` has all of it; a
    method needs no import of the trainer)."""

    model: str  # a zoo name or a builder's import path (package.module:function)
    method: str
    alpha: float | None
    beta: float | None
    gamma: float | None
    track_modular_terms: bool


def weight(slot: str, label: str, default: float) -> Any:
    """A field of a method's ``Weights``: stored in config slot ``slot`` (alpha, beta or gamma), shown as ``label``."""
    if slot not in WEIGHT_SLOTS:
        raise ValueError(f"a weight is stored in one of {WEIGHT_SLOTS}, not {slot!r}")
    return dataclasses.field(default=default, metadata={"slot": slot, "label": label})


@dataclass(frozen=True)
class Weights:
    """A method's loss weights by their own names (no fields: the method has none)."""

    @classmethod
    def slots(cls) -> dict[str, str]:
        """Config slot → field name."""
        return {f.metadata["slot"]: f.name for f in dataclasses.fields(cls)}

    @classmethod
    def defaults(cls) -> dict[str, float]:
        """Config slot → default value; slots the method does not use are 0."""
        found: dict[str, Any] = {f.metadata["slot"]: f.default for f in dataclasses.fields(cls)}  # weight()'s
        return {slot: float(found.get(slot, 0.0)) for slot in WEIGHT_SLOTS}

    @classmethod
    def of(cls, config: MethodSettings) -> Weights:
        """The weights a config gives (a slot left unset: the default)."""
        values = {name: getattr(config, slot) for slot, name in cls.slots().items()}
        return cls(**{name: value for name, value in values.items() if value is not None})

    def described(self) -> list[tuple[str, float]]:
        """(label, value) of every weight, in order: what help texts show."""
        return [(f.metadata["label"], getattr(self, f.name)) for f in dataclasses.fields(self)]

    def short(self) -> str:
        """The weights by their names in one line, "affinity 1, dispersion 1, compactness 0.3" (what a table's
        cell shows; empty for a method without weights)."""
        return ", ".join(f"{f.name.replace('_', '-')} {getattr(self, f.name):g}" for f in dataclasses.fields(self))


_Weights = Weights  # the base class, by a name that Method's own ``Weights`` attribute does not hide


@dataclass
class Step:
    """One forward pass of a training step: the logits, the loss to minimise and the named terms to log (scalar
    tensors, each a mean over the batch, in the order of ``Method.terms``; ``ce`` first)."""

    logits: torch.Tensor
    loss: torch.Tensor
    terms: dict[str, torch.Tensor]


# a run's step function: a batch → its Step (built once per run by Method.start, so per-run work is not per step)
StepFunction = Callable[[torch.Tensor, torch.Tensor], Step]


class Method:
    """Base class: standard training's behaviour wherever a method does not override it."""

    name = ""
    label = ""
    Weights: ClassVar[type[Weights]] = Weights

    def weights(self, config: MethodSettings) -> _Weights:
        """This method's hyperparameters from a config."""
        return self.Weights.of(config)

    def validate(self, config: MethodSettings) -> None:
        """Raise ``ModaError`` for a config this method cannot train (weights already checked >= 0). By default: a
        weight slot this method does not use must be 0."""
        used = self.Weights.slots()
        unused = [slot for slot in WEIGHT_SLOTS if slot not in used and getattr(config, slot)]
        if unused:
            takes = (", ".join(f"{slot} ({label})" for slot, (label, _) in
                               zip(used, self.weights(config).described(), strict=True)) if used else "no loss weights")
            named = ", ".join(unused[:-1]) + " and " + unused[-1] if len(unused) > 1 else unused[0]
            raise ModaError(f"{self.label} takes {takes}: {named} must be 0, got "
                            f"{', '.join(str(getattr(config, s)) for s in unused)}")

    def prepare(self, model: nn.Module) -> nn.Module:
        """The model this method trains, built from a plain zoo model (default: the model itself)."""
        return model

    def terms(self, config: MethodSettings) -> dict[str, bool]:
        """The terms a step reports, in order (the history's loss columns): name → whether it is part of the
        trained loss (False: measured only, e.g. a standard run's modular terms)."""
        return {"ce": True}

    def network(self, model: nn.Module, config: MethodSettings) -> nn.Module:
        """What a training step runs (the trainer wraps it for DDP or ``torch.compile``): by default the model's
        recorder, ``x → (logits, point activations, extras)`` over the model's own modules."""
        return recorder(model, training=True)

    def start(self, config: MethodSettings, model: nn.Module, network: nn.Module,
              autocast: ContextManager) -> StepFunction:
        """The run's step function ``(x, y) → Step``: one forward pass of ``network`` under ``autocast`` and the
        loss terms. Whatever does not change from step to step (weights, which points are ReLU outputs) is read
        here, once per run."""
        raise NotImplementedError

    def firing(self, model: nn.Module) -> Firing:
        """Firing units per sample at every point, from one pure eval-mode pass: a unit fires when its activation
        is non-zero (for a conv channel: anywhere in the map) — docs/design.md, Firing rule and floor."""
        record, points, threshold = recorder(model), modular_points(model), firing_threshold(model)

        def read(x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {p: units_firing(a, threshold) for p, a in zip(points, record(x)[1], strict=True)}
        return read
