"""A quick look at the modules of one saved state while a run trains (the dashboard's live view): the state is
decomposed on a fixed, class-balanced probe of at most ``PROBE_IMAGES`` of its run's training images
(``probe_split``), not on the whole training split, and summarised at any τ (``module_numbers``: the mean module
size and mean pairwise overlap of ``moda_core.summary.module_summary``).

What a caller schedules is its own business: ``probe_rates`` measures one saved state (``RUN`` or ``RUN@EPOCH``)
and hands back the probe it used, so that the next state of the same run is measured on the same images without
loading its data again; ``twin_states`` picks the saved states of another run worth measuring next to it.
Nothing here writes into a run folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence, TypeVar

import torch
from torch import nn

from moda_core.data import Split
from moda_core.decompose import activation_rates, masks_from_rates
from moda_core.methods import method_of
from moda_core.store.loading import load_run, run_dataset
from moda_core.studies import evolution_states
from moda_core.summary import module_summary

PROBE_IMAGES = 500  # training images a state is decomposed on: a fixed, class-balanced subset
TWIN_STATES = 11  # at most this many of another run's saved states are measured (evenly spread, its final included)

T = TypeVar("T")


@dataclass(frozen=True)
class Probe:
    """The images a run's states are decomposed on (``probe_split`` of its training split) and its number of
    classes."""

    split: Split
    num_classes: int


class ProbedState(NamedTuple):
    """One saved state decomposed on a probe: per-point class × unit firing rates, the loaded model (its layers
    size the modules) and the probe used."""

    rates: dict[str, torch.Tensor]
    model: nn.Module
    probe: Probe


def probe_split(split: Split, num_classes: int, images: int = PROBE_IMAGES) -> Split:
    """A fixed subset of a training split: the first ⌊images / classes⌋ images of every class (all of a class
    that has fewer), in their order; the same images for every state of a run, every class present."""
    per_class = max(1, images // num_classes)
    index = torch.cat([torch.nonzero(split.labels == c).flatten()[:per_class] for c in range(num_classes)])
    index = index.sort().values
    return Split(split.images[index], split.labels[index], split.mean, split.std)


def probe_rates(spec: str, probe: Probe | None = None, images: int = PROBE_IMAGES) -> ProbedState:
    """Per-class firing rates of a saved state (``RUN`` or ``RUN@EPOCH``) on ``probe_split`` of its run's
    training data (``probe``: that split, made already for the run; None: made here from ``images`` training
    images), counted the way the run's method counts a unit as firing. A run that does not load, or an epoch it
    did not save, is a ``ModaError``."""
    run = load_run(spec)
    if probe is None:
        data = run_dataset(run)
        probe = Probe(probe_split(data.train, data.num_classes, images), data.num_classes)
    rates, _ = activation_rates(run.model, probe.split, probe.num_classes, firing=method_of(run.config).firing)
    return ProbedState(rates, run.model, probe)


def module_numbers(model: nn.Module, rates: dict[str, torch.Tensor], tau: float) -> tuple[float, float]:
    """Mean module size and mean pairwise overlap (fractions of ``model``'s parameters) of the modules ``rates``
    give at ``tau``."""
    summary = module_summary(model, masks_from_rates(rates, tau))
    return summary.mean_size, summary.mean_overlap


def spread(items: Sequence[T], most: int) -> list[T]:
    """At most ``most`` of ``items``, evenly spread, the first and the last kept."""
    if len(items) <= most:
        return list(items)
    if most < 2:
        return list(items[-1:]) if most == 1 else []
    return [items[i] for i in sorted({round(k * (len(items) - 1) / (most - 1)) for k in range(most)})]


def twin_states(run_dir: str | Path, most: int = TWIN_STATES) -> list[tuple[int, str]]:
    """(epoch, spec) of at most ``most`` of a run's saved states (``studies.evolution_states``), evenly spread,
    its first and its final weights kept; a run that does not load is a ``ModaError``."""
    return spread(evolution_states(run_dir), most)
