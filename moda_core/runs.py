"""The run store's public names in one place (``from moda_core.runs import load_run``): re-exported from the
modules of :mod:`moda_core.store`, where each is defined and documented."""
from __future__ import annotations

from moda_core.store.checks import check_shapes, non_finite
from moda_core.store.commit import commit_epoch, read_commit, recover, resolve_files, staged_name, weights_epoch
from moda_core.store.lifecycle import OpenRun, create_run, discard_run, open_for_resume
from moda_core.store.listing import list_runs, summarize_run
from moda_core.store.loading import (
    ResumeState,
    Run,
    dataset_name,
    list_checkpoints,
    load_run,
    load_weights,
    model_shapes,
    resume_state,
    run_dataset,
)
from moda_core.store.lock import RunLock, training_pid
from moda_core.store.names import (
    CHECKPOINTS,
    COMMIT,
    COMMITTED_FILES,
    CONFIG,
    HISTORY,
    LOCK,
    METRICS,
    MODEL,
    OPTIMIZER,
    RunRef,
    check_plain_folder,
    check_run_name,
    checkpoint_path,
)
from moda_core.store.records import check_history, history_bytes, read_config, read_history, read_metrics
from moda_core.store.summary import RunStatus, RunSummary

__all__ = [
    "CHECKPOINTS", "COMMIT", "COMMITTED_FILES", "CONFIG", "HISTORY", "LOCK", "METRICS", "MODEL", "OPTIMIZER",
    "OpenRun", "ResumeState", "Run", "RunLock", "RunRef", "RunStatus", "RunSummary", "check_history",
    "check_plain_folder", "check_run_name", "check_shapes", "checkpoint_path", "commit_epoch", "create_run",
    "dataset_name", "discard_run", "history_bytes", "list_checkpoints", "list_runs", "load_run", "load_weights",
    "model_shapes", "non_finite", "open_for_resume", "read_commit", "read_config", "read_history", "read_metrics",
    "recover", "resolve_files", "resume_state", "run_dataset", "staged_name", "summarize_run", "training_pid",
    "weights_epoch",
]
