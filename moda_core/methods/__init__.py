"""Training methods behind one interface (``methods.base.Method``): standard training, MODA and the
MwT baseline. ``METHODS`` is the registry by name; :func:`method_of` is the one answer to "which
method is this run": it reads a ``TrainConfig`` or a stored run's config and gives its ``Method``,
whose ``name`` (standard, moda, mwt) and ``label`` (standard training, MODA, MwT) every caller uses.
"""
from __future__ import annotations

from typing import Any, Mapping

from moda_core.errors import ModaError
from moda_core.methods.base import Method, MethodSettings, StepLosses
from moda_core.methods.moda import Moda
from moda_core.methods.mwt import MwT
from moda_core.methods.standard import Standard

METHODS: dict[str, Method] = {m.name: m for m in (Standard(), Moda(), MwT())}


def method_of(config: MethodSettings | Mapping[str, Any]) -> Method:
    """The method a config trains with: a ``TrainConfig``, or a stored run's config.json as a dict.

    A stored config names its method in ``train.method``; runs written before that field existed are
    MwT when ``arch.mwt`` says so and MODA otherwise. MODA with α=β=γ=0 *is* standard training (weights
    left unset mean the method's defaults). An unknown name is a ``ModaError`` naming the known ones."""
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


__all__ = ["METHODS", "Method", "MethodSettings", "StepLosses", "method_of"]
