"""Standalone artifacts: a composed (or repaired) module saved as a ``torch.export`` program (.pt2).

The file loads and runs with plain PyTorch — ``torch.export.load(path).module()(x)`` — without
moda_core installed. The batch dimension is dynamic.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from moda_core.io import atomic_write_with


def export_program(module: nn.Module, input_shape: tuple[int, ...]) -> torch.export.ExportedProgram:
    module = module.eval()
    param = next(module.parameters())
    example = torch.zeros(2, *input_shape, dtype=param.dtype, device=param.device)
    batch = torch.export.Dim("batch", min=1, max=65536)
    return torch.export.export(module, (example,), dynamic_shapes=({0: batch},))


def export_module(module: nn.Module, path: str | Path, input_shape: tuple[int, ...] | None = None) -> Path:
    """Export ``module`` to ``path`` (.pt2), atomically. ``input_shape`` defaults to ``module.input_shape``."""
    shape = tuple(input_shape or module.input_shape)
    program = export_program(module, shape)
    path = Path(path)
    atomic_write_with(path, lambda tmp: torch.export.save(program, str(tmp)))
    return path
