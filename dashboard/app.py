"""MODA Studio dashboard (entry point for `make run`, through ``dashboard/serve.py``): navigation over
the pages in ``views/`` (not ``pages/``: Streamlit takes a folder of that name for an old-style multipage app and
would run a page file without this script, its sidebar and its error guard).

Runs are listed from the folders the server was started with: the bundled demo runs
(``assets/demo/``) and ``runs/``, or ``MODA_RUNS_DIR`` (``os.pathsep``-separated folders). A visitor
picks among them in the sidebar and never types a path. Each page runs inside ``ui.run_page``: an
error shows a short message, never a traceback.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import folders, lazy, ui

HERE = Path(__file__).resolve().parent

st.set_page_config(page_title="MODA Studio", layout="wide")
folders.apply_model_policy()  # runs of a model of one's own import its builder only from allowed packages
pages = [
    # The landing page lives at "/" (Streamlit ignores a default page's url_path), so every other page,
    # Runs included, keeps a working direct link such as /runs.
    st.Page(HERE / "views" / "how.py", title="How MODA works", url_path="how", default=True),
    st.Page(HERE / "views" / "runs.py", title="Runs & training", url_path="runs"),
    st.Page(HERE / "views" / "activations.py", title="Activations", url_path="activations"),
    st.Page(HERE / "views" / "modules.py", title="Modules", url_path="modules"),
    st.Page(HERE / "views" / "map.py", title="Module map", url_path="map"),
    st.Page(HERE / "views" / "evolution.py", title="Modules over training", url_path="evolution"),
    st.Page(HERE / "views" / "tau.py", title="τ trade-off", url_path="tau"),
    st.Page(HERE / "views" / "compose.py", title="Compose", url_path="compose"),
    st.Page(HERE / "views" / "swap.py", title="Swap", url_path="swap"),
    st.Page(HERE / "views" / "compare.py", title="Compare", url_path="compare"),
]
page = st.navigation(pages)
ui.sync_url_state(page.url_path)  # one run and one τ for every page, kept in the URL (?run=…&tau=…)
with st.sidebar:
    st.markdown("**MODA Studio** — modular deep learning: networks that come apart into per-class modules.")
    ui.runs_folder_picker()
    ui.projector_toggle()
    ui.one_history_entry_per_page()
if ui.presenting():  # the projector's screen is the page's: the sidebar starts closed (its arrow opens it)
    st.set_page_config(initial_sidebar_state="collapsed")
try:
    ui.run_page(page)
finally:  # also when the page stops early (st.stop)
    # torch, the engine and torch.export's tracer in the background, once the first page is out (moda-studio starts
    # it, and then the default runs', shortly after the server listens)
    lazy.warm_up_engine()
