"""Modules over training: module size, overlap and accuracy per epoch, MODA vs standard vs MwT."""
from __future__ import annotations

import streamlit as st

from dashboard import folders, study_jobs, ui
from dashboard.figures.style import method_label
from dashboard.figures.training import evolution_figure
from dashboard.plain_text import code, plain

st.title("Modules over training")
st.caption("Each point is a checkpoint saved during training, decomposed at τ like the final model. MODA's "
           "modules shrink and separate as its activation terms take hold; a standard-trained twin of the same "
           "model keeps large, overlapping modules while both learn to classify.")

summaries = folders.list_runs()
picker, slider = ui.controls_row()
with picker:
    spec = ui.pick_run("Run", key="evo_run", summaries=summaries, prefer=(ui.modular_demo_first, ui.is_modular),
                       help="Its twins (the same model and data trained the other ways) are drawn next to it.")
if spec is None:
    st.stop()
ui.load_or_stop(spec)
ui.composable_or_stop(spec)
with slider:
    tau = ui.tau_slider("evo_tau")
group = study_jobs.twins(summaries, spec)
labels = {method: f"{method_label(method)}: {folders.run_label(s)}{folders.unfinished_note(summaries, s)}"
          for method, s in group.items()}
known = {method: study_jobs.cached("evolution", s, tau) for method, s in group.items()}
missing = [method for method, frame in known.items() if frame is None]

if missing:
    count = sum(study_jobs.checkpoint_count(group[k]) for k in missing)
    names = ", ".join(code(folders.run_label(group[k])) for k in missing)
    st.info(f"Not computed yet at τ = {tau:.2f} for {names}: {count} saved state{'s' if count != 1 else ''} to "
            "decompose and test (a second or two each on a small model). Only one study runs at a time on this "
            "server.")
    study_jobs.compute_button("evolution", group, missing, known, f"Compute ({count} checkpoint"
                              f"{'s' if count != 1 else ''})", "evo_compute", "Decomposing the checkpoints of {run}",
                              tau)

shown = {labels[k]: frame.to_dict("list") for k, frame in known.items() if frame is not None}
if shown:
    ui.chart(evolution_figure(shown, {labels[k]: k for k in known}, across=ui.presenting()), key="evo_chart")
    single = [label for label, columns in shown.items() if len(columns["epoch"]) < 2]
    st.caption("Module size: the share of the model's weights one class's module keeps, averaged over classes. "
               "Overlap: the share both modules of two classes keep, averaged over pairs. Accuracy: on the test "
               "split, all classes.")
    recorded = [labels[k] for k in known if study_jobs.is_recorded(group[k])]
    if recorded:
        who = "These runs" if len(recorded) == len(known) else ", ".join(plain(label) for label in recorded)
        verb = "ships" if who != "These runs" and len(recorded) == 1 else "ship"
        st.caption(f"{who} {verb} the activation rates of every checkpoint: a module at τ follows from the rates "
                   "alone, so every τ draws at once (the weights of most of those checkpoints are not shipped).")
    if single:
        st.caption("Only one point for " + ", ".join(plain(label) for label in single) + ": that run kept no "
                   "periodic checkpoints (train it again with Checkpoint every N epochs in the Runs page's form, or "
                   "`--checkpoint-every N` on the command line, to follow it over training).")
if len(group) < 2:
    st.caption("No twin of this run in the runs folders (the same model, width, data and classes trained another "
               "way), so only its own curve is drawn.")
