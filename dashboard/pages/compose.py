"""Compose: pick classes → a smaller network built from their modules, measured next to the full model."""
from __future__ import annotations

import streamlit as st

from dashboard import figures, state, ui

st.title("Compose")
st.caption("Pick the classes you need: their modules are cut out of the trained network and joined into a "
           "physically smaller model that answers only for those classes — no fine-tuning.")

summaries = state.list_runs()
spec = ui.pick_run("Run", key="comp_run", summaries=summaries,
                   prefer=(ui.modular_demo_first, ui.is_modular))
if spec is None:
    st.stop()
run = ui.load_or_stop(spec)
names = state.class_names(spec)
tau = ui.tau_slider("comp_tau")
chosen = st.multiselect("Classes of the sub-task", names, default=names[:2], key="comp_classes")
if not chosen:
    st.info("Pick at least one class.")
    st.stop()
classes = sorted(names.index(c) for c in chosen)
with st.spinner("Composing and measuring…"):
    report = state.compose(spec, tau, classes)
c1, c2, c3 = st.columns(3)
c1.metric("Parameters", f"{report['params']:,}", f"{report['params_fraction']:.1%} of {report['full_params']:,}",
          delta_color="off")
c2.metric("FLOPs per image", f"{report['flops']:,}", f"{report['flops_fraction']:.1%} of {report['full_flops']:,}",
          delta_color="off")
c3.metric("Accuracy on these classes", f"{report['accuracy']:.1%}",
          f"{report['accuracy'] - report['full_accuracy']:+.1%} vs full model ({report['full_accuracy']:.1%})")
st.plotly_chart(figures.compose_bars(report), key="comp_bars")
st.caption("Full model accuracy is measured on the same test images, choosing only among the same classes' "
           "outputs.")

st.subheader("Download the composed module")
st.caption("A `torch.export` program (.pt2): `torch.export.load(path).module()(x)` runs it with plain PyTorch; "
           f"input: a batch of {tuple(run.model.input_shape)} images normalised as in training; outputs: the "
           f"logits of classes {', '.join(names[c] for c in classes)} in that order.")
if st.button("Export as .pt2", key="comp_export"):
    st.session_state["comp_exported"] = (spec, tau, tuple(classes))
if st.session_state.get("comp_exported") == (spec, tau, tuple(classes)):
    with st.spinner("Exporting…"):
        data = state.export_bytes(spec, tau, classes)
    st.download_button(f"Download module ({len(data) / 1e6:.1f} MB)", data,
                       file_name=f"{run.name}-classes-{'-'.join(map(str, classes))}.pt2",
                       mime="application/octet-stream", key="comp_download")
