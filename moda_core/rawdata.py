"""The in-memory form every data-set reader returns (``RawData``), shared by ``data`` and ``tvdata``
so that the two import in one direction only (data → tvdata → rawdata)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DIGITS = [str(d) for d in range(10)]


@dataclass(frozen=True)
class RawData:
    """Arrays as read from disk: uint8 images N×C×H×W and int64 labels, for train and test."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]
