"""Compose: pick classes → a smaller network built from their modules, measured next to the full model."""
from __future__ import annotations

import math
import re

import streamlit as st

from dashboard import engine, folders, ui
from dashboard.figures.compose import compose_bars
from dashboard.plain_text import code, plain
from moda_core.store.names import RunRef

FLOPS_GAP = 0.10  # the FLOPs' share exceeds the parameters' by this much: say why

st.title("Compose")
st.caption("Pick the classes you need: their modules are cut out of the trained network and joined into a "
           "physically smaller model that answers only for those classes — no fine-tuning.")

summaries = folders.list_runs()
picker, slider, classes_area = ui.controls_row(3)
with picker:
    spec = ui.pick_run("Run", key="comp_run", summaries=summaries, with_checkpoints=True,
                       prefer=(ui.modular_demo_first, ui.is_modular))
if spec is None:
    st.stop()
run = ui.load_or_stop(spec)
ui.composable_or_stop(spec)
names = engine.class_names(spec)
with slider:
    tau = ui.tau_slider("comp_tau")
# Keep the visitor's classes (by name) across a change of run: those the new run has stay picked; the first
# two classes only when none of them does (or on the first visit).
linked = ui.linked_classes("classes", "comp_classes", len(names), 64)  # ?classes=0,3: logit positions
if linked is not None:
    st.session_state["comp_classes"] = [names[c] for c in linked]
previous = st.session_state.get("comp_classes")
still_valid = [c for c in previous or [] if c in names]
st.session_state["comp_classes"] = still_valid if still_valid or previous == [] else names[:2]
chosen = classes_area.multiselect("Classes of the sub-task", names, key="comp_classes")
if not chosen:
    st.info("Pick at least one class.")
    st.stop()
classes = sorted(names.index(c) for c in chosen)
ui.link("classes", ",".join(str(c) for c in classes))
with st.spinner("Composing and measuring…"):
    report = engine.compose(spec, tau, classes)
c1, c2, c3 = st.columns(3)
# shares of the full model are not changes: no arrow, no colour
c1.metric("Parameters", f"{report['params']:,}", f"{report['params_fraction']:.1%} of {report['full_params']:,}",
          delta_color="off", delta_arrow="off")
c2.metric("FLOPs per image", f"{report['flops']:,}", f"{report['flops_fraction']:.1%} of {report['full_flops']:,}",
          delta_color="off", delta_arrow="off")
one_class = len(classes) == 1
if one_class:
    # a single logit is always the argmax: accuracy would read 100% whatever the module is worth
    auc, full_auc = report.get("one_vs_rest_auc", math.nan), report.get("full_one_vs_rest_auc", math.nan)
    if math.isnan(auc) or math.isnan(full_auc):
        c3.metric("One-vs-rest AUC (all test images)", "—", "no test image of this class, or only those",
                  delta_color="off", delta_arrow="off")
    else:
        change = round(auc - full_auc, 3)
        c3.metric("One-vs-rest AUC (all test images)", f"{auc:.3f}",
                  f"{change:+.3f} vs the full model's logit ({full_auc:.3f})" if change
                  else f"same as the full model's logit ({full_auc:.3f})",
                  delta_color="normal" if change else "off", delta_arrow="auto" if change else "off")
else:
    change = round(100 * (report["accuracy"] - report["full_accuracy"]), 1)
    c3.metric("Accuracy on these classes", f"{report['accuracy']:.1%}",
              f"{change:+.1f} points vs full model ({report['full_accuracy']:.1%})" if change
              else f"same as the full model ({report['full_accuracy']:.1%})",
              delta_color="normal" if change else "off", delta_arrow="auto" if change else "off")
ui.chart(compose_bars(report), key="comp_bars")
if one_class:
    st.caption(f"A module of one class has a single output, which is always the largest: its accuracy would "
               f"read 100% and say nothing, so none is shown. Instead, on all {len(engine.dataset(spec).test):,} "
               f"test images: the one-vs-rest AUC, the chance that an image of class {plain(chosen[0])} gets a "
               "higher score from the module's output than an image of another class (0.5 is chance, 1 a "
               "perfect separation), next to the same measure for the full model's output of that class.")
else:
    st.caption("Full model accuracy is measured on the same test images, choosing only among the same classes' "
               "outputs.")
if report["flops_fraction"] - report["params_fraction"] >= FLOPS_GAP:
    st.caption(f"Why FLOPs fall less than parameters ({report['flops_fraction']:.1%} of the full model's FLOPs, "
               f"{report['params_fraction']:.1%} of its parameters): a convolution's cost grows with the size of "
               "its input, its weights do not. The early and middle convolutions, on larger images, do most of the "
               "computation with few of the weights, and every class's module keeps most of their units (they "
               "detect strokes all classes share: see Activations); the late layers hold most of the weights, and "
               "there each module keeps few units.")
if report.get("kept_whole"):
    with st.expander(f"Kept whole: {len(report['kept_whole'])} operation(s) the composer could not slice"):
        st.caption("Composition stays exact through them, only not smaller there: every module keeps them whole.")
        ui.table([{"operation": node, "why": reason} for node, reason in report["kept_whole"]],
                 hide_index=True, width="stretch")

st.subheader("Download the composed module")
split = engine.dataset(spec).test
mean = ", ".join(f"{v:.4g}" for v in split.mean.flatten().tolist())
std = ", ".join(f"{v:.4g}" for v in split.std.flatten().tolist())
st.caption("A `torch.export` program (.pt2): `torch.export.load(path).module()(x)` runs it with plain PyTorch; "
           f"input: a batch of {tuple(run.model.input_shape)} images normalised as in training — pixel values "
           f"scaled to 0–1, then (x − mean) / std per channel with mean ({mean}) and std ({std}); outputs: the "
           f"logits of classes {', '.join(plain(names[c]) for c in classes)} in that order.")


@ui.fragment
def export_view() -> None:
    """The export button and its download: a click reruns only this part, not the composition above."""
    if st.button("Export as .pt2", key="comp_export"):
        st.session_state["comp_exported"] = (spec, tau, tuple(classes))
    if st.session_state.get("comp_exported") == (spec, tau, tuple(classes)):
        with st.spinner("Exporting…"):
            data = engine.export_bytes(spec, tau, classes)
        epoch = RunRef.parse(spec).epoch
        named = "-".join(re.sub(r"[^\w.+=]+", "_", names[c]).strip("_") or str(c) for c in classes)
        file_name = f"{run.name}{f'-epoch{epoch}' if epoch else ''}-classes-{named}.pt2"
        st.caption(f"Saved as {code(file_name)} (named by class, in the order of the outputs).")
        st.download_button(f"Download module ({len(data) / 1e6:.1f} MB)", data, file_name=file_name,
                           mime="application/octet-stream", key="comp_download")


export_view()
