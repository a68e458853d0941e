"""What listing says of one run folder (``listing.list_runs``): a :class:`RunSummary` with a :class:`RunStatus`.

Plain values, no torch (the dashboard's sidebar uses them before torch is loaded), and immutable: a listing is kept
per folder state and handed to every caller (every dashboard visitor) at once, so no caller can change another's.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from moda_core.store.names import RunRef


class RunStatus(str, enum.Enum):
    """Where a listed run stands. Its value is the word the command line and the pages show (``str()`` gives it)."""

    COMPLETE = "complete"  # every planned epoch committed
    RUNNING = "running"  # a process holds the run's lock and trains into it
    INTERRUPTED = "interrupted"  # stopped before its last epoch, its lock free: resume or discard it
    BROKEN = "broken"  # does not load (``error`` says why)
    NEEDS_MODELS = "needs-models"  # a model of one's own from a package not allowed here (``needs`` names it)

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def openable(self) -> bool:
        """Whether a run of this status may be opened when it loads: complete, running or interrupted."""
        return self in (RunStatus.COMPLETE, RunStatus.RUNNING, RunStatus.INTERRUPTED)


@dataclass(frozen=True)
class RunSummary:
    """One run folder as listed: what its files say, read without building its model or loading its weights.

    ``error`` says why it does not load (None when it does); ``loadable``: it has a finished epoch and is not
    broken; ``epochs_done`` comes from the weights' own metadata, ``epochs`` (planned) and the method's name,
    model, data set and loss weights α β γ from its config.json; ``checkpoints`` are the epochs of its committed
    periodic checkpoints whose files fit its model; ``pid`` is the trainer's (0: one trains, its pid unknown);
    ``needs`` the package a needs-models run's builder comes from. A field a broken run's files did not give is
    None (or empty)."""

    name: str
    path: Path
    status: RunStatus = RunStatus.BROKEN
    error: str | None = None
    loadable: bool = False
    epochs_done: int = 0
    epochs: int | None = None
    model: str | None = None
    dataset: str | None = None
    method: str | None = None
    alpha: float | None = None
    beta: float | None = None
    gamma: float | None = None
    test_accuracy: float | None = None
    checkpoints: tuple[int, ...] = ()
    pid: int | None = None
    needs: str | None = None

    @property
    def ref(self) -> RunRef:
        """The run at its last committed epoch (``RUN``)."""
        return RunRef(self.path)

    @property
    def modular(self) -> bool:
        """Whether it was trained to come apart into modules (MODA or MwT, not standard training)."""
        return self.method not in (None, "standard")

    def row(self) -> dict[str, Any]:
        """The summary as plain JSON values (``moda runs --json``, a table's row): the path as a string, the
        status as its word, the checkpoints as a list."""
        row = {f.name: getattr(self, f.name) for f in fields(self)}
        row.update(path=str(self.path), status=self.status.value, checkpoints=list(self.checkpoints))
        return row
