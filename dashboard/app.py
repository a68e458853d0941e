"""MODA Studio dashboard (entry point for `make run`): navigation over the pages in ``pages/``.

Runs are listed from the bundled demo runs (``assets/demo/``) and ``runs/``; set ``MODA_RUNS_DIR``
(``os.pathsep``-separated folders) or edit the sidebar field to look elsewhere.
"""
from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dashboard import state  # noqa: E402

HERE = Path(__file__).resolve().parent

st.set_page_config(page_title="MODA Studio", layout="wide")
pages = [
    st.Page(HERE / "pages" / "runs.py", title="Runs & training", url_path="runs", default=True),
    st.Page(HERE / "pages" / "activations.py", title="Activations", url_path="activations"),
    st.Page(HERE / "pages" / "modules.py", title="Modules", url_path="modules"),
    st.Page(HERE / "pages" / "compose.py", title="Compose", url_path="compose"),
    st.Page(HERE / "pages" / "swap.py", title="Swap", url_path="swap"),
    st.Page(HERE / "pages" / "compare.py", title="Compare", url_path="compare"),
]
page = st.navigation(pages)
with st.sidebar:
    st.markdown("**MODA Studio** — modular deep learning: networks that come apart into per-class modules.")
    st.text_input("Runs folders (comma-separated)", value=", ".join(str(p) for p in state.default_runs_dirs()),
                  key="runs_dirs_text", help="Every run folder inside these folders is listed on every page.")
    for problem in state.runs_dir_problems():
        st.warning(problem)
page.run()
