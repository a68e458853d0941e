"""The two study views' computations (``moda_core.studies``) for a shared server: a study a visitor asks for runs
on the server's board (``dashboard.jobs``: one pool of workers, the same study once for every visitor who asks,
"k ahead of you" and then the study's progress while one waits); results kept per run, τ and weights file (a
retrained run is computed again). An evolution drawn from recorded rates is light and never queues.

Pages call ``cached`` to show what is already known without any work, and ``compute`` when a visitor asks.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable

import pandas as pd
import streamlit as st

from dashboard import engine, folders, jobs
from dashboard.plain_text import code
from moda_core import twins as moda_twins
from moda_core.errors import ModaError
from moda_core.store.names import MODEL, RunRef
from moda_core.store.summary import RunSummary
from moda_core.studies import (
    DEFAULT_TAUS,
    EVOLUTION_COLUMNS,
    TAU_COLUMNS,
    evolution_is_recorded,
    evolution_states,
    tau_sweep,
    training_evolution,
)
from moda_core.twins import partner

TAU_CSV = "tau_sweep.csv"  # tau_sweep over DEFAULT_TAUS, if a run folder ships one
TAU_GRID = tuple(DEFAULT_TAUS)  # the τ trade-off's fixed, small grid
MAX_RESULTS = 64
MAX_INSTANT_STATES = 200  # recorded checkpoints drawn at once, off the board: about 7 ms each for the demo VGG
_recorded_lock = threading.Lock()


@st.cache_resource(show_spinner=False)
def _results() -> "OrderedDict[tuple, pd.DataFrame]":
    """Evolutions drawn from recorded rates (light work, kept here; studies computed on the board are kept there)."""
    return OrderedDict()


def _key(study: str, spec: str, tau: float | None) -> tuple:
    path = RunRef.parse(spec).path
    try:
        stamp = (path / MODEL).stat().st_mtime_ns
    except OSError:
        stamp = 0
    return study, str(path), stamp, None if tau is None or study != "evolution" else round(float(tau), 4)


def precomputed(study: str, spec: str) -> pd.DataFrame | None:
    """The τ trade-off a run folder ships (``tau_sweep.csv``, over ``TAU_GRID``); None for another study,
    when there is none, or when it does not parse. (An evolution ships as recorded rates instead: see
    ``cached``.)"""
    if study != "tau":
        return None
    path = RunRef.parse(spec).path / TAU_CSV
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    return frame[TAU_COLUMNS] if set(TAU_COLUMNS) <= set(frame.columns) and len(frame) else None


def checkpoint_count(spec: str) -> int:
    """How many states (periodic checkpoints and the final weights) an evolution of the run evaluates."""
    try:
        return len(evolution_states(RunRef.parse(spec).path))
    except (ModaError, OSError):
        return 0


def cached(study: str, spec: str, tau: float | None = None) -> pd.DataFrame | None:
    """A study already known: computed earlier (any session), or shipped with the run: a τ trade-off as a
    table, an evolution as the rates of every checkpoint (``evolution-rates.safetensors``), from which the
    curves at any τ are milliseconds of counting, with no model evaluation: no button, lock or progress bar."""
    shipped = precomputed(study, spec)
    if shipped is not None:
        return shipped
    key = _key(study, spec, tau)
    found, frame = jobs.board().known("study", key)
    if found:
        return frame.copy()
    with _recorded_lock:
        known = _results().get(key)
    if known is None and study == "evolution" and is_recorded(spec):
        known = _remember(key, training_evolution(engine.load_run(spec), tau)[EVOLUTION_COLUMNS])
    return None if known is None else known.copy()


def is_recorded(spec: str) -> bool:
    """Whether the run's evolution is drawn from recorded rates at once (``moda_core.studies.evolution_is_recorded``):
    at most ``MAX_INSTANT_STATES`` of them, so that no visitor starts unbounded work outside the study lock (a
    folder recording more goes through the button, the lock and the progress bar like any other run)."""
    return evolution_is_recorded(RunRef.parse(spec).path, most=MAX_INSTANT_STATES)


def _remember(key: tuple, frame: pd.DataFrame) -> pd.DataFrame:
    with _recorded_lock:
        results = _results()
        results[key] = frame
        while len(results) > MAX_RESULTS:
            results.popitem(last=False)
    return frame


def _run_study(study: str, spec: str, tau: float | None, progress: Callable[[int, int], None]) -> pd.DataFrame:
    run = engine.load_run(spec)
    if study == "evolution":
        frame = training_evolution(run, tau, progress=progress)
        return frame[EVOLUTION_COLUMNS]
    frame = tau_sweep(run, TAU_GRID, progress=progress)
    return frame[TAU_COLUMNS]


def compute(study: str, spec: str, tau: float | None = None, what: str = "") -> pd.DataFrame:
    """A study (``evolution`` at τ, or ``tau`` over ``TAU_GRID``), computed on the server's board unless known
    (``what`` names it to whoever waits: "k ahead of you", then its progress); raises ``ModaError`` when the run
    cannot be studied."""
    known = cached(study, spec, tau)
    if known is not None:
        return known
    engine.load_run(spec)  # loaded in the visitor's thread, with words if it takes a while
    frame = jobs.board().run("study", _key(study, spec, tau), lambda progress: _run_study(study, spec, tau, progress),
                             what or f"Computing the {study} study", keep=MAX_RESULTS, show=jobs.wait_with_words)
    return frame.copy()


def compute_button(study: str, group: dict[str, str], missing: list[str], known: dict[str, Any], label: str,
                   key: str, what: str, tau: float | None = None) -> None:
    """A page's button that computes the study of each ``missing`` run of ``group`` into ``known`` (``what``
    names the work to whoever waits; ``{run}`` is the run's label), then reruns the page to draw from the cache."""
    if not st.button(label, key=key, type="primary"):
        return
    for method in missing:
        known[method] = compute(study, group[method], tau, what=what.format(run=code(folders.run_label(group[method]))))
    st.rerun()  # redraw from the cache, without the page's "not computed yet" notice


def twins(summaries: list[RunSummary], spec: str) -> dict[str, str]:
    """The chosen run (``spec``, a checkpoint kept as such) and its twins among the runs the pages can open
    (``moda_core.twins``: the same model and data trained by another method): method → spec, the chosen run's method
    first; empty when the chosen run is not listed."""
    path = RunRef.parse(spec).path
    group = moda_twins.twins([s for s in summaries if folders.openable(s)], path)
    return {method: spec if found == path else str(found) for method, found in group.items()}


def twin(group: dict[str, str]) -> tuple[str, str] | None:
    """In a run's ``twins``, its partner (``partner``: standard training for MODA or MwT, MODA for standard
    training): (method, spec), or None."""
    other = partner(next(iter(group))) if group else None
    return (other, group[other]) if other in group else None
