"""MODA Studio dashboard (entry point for `make run`, through ``dashboard/serve.py``): navigation over
the pages in ``pages/``.

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
    st.Page(HERE / "pages" / "how.py", title="How MODA works", url_path="how", default=True),
    st.Page(HERE / "pages" / "runs.py", title="Runs & training", url_path="runs"),
    st.Page(HERE / "pages" / "activations.py", title="Activations", url_path="activations"),
    st.Page(HERE / "pages" / "modules.py", title="Modules", url_path="modules"),
    st.Page(HERE / "pages" / "map.py", title="Module map", url_path="map"),
    st.Page(HERE / "pages" / "evolution.py", title="Modules over training", url_path="evolution"),
    st.Page(HERE / "pages" / "tau.py", title="τ trade-off", url_path="tau"),
    st.Page(HERE / "pages" / "compose.py", title="Compose", url_path="compose"),
    st.Page(HERE / "pages" / "swap.py", title="Swap", url_path="swap"),
    st.Page(HERE / "pages" / "compare.py", title="Compare", url_path="compare"),
]
page = st.navigation(pages)
ui.sync_url_state(page.url_path)  # one run and one τ for every page, kept in the URL (?run=…&tau=…)
with st.sidebar:
    st.markdown("**MODA Studio** — modular deep learning: networks that come apart into per-class modules.")
    ui.runs_folder_picker()
    ui.projector_toggle()
    ui.one_history_entry_per_page()
try:
    ui.run_page(page)
finally:  # also when the page stops early (st.stop)
    # torch and the engine, then torch.export's tracer (its first export takes seconds), in the background, once
    # the first page is out
    lazy.warm_up("dashboard.engine", then=("moda_core.export:warm_up_export",))
