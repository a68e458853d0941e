"""The server's folder policy: which runs folders the dashboard offers, how pages name them and their runs,
where new runs go, and what a visitor may read (labels, never server paths).

Runs folders are chosen by whoever starts the server, never by a visitor: ``$MODA_RUNS_DIR``
(``os.pathsep``-separated folders; ``moda-studio --runs-dir`` sets it), else the bundled demo runs plus
``runs/``. New runs go only into the first configured folder that is not the bundled demo (the *training
folder*); ``MODA_TRAINING=off`` turns training from the browser off. The Compare page's table is
``$MODA_COMPARE_CSV``, else the shipped one.

A run is named by its *spec* (``RUN`` or ``RUN@EPOCH``, one of the offered runs) as a string; ``RunRef.parse`` reads
it (``moda_core.store.names``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import streamlit as st

from dashboard.lazy import LazyModule
from dashboard.plain_text import code
from moda_core import resources
from moda_core.errors import ModaError
from moda_core.store.names import CONFIG as RUN_CONFIG  # the store's names and summaries import no torch
from moda_core.store.names import MODEL, RunRef
from moda_core.store.summary import RunStatus, RunSummary

run_store = LazyModule("moda_core.runs")  # torch: imported when a run is first listed

# The folder the server was started in (the checkout for `make run`): ./runs is the default training
# folder, and messages show paths under it relative to it.
ROOT = Path.cwd()
DEMO_DIR = resources.demo_runs_dir()
USER_RUNS_DIR = ROOT / "runs"
RUNS_ENV = "MODA_RUNS_DIR"
TRAINING_ENV = "MODA_TRAINING"  # "off" (or 0/no/false): no training from the browser
ALL_FOLDERS = "all runs folders"
# the Compare page's table, shipped with the package (bench/compare.py writes it; its optional step-time
# ratios lie next to it)
COMPARE_CSV = resources.compare_table_path()
COMPARE_ENV = "MODA_COMPARE_CSV"
OVERHEAD_JSON = "train_overhead.json"

# the run status a page opens by default (a page may open any status that is ``openable``)
HEALTHY = RunStatus.COMPLETE


def apply_model_policy() -> None:
    """Which model builders runs may name here: only the top-level packages in ``$MODA_MODELS`` (``moda-studio
    --models``; moda_core.import_policy), looked for in the folder the server started in too. Nothing else is
    granted: a runs folder never chooses what code runs."""
    from moda_core import import_policy

    import_policy.allow_models(())


# ----- runs folders: configured by the server, picked by the visitor ------------------------------

@dataclass(frozen=True)
class RunsFolder:
    """A configured runs folder: where it is (never shown), how pages name it, whether new runs go there."""

    path: Path
    label: str
    trains_here: bool

    @property
    def bundled(self) -> bool:
        return _same(self.path, DEMO_DIR)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def default_runs_dirs() -> list[Path]:
    """Folders the server offers: ``$MODA_RUNS_DIR`` (``os.pathsep``-separated) if set, else the bundled
    demo runs plus ``runs/`` in the folder the server started in."""
    configured = os.environ.get(RUNS_ENV)
    if configured:
        return [Path(p).expanduser() for p in configured.split(os.pathsep) if p.strip()]
    return [DEMO_DIR, USER_RUNS_DIR]


def training_enabled() -> bool:
    return os.environ.get(TRAINING_ENV, "on").strip().lower() not in ("off", "0", "no", "false")


def _label(path: Path) -> str:
    if _same(path, DEMO_DIR):
        return "demo (bundled)"
    try:
        return str(path.resolve().relative_to(ROOT))
    except (ValueError, OSError):
        return path.name or str(path)


def configured_folders() -> list[RunsFolder]:
    """The configured runs folders with their public labels (unique); the first one that is not the
    bundled demo is the training folder (when training is enabled)."""
    folders, labels = [], set()
    trainer_found = not training_enabled()
    for path in default_runs_dirs():
        label = _label(path)
        parent = path
        while label in labels and parent.parent != parent:  # two folders of the same name
            parent = parent.parent
            label = f"{parent.name}/{label}"
        labels.add(label)
        trains = not trainer_found and not _same(path, DEMO_DIR)
        trainer_found = trainer_found or trains
        folders.append(RunsFolder(path, label, trains))
    return folders


def folder_choices() -> list[str]:
    """What the sidebar offers: every configured folder together, then each one alone (their labels)."""
    labels = [f.label for f in configured_folders()]
    return labels if len(labels) == 1 else [ALL_FOLDERS, *labels]


def selected_folders() -> list[RunsFolder]:
    """The configured folders the visitor picked in the sidebar (all of them by default). Anything else in
    the session state is ignored: a visitor picks among the configured folders and names no path."""
    folders = configured_folders()
    chosen = st.session_state.get("runs_folder")
    picked = [f for f in folders if f.label == chosen]
    return picked or folders


def runs_dirs() -> list[Path]:
    """The folders whose runs the pages list (the sidebar's pick among the configured folders)."""
    return [f.path for f in selected_folders()]


def folders_text(folders: list[RunsFolder] | None = None) -> str:
    return ", ".join(code(f.label) for f in (folders if folders is not None else selected_folders()))


def runs_dir_problems() -> list[str]:
    """Readable messages (labels, no server paths) for configured folders that cannot hold runs
    (the training folder may not exist yet: the first training creates it)."""
    problems = []
    for folder in configured_folders():
        path = folder.path
        if not path.exists():
            if folder.trains_here or _same(path, USER_RUNS_DIR):
                continue
            problems.append(f"Runs folder {code(folder.label)} does not exist: the server was started with a "
                            f"folder that holds no runs.")
        elif not path.is_dir():
            problems.append(f"Runs folder {code(folder.label)} is a file, not a folder of runs.")
        elif (path / RUN_CONFIG).exists():
            problems.append(f"Runs folder {code(folder.label)} is a single run, not a folder of runs: start the "
                            f"server with its parent folder instead.")
    return problems


def training_folder() -> RunsFolder | None:
    """The configured folder new runs go into; None when training from the browser is off."""
    return next((f for f in configured_folders() if f.trains_here), None)


def training_dir() -> Path | None:
    folder = training_folder()
    return folder.path if folder else None


def writable(run: run_store.Run) -> bool:
    """Whether the dashboard may store results (the decomposition cache) in the run's folder: only in the
    training folder, never in the bundled demo or another configured folder."""
    folder = training_folder()
    return folder is not None and _same(run.path.parent, folder.path)


# ----- what a visitor may read: labels instead of server paths ------------------------------------

_ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/(?:[^\s/`'\"():,;]+/)+([^\s/`'\"():,;]*)")


def public(text: str) -> str:
    """``text`` with server paths replaced: a configured folder by its label, the project folder by ``.``,
    any other absolute path by ``…/`` and its last part. For messages shown to visitors."""
    text = str(text)
    replacements: list[tuple[str, str]] = []
    for folder in configured_folders():
        for form in {str(folder.path), str(folder.path.resolve())}:
            replacements.append((form, folder.label))
    replacements.append((str(ROOT), "."))
    for original, shown in sorted(replacements, key=lambda r: -len(r[0])):
        if original not in ("", "/", "."):
            text = text.replace(original, shown)
    return _ABSOLUTE_PATH.sub(lambda m: f"…/{m.group(1)}", text)


def shown_path(path: str | Path) -> str:
    """A server path as visitors see it (see ``public``)."""
    return public(str(path))


def run_label(spec: str) -> str:
    """``FOLDER/RUN`` (``FOLDER/RUN @ epoch N`` for a checkpoint), with the folder's public label."""
    ref = RunRef.parse(spec)
    folder = next((f.label for f in configured_folders() if _same(ref.path.parent, f.path)), ref.path.parent.name)
    return f"{folder}/{ref.name}" + (f" @ epoch {ref.epoch}" if ref.epoch is not None else "")


def run_epoch_label(spec: str) -> str:
    """``run_label`` that always says which epoch's weights: ``FOLDER/RUN @ epoch 40 (final)``, and for a
    checkpoint ``FOLDER/RUN @ epoch 8 of 40 (early)`` (early: the first half of the epochs, else late)."""
    ref = RunRef.parse(spec)
    label = run_label(str(ref.path))
    try:
        final = run_store.weights_epoch(ref.path / MODEL)
    except (ModaError, OSError, ValueError):
        return run_label(spec)
    if ref.epoch is None:
        return f"{label} @ epoch {final} (final)"
    return f"{label} @ epoch {ref.epoch} of {final} ({'early' if ref.epoch <= final / 2 else 'late'})"


def unfinished_note(summaries: list[RunSummary], spec: str) -> str:
    """What a label adds for a run whose training did not finish (listed in ``summaries``): " (interrupted: 3 of
    10 epochs)" or " (still training: 3 of 10 epochs)"; "" for a complete run or one not listed."""
    path = RunRef.parse(spec).path
    summary = next((s for s in summaries if _same(s.path, path)), None)
    if summary is None or summary.status not in (RunStatus.INTERRUPTED, RunStatus.RUNNING):
        return ""
    how = "interrupted" if summary.status is RunStatus.INTERRUPTED else "still training"
    return f" ({how}: {summary.epochs_done} of {summary.epochs or '?'} epochs)"


# ----- the runs the pages offer --------------------------------------------------------------------

def list_runs(every_folder: bool = False) -> list[RunSummary]:
    """Summaries of every run in the selected runs folders (every configured one with ``every_folder``, for work
    outside a visitor's session) (``moda_core.store.listing.list_runs``, which reads a settled folder once), their
    errors as visitors may read them (``public``)."""
    summaries = []
    for folder in configured_folders() if every_folder else selected_folders():
        try:
            listed = run_store.list_runs(folder.path)
        except ModaError:  # not a folder: the sidebar says so (runs_dir_problems)
            continue
        summaries += [replace(s, error=public(s.error)) if s.error else s for s in listed]
    return summaries


def openable(summary: RunSummary) -> bool:
    """Whether a page may open the run: it loads (``loadable``: a finished epoch, not broken)."""
    return summary.status.openable and summary.loadable


def loadable_specs(summaries: list[RunSummary], with_checkpoints: bool = False) -> list[str]:
    """Run specs of the runs a page may open (not broken ones), optionally each periodic checkpoint as
    ``RUN@EPOCH`` too."""
    specs = []
    for s in summaries:
        if not openable(s):
            continue
        specs.append(str(s.ref))
        if with_checkpoints:
            specs += [str(s.ref.at(e)) for e in s.checkpoints if e != s.epochs_done]
    return specs


# ----- the Compare page's files (formats and readers: moda_core.comparison) ----------------------

def compare_csv_path() -> Path:
    """The comparison table: ``$MODA_COMPARE_CSV`` if set, else the shipped one (``COMPARE_CSV``)."""
    configured = os.environ.get(COMPARE_ENV)
    return Path(configured).expanduser() if configured else COMPARE_CSV


def overhead_json_path(csv_path: Path | None = None) -> Path:
    """``train_overhead.json`` in the comparison table's folder."""
    return (csv_path or compare_csv_path()).parent / OVERHEAD_JSON
