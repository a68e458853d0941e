"""Helpers every benchmark shares: the method table (standard, MODA, MwT; unset weights take the
method's defaults from ``moda_core.methods`` through ``TrainConfig``), the median epoch time of a run,
and a device's name."""
from __future__ import annotations

import platform
import statistics
from typing import Any

import torch

# Benchmark name → TrainConfig keyword arguments. Standard training is MODA's trainer with α=β=γ=0.
METHODS: dict[str, dict[str, Any]] = {"standard": dict(alpha=0.0, beta=0.0, gamma=0.0), "moda": dict(),
                                      "mwt": dict(method="mwt")}


def median_epoch_seconds(run) -> float:
    """Median training time per epoch of a run (no test pass); the first epoch is warm-up and is left
    out when there are others."""
    return statistics.median([h["train_seconds"] for h in run.history[1:]] or [run.history[0]["train_seconds"]])


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
