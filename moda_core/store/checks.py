"""What the store checks of a weights file before it is used: its tensors are the model's (names and shapes) and
they are finite. The listing checks a file once per version of it (:func:`checked_once`); loading checks the tensors
it loads. A failure is a ``ModaError`` that names the file and what is wrong, in one line (:func:`one_line`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from moda_core.errors import ModaError
from moda_core.io import load_tensors

MAX_CHECKED_WEIGHTS = 64 << 20  # the listing reads weights files up to this size to check they are finite
_CHECKED: dict[tuple, str | None] = {}  # (what, path, file identity) → why it is not usable, or None


def one_line(error: BaseException) -> str:
    """An exception as one short line: its message (or its type), newlines folded, at most 300 characters."""
    text = " ".join(str(error).split()) if isinstance(error, (ModaError, OSError)) else \
        f"{type(error).__name__}: {' '.join(str(error).split())}".rstrip(": ")
    return text if len(text) <= 300 else text[:299] + "…"


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors that hold NaN or infinity (numpy's check where it can: much faster
    than torch's on a first call)."""
    bad = []
    for name, value in tensors.items():
        if not value.is_floating_point():
            continue
        if value.dtype in (torch.float16, torch.float32, torch.float64):
            finite = bool(np.isfinite(value.detach().cpu().numpy()).all())
        else:
            finite = bool(torch.isfinite(value).all())
        if not finite:
            bad.append(name)
    return bad


def check_finite(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """A ``ModaError`` naming the tensors of the weights file ``path`` that hold NaN or infinity."""
    bad = non_finite(tensors)
    if bad:
        raise ModaError(f"weights file {path} holds non-finite weights (NaN or infinity) in "
                        f"{bad[:5]}{' …' if len(bad) > 5 else ''}: it cannot be used")


def check_finite_weights(path: Path) -> None:
    """A ``ModaError`` when a weights file (up to ``MAX_CHECKED_WEIGHTS`` bytes) holds NaN or infinity; larger
    files are checked when they are loaded (``loading.load_weights``)."""
    if os.stat(path).st_size > MAX_CHECKED_WEIGHTS:
        return
    check_finite(load_tensors(path)[0], path)


def check_shapes(expected: dict[str, tuple[int, ...]], shapes: dict[str, tuple[int, ...]], path: str | Path) -> None:
    """A ``ModaError`` naming the differences if a file's tensors (name → shape) are not the model's."""
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = [f"{k}: file {shapes[k]}, model {expected[k]}"
             for k in expected if k in shapes and shapes[k] != expected[k]]
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"missing {missing[:5]}{' …' if len(missing) > 5 else ''}")
        if unexpected:
            details.append(f"unexpected {unexpected[:5]}{' …' if len(unexpected) > 5 else ''}")
        if wrong:
            details.append(f"shape mismatch {wrong[:3]}{' …' if len(wrong) > 3 else ''}")
        raise ModaError(f"checkpoint {path} does not match the model in its config: {'; '.join(details)}")


def header_shapes(header: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a safetensors header (``io.read_tensor_header``)."""
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def checked_once(what: str, path: Path, check: Callable[[Path], None]) -> None:
    """Run ``check(path)`` (which raises a ``ModaError``) once per version of the file: the result is kept
    by the file's identity, size and modification time, so listing stays fast."""
    info = os.stat(path)
    key = (what, str(path), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    if key not in _CHECKED:
        if len(_CHECKED) > 4096:
            _CHECKED.clear()
        try:
            check(path)
            _CHECKED[key] = None
        except ModaError as error:
            _CHECKED[key] = str(error)
    problem = _CHECKED[key]
    if problem is not None:
        raise ModaError(problem)
