"""Training methods behind one interface (``methods.base.Method``): standard training, MODA and the
MwT baseline. ``METHODS`` is the registry by name; :func:`method_of` is the one answer to "which
method is this run": it reads a ``TrainConfig`` or a stored run's config and gives its ``Method``,
whose ``name`` (standard, moda, mwt) and ``label`` (standard training, MODA, MwT) every caller uses.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Mapping

from moda_core.errors import ModaError
from moda_core.methods.base import WEIGHT_SLOTS, Method, MethodSettings, Step, StepFunction, Weights
from moda_core.methods.moda import Moda
from moda_core.methods.mwt import MwT
from moda_core.methods.standard import Standard

METHODS: dict[str, Method] = {m.name: m for m in (Standard(), Moda(), MwT())}


def method_of(config: MethodSettings | Mapping[str, Any]) -> Method:
    """The method a config trains with: a ``TrainConfig``, or a stored run's config.json as a dict.

    A stored config names its method in ``train.method``; runs written before that field existed are
    MwT when ``arch.mwt`` says so and MODA otherwise, and a stored MODA run with α=β=γ=0 was standard training
    (``TrainConfig`` records those as ``standard`` now: one spelling). An unknown name is a ``ModaError`` naming
    the known ones."""
    if isinstance(config, Mapping):
        train = config.get("train") or {}
        name = train.get("method") or ("mwt" if (config.get("arch") or {}).get("mwt") else "moda")
        alpha, beta, gamma = train.get("alpha"), train.get("beta"), train.get("gamma")
    else:
        name, alpha, beta, gamma = config.method, config.alpha, config.beta, config.gamma
    if name not in METHODS:
        raise ModaError(f"unknown training method {name!r}: expected one of {', '.join(METHODS)}")
    if name == "moda" and alpha is not None and not (alpha or beta or gamma):
        return METHODS["standard"]
    return METHODS[name]


def settings_of(config: Mapping[str, Any]) -> MethodSettings:
    """What a method reads (``MethodSettings``) from a stored run's config.json, as a dict: its ``train`` record's
    model, method, weights and ``track_modular_terms`` (missing: the defaults). ``method_of(config).weights(...)``
    and ``.terms(...)`` of it say what the run was trained with, by the method's own names."""
    train = config.get("train") or {}
    return SimpleNamespace(model=str(train.get("model", "")), method=method_of(config).name,
                           **{slot: train.get(slot) for slot in WEIGHT_SLOTS},
                           track_modular_terms=train.get("track_modular_terms", True) is not False)


def weights_text(name: str, weights: Mapping[str, float | None]) -> str:
    """A run's loss weights by its method's own names, "affinity 1, dispersion 1, compactness 0.3" (empty for
    standard training), from the method's name and the weight slots (``weights``: slot → value; None: default)."""
    return METHODS[name].weights(SimpleNamespace(**{slot: weights.get(slot) for slot in WEIGHT_SLOTS})).short()


__all__ = ["METHODS", "Method", "MethodSettings", "Step", "StepFunction", "Weights", "weights_text", "method_of",
           "settings_of", "weights_text"]
