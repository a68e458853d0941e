"""Training methods behind one interface (``methods.base.Method``): standard training, MODA and the
MwT baseline. ``METHODS`` is the registry by name; ``resolve`` picks the method a config trains with
(MODA with α=β=γ=0 *is* standard training), ``method_of_config`` reads it from a stored run's config
(``config["train"]["method"]``; runs written before that field existed are told apart by
``arch["mwt"]``), and ``training_kind`` is the one place that names a run's kind.
"""
from __future__ import annotations

from typing import Any, Mapping

from moda_core.errors import ModaError
from moda_core.methods.base import Method, StepLosses
from moda_core.methods.moda import Moda
from moda_core.methods.mwt import MwT
from moda_core.methods.standard import Standard

METHODS: dict[str, Method] = {m.name: m for m in (Standard(), Moda(), MwT())}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ModaError(f"unknown training method {name!r}: expected one of {', '.join(METHODS)}")
    return METHODS[name]


def resolve(name: str, alpha: float | None = None, beta: float | None = None, gamma: float | None = None) -> Method:
    """The method that trains: ``name``'s, except that MODA with all weights 0 is standard training."""
    method = get_method(name)
    if method.name == "moda" and alpha is not None and not (alpha or beta or gamma):
        return METHODS["standard"]
    return method


def method_name(config: Mapping[str, Any]) -> str:
    """The method named in a run's config: ``train.method``, or for older runs ``arch.mwt``."""
    train = config.get("train") or {}
    name = train.get("method")
    if name is None:
        name = "mwt" if (config.get("arch") or {}).get("mwt") else "moda"
    return name


def method_of_config(config: Mapping[str, Any]) -> Method:
    """The method a stored run was trained with (its config.json as a dict)."""
    train = config.get("train") or {}
    return resolve(method_name(config), train.get("alpha"), train.get("beta"), train.get("gamma"))


def training_kind(train: Mapping[str, Any]) -> str:
    """"standard", "moda" or "mwt" from a training record with ``method``, ``alpha``, ``beta``, ``gamma``
    (a config's ``train`` section, a ``TrainConfig`` as a dict, or a runs-listing summary)."""
    name = train.get("method") or "moda"
    if name not in METHODS:
        return str(name)
    return resolve(name, train.get("alpha", 0.0) or 0.0, train.get("beta", 0.0) or 0.0,
                   train.get("gamma", 0.0) or 0.0).name


def kind_label(kind: str) -> str:
    """How tables name a kind: "MwT", "MODA" or "standard"."""
    return {"standard": "standard"}.get(kind) or (METHODS[kind].label if kind in METHODS else kind)


__all__ = ["METHODS", "Method", "StepLosses", "get_method", "kind_label", "method_name", "method_of_config",
           "resolve", "training_kind"]
