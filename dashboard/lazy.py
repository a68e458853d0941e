"""Modules imported on first use: the landing page and the sidebar render before torch is loaded (the engine,
the run store and everything under them import torch, which takes seconds on a cold start)."""
from __future__ import annotations

import importlib
import logging
import threading
from types import ModuleType
from typing import Any

LOG = logging.getLogger("moda.dashboard")


class LazyModule:
    """Stands for a module and imports it when one of its attributes is first used."""

    def __init__(self, name: str) -> None:
        self._name = name

    def module(self) -> ModuleType:
        return importlib.import_module(self._name)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.module(), attribute)


_warming = threading.Lock()
_warmed = False


def warm_up(*names: str, first: tuple[str, ...] = ("numpy", "pandas"), then: tuple[str, ...] = ()) -> None:
    """Import ``names`` in a background thread, once per process (after the first page has been sent), so the
    first page that needs them does not wait for the import; then call the functions ``then`` names
    (``"module:function"``, no arguments) in the same thread. ``first`` are imported here, before the thread
    starts: plotly uses numpy and pandas when it finds them in ``sys.modules``, and must never find one half
    imported by the thread. A warm-up that fails only leaves the work to the first page that needs it."""
    global _warmed
    with _warming:
        if _warmed:
            return
        _warmed = True
    for name in first:
        importlib.import_module(name)

    def load() -> None:
        for name in names:
            importlib.import_module(name)
        for target in then:
            module, function = target.split(":")
            try:
                getattr(importlib.import_module(module), function)()
            except Exception:  # noqa: BLE001 - a warm-up is an optimisation; the real call reports its own errors
                LOG.warning("warm-up %s failed", target, exc_info=True)

    threading.Thread(target=load, name="moda-warm-up", daemon=True).start()


def warm_up_engine() -> None:
    """The dashboard's warm-up (``warm_up``, once per process): torch, the engine, torchvision (the graph's tracer
    uses it), then torch.export's tracer (its first export takes seconds)."""
    warm_up("dashboard.engine", then=("moda_core._tv:import_torchvision", "moda_core.export:warm_up_export"))
