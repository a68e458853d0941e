"""The τ trade-off (the paper's τ study): module size, overlap and composed-pair accuracy as τ grows."""
from __future__ import annotations

from math import comb

import streamlit as st

from dashboard import engine, folders, study_jobs, ui
from dashboard.figures.activations import FLOOR_SHOWN, add_floor_line, floor_text
from dashboard.figures.style import method_label
from dashboard.figures.training import tau_figure
from dashboard.plain_text import code, plain

st.title("τ trade-off")
st.caption("τ is the firing rate a unit needs, on a class's training images, to join that class's module. A "
           "higher τ keeps fewer units: smaller modules that overlap less, until a module misses units its class "
           "needs and composed models start to lose accuracy. Drawn for the chosen run and its standard-trained "
           "twin.")

summaries = folders.list_runs()
picker, slider = ui.controls_row()
with picker:
    spec = ui.pick_run("Run", key="tau_run", summaries=summaries, prefer=(ui.modular_demo_first, ui.is_modular),
                       help="Its standard-trained twin (the same model and data, α = β = γ = 0) is drawn next to it.")
if spec is None:
    st.stop()
ui.load_or_stop(spec)
ui.composable_or_stop(spec)
with slider:
    tau = ui.tau_slider("tau_tau")
group = study_jobs.twins(summaries, spec)
chosen_method = next(iter(group), "")
partner = study_jobs.partner(chosen_method)
group = {k: s for k, s in group.items() if k in (chosen_method, partner)}
labels = {method: f"{method_label(method)}: {folders.run_label(s)}{folders.unfinished_note(summaries, s)}"
          for method, s in group.items()}
known = {method: study_jobs.cached("tau", s) for method, s in group.items()}
missing = [method for method, frame in known.items() if frame is None]
grid = ", ".join(f"{t:g}" for t in study_jobs.TAU_GRID)

if missing:
    names = ", ".join(code(folders.run_label(group[k])) for k in missing)
    st.info(f"Not computed yet for {names}: for each τ in {grid}, the modules are cut at that τ and a few "
            "two-class models are composed and tested (about a minute per run on 2 CPU cores; only one study "
            "runs at a time on this server).")
    study_jobs.compute_button("tau", group, missing, known, "Compute the trade-off", "tau_compute",
                              "Sweeping τ for {run}")

shown = {labels[k]: frame.to_dict("list") for k, frame in known.items() if frame is not None}
if shown:
    floor = engine.module_floor(spec)  # a ViT's modules never go below what they all keep
    ui.chart(add_floor_line(tau_figure(shown, {labels[k]: k for k in known}, tau, across=ui.presenting()), floor, row=1,
                            col=1),
             key="tau_chart")
    if floor >= FLOOR_SHOWN:
        st.caption(floor_text(floor))
    names = engine.class_names(spec)
    pairs = engine.tau_pairs(len(names))  # the pairs study_jobs' τ sweep composes (tau_sweep's default)
    every = comb(len(names), 2)
    listed = ", ".join(f"{names[a]}–{names[b]}" for a, b in pairs)
    sample = (f"all {every} class pairs ({listed})" if len(pairs) == every else
              f"the same {len(pairs)} of the {every} class pairs for every τ ({listed}), to keep the sweep short. "
              f"The Compare page averages over all {every} pairs, so its pair accuracies can differ a little "
              "from these")
    st.caption("Composed two-class modules: accuracy on the two classes' test images of a model composed from "
               f"just their modules (no fine-tuning), averaged over {plain(sample)}. The dotted line is the τ "
               "chosen on the other pages. Accuracy axes span at least 5 points, so a wobble of a few tenths of "
               "a point looks as small as it is.")
if partner not in group:
    st.caption(f"No {method_label(partner)} twin of this run in the runs folders (the same model, width, "
               "data and classes), so only its own curve is drawn.")
