"""User-facing errors: raised for bad input, printed by the CLI as one line without a traceback."""
from __future__ import annotations

from pathlib import Path


class ModaError(Exception):
    """Something the user asked for is wrong or missing; the message says what, where and what was expected, in
    words any caller can show (no command-line flags). ``hint``: what to type on the command line to get past it
    ("pick another --name, …"), which the CLI prints after the message (``with_hint``) and a page leaves out."""

    def __init__(self, message: str = "", hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def with_hint(self) -> str:
        """The message, then the command line's hint: what ``moda`` prints after ``error:``."""
        return f"{self}: {self.hint}" if self.hint else str(self)


class TrainingStopped(ModaError):
    """A training ended early because it was asked to stop (``train(..., stop=...)``, Ctrl-C on the command
    line, the dashboard's Stop button). Its run keeps its last committed epoch and lists as *interrupted*;
    ``train(..., resume=True)`` continues it exactly where an uninterrupted run would be."""

    def __init__(self, path: Path, epoch: int, epochs: int) -> None:
        self.path, self.epoch, self.epochs = Path(path), epoch, epochs
        super().__init__(f"training of run {self.path.name} stopped: it keeps epoch {epoch} of {epochs}",
                         hint="continue with --resume")
