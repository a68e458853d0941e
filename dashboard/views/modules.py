"""Modules: module sizes and class×class weight overlap, MODA and standard training side by side."""
from __future__ import annotations

import streamlit as st

from dashboard import engine, folders, study_jobs, ui
from dashboard.figures.modules import module_size_bars, overlap_by_layer, overlap_by_layer_pair, overlap_heatmap
from dashboard.figures.style import PAIR_COLOURS
from dashboard.plain_text import plain
from moda_core.store.names import RunRef
from moda_core.store.summary import RunSummary

st.title("Modules")
st.caption("A class module is the part of the network a class uses. Weight overlap of two classes = the share "
           "of all weights that both modules keep. MODA training should give small modules that overlap "
           "little; standard training of the same model, large ones that overlap a lot.")


def run_b_default(summaries: list[RunSummary], spec_a: str) -> str:
    """Run B's default for run A: its twin trained the other way (study_jobs.twins: standard for a MODA or MwT
    run, MODA for a standard one), else a standard run of the same model, else the demo's standard VGG, else
    any standard run."""
    group = study_jobs.twins(summaries, spec_a)
    method_a = next(iter(group), "")
    for method in (study_jobs.partner(method_a), *(m for m in group if m != method_a)):  # else another twin
        if method in group and method != method_a:
            return group[method]
    path_a = RunRef.parse(spec_a).path
    model_a = next((s.model for s in summaries if s.path == path_a), None)
    runs = [s for s in summaries if folders.openable(s)]
    index = ui.default_index(summaries, lambda s: s.model == model_a and not ui.is_modular(s),
                             lambda s: s.name == "vgg11-standard", lambda s: not ui.is_modular(s))
    return str(runs[index].ref)


summaries = folders.list_runs()
if not folders.loadable_specs(summaries):
    ui.pick_run("Run", key="mod_empty", summaries=summaries)
    st.stop()
c1, c2 = st.columns(2)
with c1:  # run A is the session's run (shared with the other pages and the URL); run B is this page's own
    moda_spec = ui.pick_run("Run A (e.g. MODA training)", key="mod_run_a", summaries=summaries, with_checkpoints=True,
                            prefer=(ui.modular_demo_first, ui.is_modular),
                            help="A run, or one of its saved checkpoints (RUN @ epoch N).")
if moda_spec is None:
    st.stop()
# run B: run A's twin (the same model and data trained the other way: standard for a MODA run), following run A
# until the visitor picks run B themselves (their pick is kept in mod_run_b_choice, across pages too)
specs_b = folders.loadable_specs(summaries, with_checkpoints=True)
default_b = run_b_default(summaries, moda_spec)
chosen_b = st.session_state.get("mod_run_b_choice")
st.session_state["mod_run_b"] = chosen_b if chosen_b in specs_b else default_b  # before the widget: no index
std_spec = c2.selectbox("Run B (e.g. standard training)", specs_b, key="mod_run_b", format_func=folders.run_label,
                        on_change=lambda: st.session_state.update(mod_run_b_choice=st.session_state["mod_run_b"]),
                        help="A run, or one of its saved checkpoints (RUN @ epoch N). By default run A's twin: "
                             "the same model and data, trained the other way.")
tau_area, scale_area = st.columns([3, 1], vertical_alignment="bottom")  # the switch on the slider's row
with tau_area:
    tau = ui.tau_slider("mod_tau")
specs = {"A": moda_spec, "B": std_spec}
for spec in specs.values():
    ui.load_or_stop(spec)
    ui.composable_or_stop(spec)
with st.spinner("Decomposing…"):
    metrics = {k: engine.module_metrics(spec, tau) for k, spec in specs.items()}
labels = {k: f"{k}: {folders.run_epoch_label(spec)}{folders.unfinished_note(summaries, spec)}"
          for k, spec in specs.items()}
# each heatmap on its own colour scale by default: on one shared scale a MODA run's small overlaps all look
# alike next to a standard run's large ones; the colour bars state each range
shared_scale = scale_area.toggle("One colour scale", key="mod_shared_scale",
                                 help="Off: each heatmap's colours run from 0 to its own largest value, so each shows "
                                      "its own structure. On: both run to the larger of the two, so colours compare "
                                      "directly.")
zmax = max(float(m["overlap"].max()) for m in metrics.values()) if shared_scale else None
# A and B in rows (titles, numbers, heatmaps), not in two stacks: a title that wraps on one side moves both rows
titles, numbers, heatmaps = st.columns(2), st.columns(4), st.columns(2)
for i, (k, spec) in enumerate(specs.items()):
    m = metrics[k]
    titles[i].markdown(f"**{plain(labels[k])}**")
    numbers[2 * i].metric("Mean module size", f"{m['mean_size']:.1%}", help="share of the full model's parameters")
    numbers[2 * i + 1].metric("Mean pairwise overlap", f"{m['mean_overlap']:.1%}",
                              help="share of the full model's parameters")
    ui.chart(overlap_heatmap(m["overlap"], engine.class_names(spec), f"Weight overlap, run {k}", zmax=zmax,
                             height=390 if ui.presenting() else 480), key=f"mod_overlap_{k}", where=heatmaps[i])
st.caption("Diagonal: a class's own module size. " + (
    "Both heatmaps share one colour scale, so their colours compare directly." if shared_scale else
    "Each heatmap has its own colour scale (its range is on its colour bar), so each shows its own structure: "
    "compare the two by their numbers, or turn on one colour scale for both."))

same_classes = engine.class_names(moda_spec) == engine.class_names(std_spec)
if same_classes:
    ui.chart(module_size_bars({labels[k]: metrics[k]["sizes"] for k in specs},
                              engine.class_names(moda_spec)), key="mod_sizes")
else:
    # different classes: one chart per run, each titled and coloured as its run (A blue, B orange)
    for i, (k, spec) in enumerate(specs.items()):
        ui.chart(module_size_bars({labels[k]: metrics[k]["sizes"]}, engine.class_names(spec),
                                  title=f"Module size per class, run {labels[k]}", first_colour=i),
                 key=f"mod_sizes_{k}")
st.subheader("Where the overlap lives")
st.caption("Mean pairwise overlap contributed by each layer (share of all the model's weights); the bars of a "
           "run add up to its mean pairwise overlap.")
if engine.load_run(moda_spec).model.arch == engine.load_run(std_spec).model.arch:
    ui.chart(overlap_by_layer_pair({labels[k]: metrics[k]["by_layer"] for k in specs}),
             key="mod_layers")
else:
    for i, k in enumerate(specs):
        ui.chart(overlap_by_layer(metrics[k]["by_layer"], f"Where the overlap lives, run {labels[k]}",
                                  colour=PAIR_COLOURS[i]), key=f"mod_layers_{k}")
