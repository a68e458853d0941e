"""User-facing errors: raised for bad input, printed by the CLI as one line without a traceback."""
from __future__ import annotations

from pathlib import Path


class ModaError(Exception):
    """Something the user asked for is wrong or missing; the message says what, where and what was expected."""


class TrainingStopped(ModaError):
    """A training ended early because it was asked to stop (``train(..., stop=...)``, Ctrl-C on the command
    line, the dashboard's Stop button). Its run keeps its last committed epoch and lists as *interrupted*;
    ``train(..., resume=True)`` continues it exactly where an uninterrupted run would be."""

    def __init__(self, path: Path, epoch: int, epochs: int) -> None:
        self.path, self.epoch, self.epochs = Path(path), epoch, epochs
        super().__init__(f"training of run {self.path.name} stopped: it keeps epoch {epoch} of {epochs} "
                         "(continue with --resume)")
