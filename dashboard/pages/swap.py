"""Swap: repair a weak model's bad class with a strong model's module for that class."""
from __future__ import annotations

import streamlit as st

from dashboard import figures, state, ui
from moda_core.errors import ModaError
from moda_core.replace import STRATEGIES

st.title("Swap")
st.caption("A weak model is bad at one class; a strong model trained with MODA has a module for that class. "
           "The swap plugs the module into the weak model and reports each class's accuracy before and after: "
           "the target class should gain, the others should barely move.")

summaries = state.list_runs()
if not state.loadable_specs(summaries):
    ui.pick_run("Run", key="swap_empty", summaries=summaries)
    st.stop()
c1, c2 = st.columns(2)
with c1:
    weak = ui.pick_run("Weak run (or one of its checkpoints)", key="swap_weak", with_checkpoints=True,
                       summaries=summaries, prefer=lambda s: s["name"].startswith("swap-weak"),
                       prefer_spec=lambda spec: "swap-weak@" in spec,
                       help="RUN @ epoch N is a periodic checkpoint: an early one is under-fit, the last over-fit.")
with c2:
    strong = ui.pick_run("Strong run (module donor)", key="swap_strong", summaries=summaries,
                         prefer=lambda s: s["name"].startswith("swap-strong"))
ui.load_or_stop(weak)
ui.load_or_stop(strong)
weak_classes, strong_classes = state.run_classes(weak), state.run_classes(strong)
weak_names = dict(zip(weak_classes, state.class_names(weak)))
shared = [c for c in weak_classes if c in strong_classes]
if not shared:
    st.warning(f"These runs share no class (weak: {weak_classes}, strong: {strong_classes}); pick a strong run "
               "that learned one of the weak run's classes.")
    st.stop()
c1, c2, c3 = st.columns(3)
target = c1.selectbox("Class to repair", shared, format_func=lambda c: weak_names[c], key="swap_class",
                      help="Classes both runs learned (original class ids).")
strategy = c2.radio("Strategy", STRATEGIES, key="swap_strategy", horizontal=True,
                    help="calibrate: train a small K×K calibration layer on the weak model's training data (MODA). "
                         "normalize: no training; the module's min-max normalised output replaces the weak "
                         "model's probability (CNNSplitter-style baseline).")
epochs = c3.number_input("Calibration epochs", min_value=1, max_value=50, value=5, key="swap_epochs",
                         disabled=strategy != "calibrate")
tau = ui.tau_slider("swap_tau")
if st.button("Run swap", key="swap_go", type="primary"):
    st.session_state["swap_request"] = (weak, strong, target, strategy, int(epochs), tau)
request = st.session_state.get("swap_request")
if request is None:
    st.info("Choose the runs, the class and a strategy, then press **Run swap**.")
    st.stop()
weak, strong, target, strategy, epochs, tau = request
try:
    with st.spinner("Swapping the module in and measuring…"):
        report = state.swap(weak, strong, target, target, strategy, epochs, tau)
except ModaError as error:
    st.error(f"The swap did not run: {error}")
    st.stop()
ids = list(report["before"])
names = [weak_names.get(int(c), c) for c in ids]
st.markdown(f"**{state.run_label(weak)}**, class {weak_names[target]} repaired with the module of "
            f"**{state.run_label(strong)}** ({strategy}, τ = {tau:.2f}; the module has "
            f"{report['module_params_fraction']:.1%} of the strong model's weights).")
c1, c2, c3 = st.columns(3)
c1.metric(f"Target class {weak_names[target]}", f"{report['after'][str(target)]:.1%}",
          f"{report['target_gain'] * 100:+.1f} points")
c2.metric("Largest change elsewhere", f"{report['other_max_change'] * 100:.1f} points", delta_color="off")
c3.metric("Overall accuracy", f"{report['accuracy_after']:.1%}",
          f"{(report['accuracy_after'] - report['accuracy_before']) * 100:+.1f} points")
st.plotly_chart(figures.swap_bars(names, [report["before"][c] for c in ids], [report["after"][c] for c in ids],
                                  target=weak_names[target]), key="swap_bars")
