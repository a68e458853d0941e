"""Widgets shared by several pages: the run picker and the empty / broken-run messages."""
from __future__ import annotations

from typing import Any, Callable

import streamlit as st

from dashboard import state

HOW_TO_TRAIN = ("Train one on the **Runs & training** page, or from a terminal: "
                "`.venv/bin/python -m moda_core train --model lenet5 --epochs 5 --runs-dir runs`. "
                "The bundled demo runs live in `assets/demo/` (regenerate them with "
                "`.venv/bin/python assets/make_demo.py`).")


def show_broken(summaries: list[dict[str, Any]]) -> None:
    """List run folders that do not load, with their error, without stopping the page."""
    broken = [s for s in summaries if s.get("error")]
    if broken:
        with st.expander(f"{len(broken)} run folder(s) could not be loaded", expanded=False):
            for s in broken:
                st.warning(f"`{s['path']}`: {s['error']}")


def pick_run(label: str, key: str, with_checkpoints: bool = False,
             prefer: Callable[[dict], bool] | tuple[Callable[[dict], bool], ...] | None = None,
             summaries: list[dict[str, Any]] | None = None, help: str | None = None,
             prefer_spec: Callable[[str], bool] | None = None) -> str | None:
    """A select box of the loadable runs; None (after a friendly message) when there are none.

    ``prefer`` (a predicate on run summaries, or several tried in order) and ``prefer_spec`` (on
    run specs, checkpoints included) choose the default selection."""
    summaries = state.list_runs() if summaries is None else summaries
    specs = state.loadable_specs(summaries, with_checkpoints)
    if not specs:
        folders = ", ".join(f"`{f}`" for f in state.runs_dirs())
        st.info(f"No runs yet in {folders}. {HOW_TO_TRAIN}")
        return None
    index = 0
    if prefer is not None:
        good = [s for s in summaries if not s.get("error")]
        predicates = prefer if isinstance(prefer, tuple) else (prefer,)
        index = specs.index(good[default_index(summaries, *predicates)]["path"])
    if prefer_spec is not None:
        index = next((i for i, spec in enumerate(specs) if prefer_spec(spec)), index)
    return st.selectbox(label, specs, index=index, key=key, format_func=state.run_label, help=help)


def load_or_stop(spec: str):
    """Load a run or show why it does not load and stop the page."""
    run, error = state.try_load(spec)
    if error:
        st.error(f"This run does not load: {error}")
        st.stop()
    return run


def tau_slider(key: str = "tau") -> float:
    return st.slider("Threshold τ (a unit joins a class module when it fires on at least τ of the class's samples)",
                     min_value=0.5, max_value=1.0, value=0.9, step=0.01, key=key)


def training_kind(summary: dict) -> str:
    """How the Runs table names a run's training: MwT, MODA or standard."""
    if summary.get("method") == "mwt":
        return "MwT"
    return "MODA" if is_modular(summary) else "standard"


def is_modular(summary: dict) -> bool:
    return bool(summary.get("alpha") or summary.get("beta") or summary.get("gamma"))


def default_index(summaries: list[dict[str, Any]], *predicates: Callable[[dict], bool]) -> int:
    """Position (among the loadable runs) of the first run matching the first predicate that any run
    matches, else 0."""
    good = [s for s in summaries if not s.get("error")]
    for predicate in predicates:
        index = next((i for i, s in enumerate(good) if predicate(s)), None)
        if index is not None:
            return index
    return 0


def modular_demo_first(summary: dict) -> bool:
    """Default pick for pages about one MODA run: the bundled ``vgg11-moda``."""
    return summary["name"] == "vgg11-moda"
