"""Standalone artifacts: a composed (or repaired) module saved as a ``torch.export`` program (.pt2).

The file loads and runs with plain PyTorch — ``torch.export.load(path).module()(x)`` — without
moda_core installed. The batch dimension is dynamic.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from moda_core.io import atomic_write_with
from moda_core.model_attrs import input_shape_of


def export_program(module: nn.Module, input_shape: tuple[int, ...]) -> torch.export.ExportedProgram:
    module = module.eval()
    param = next(module.parameters())
    example = torch.zeros(2, *input_shape, dtype=param.dtype, device=param.device)
    batch = torch.export.Dim("batch", min=1, max=65536)
    return torch.export.export(module, (example,), dynamic_shapes=({0: batch},))


def export_module(module: nn.Module, path: str | Path, input_shape: tuple[int, ...] | None = None) -> Path:
    """Export ``module`` to ``path`` (.pt2), atomically. ``input_shape`` defaults to ``module.input_shape``."""
    shape = tuple(input_shape) if input_shape else input_shape_of(module)
    program = export_program(module, shape)
    path = Path(path)
    atomic_write_with(path, lambda tmp: torch.export.save(program, str(tmp)))
    return path


def warm_up_export() -> None:
    """Export a tiny network once, to a temporary file: the first ``torch.export`` of a process spends seconds
    loading and setting up its tracer and writer (6–7 s on 2 CPU cores, against about 1 s for every later export
    of a composed VGG11), so a server calls this in the background before a visitor asks for an export."""
    tiny = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    with tempfile.TemporaryDirectory(prefix="moda-warm-up-") as folder:
        export_module(tiny, Path(folder) / "tiny.pt2", (1, 4, 4))
