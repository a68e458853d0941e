"""MODA Studio dashboard (entry point for `make run`)."""
from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from moda_core.runs import list_runs  # noqa: E402

st.set_page_config(page_title="MODA Studio", layout="wide")
st.title("MODA Studio")
st.write("Modular deep learning: train networks that come apart into per-class modules. "
         "The full dashboard (activations, module overlap, composition, swaps) is on its way; "
         "meanwhile this page lists the runs under `runs/`.")
runs = list_runs(ROOT / "runs")
if runs:
    st.dataframe(runs, hide_index=True)
else:
    st.info("No runs yet. Train one with `python -m moda_core train --model lenet5 --epochs 5`.")
