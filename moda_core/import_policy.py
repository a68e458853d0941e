"""Which packages a process may import model builders from (no torch here: the dashboard sets it before any
page loads a model).

By default any regular package or module; ``restrict_imports`` limits it to named top-level packages (the
dashboard: ``MODA_STUDIO_MODELS``, set by ``moda-studio --models``), since a run folder is untrusted input and
must never choose what code runs.
"""
from __future__ import annotations

import os
from typing import Iterable

ALLOW_ENV = "MODA_STUDIO_MODELS"  # comma-separated top-level packages a restricted process may import

_allowed: set[str] | None = None  # None: any regular package or module


def restrict_imports(packages: Iterable[str] | None) -> None:
    """Allow imports of model builders only from these top-level packages (None: lift the restriction)."""
    global _allowed
    _allowed = None if packages is None else {p.strip() for p in packages if p.strip()}


def restrict_imports_from_environment() -> None:
    """``restrict_imports`` from ``MODA_STUDIO_MODELS`` (comma-separated; unset or empty: nothing allowed)."""
    restrict_imports(os.environ.get(ALLOW_ENV, "").split(","))


def allowed_packages() -> set[str] | None:
    """The top-level packages model builders may come from (None: any)."""
    return None if _allowed is None else set(_allowed)
