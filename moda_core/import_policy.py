"""Which packages model builders may be imported from (no torch here: the dashboard sets it before any page loads
a model).

A run's config.json names its model's builder (``package.module:function``). A runs folder is data: listing it
never imports anything, and opening one of its runs imports the builder only from a top-level package the person
allowed, as Hugging Face asks for ``trust_remote_code``: ``--models PKG`` (repeatable) on the command line or
``moda-studio``, ``MODA_MODELS=PKG,...`` in the environment (once per shell), or, while training, the package of
the ``--model`` the person typed (``allowing``). Nothing is allowed by default. ``MODA_STUDIO_MODELS``, the
dashboard's name for the variable before, is read too.
"""
from __future__ import annotations

import os
import threading
from collections import Counter
from contextlib import contextmanager
from typing import Iterable, Iterator

ALLOW_ENV = "MODA_MODELS"  # comma-separated top-level packages
OLD_ALLOW_ENV = "MODA_STUDIO_MODELS"

_lock = threading.Lock()
_granted: set[str] = set()  # this process's or command's --models
_while: Counter = Counter()  # packages allowed while a call runs (a training's own --model)


def packages(values: Iterable[str] | str | None) -> set[str]:
    """Top-level package names from values that may each hold several, comma-separated."""
    values = [values] if isinstance(values, str) else values or []
    return {part.strip() for value in values for part in str(value).split(",") if part.strip()}


def allowed_packages() -> frozenset[str]:
    """The top-level packages model builders may come from now: the grant, the environment, the calls running."""
    with _lock:
        return frozenset(_granted | packages([os.environ.get(ALLOW_ENV, ""), os.environ.get(OLD_ALLOW_ENV, "")])
                         | {name for name, count in _while.items() if count > 0})


def allow_models(names: Iterable[str] | str | None) -> None:
    """Grant these packages to the process (``--models``), in place of an earlier grant."""
    with _lock:
        _granted.clear()
        _granted.update(packages(names))


@contextmanager
def granted(names: Iterable[str] | str | None) -> Iterator[None]:
    """``allow_models(names)`` for the block (one command), the earlier grant restored afterwards."""
    with _lock:
        before = set(_granted)
    allow_models(names)
    try:
        yield
    finally:
        allow_models(before)


@contextmanager
def allowing(names: Iterable[str] | str | None) -> Iterator[None]:
    """These packages allowed as well while the block runs (a training of the ``--model`` the person named)."""
    names = packages(names)
    with _lock:
        _while.update(names)
    try:
        yield
    finally:
        with _lock:
            _while.subtract(names)


def needs(package: str) -> str:
    """What to say when a run's builder comes from a package nobody allowed."""
    return (f"needs --models {package}: its model is built by code from package {package!r}, which is imported "
            f"only when you allow it (--models {package}, or MODA_MODELS={package})")
