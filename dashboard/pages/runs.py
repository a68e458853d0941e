"""Runs & training: the runs in the runs folders, their config and curves; train a new run."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import figures, state, ui
from moda_core.errors import ModaError
from moda_core.train import TrainConfig, train

st.title("MODA Studio")
st.caption("Each row is one training run. MODA runs (α, β, γ > 0) add three activation terms to the "
           "cross-entropy loss so that the trained network comes apart into per-class modules.")

summaries = state.list_runs()
good = [s for s in summaries if not s.get("error")]
if good:
    table = pd.DataFrame([{"run": state.run_label(s["path"]), "model": s["model"], "data set": s["dataset"],
                           "kind": ui.training_kind(s), "α": s["alpha"], "β": s["beta"],
                           "γ": s["gamma"], "status": s["status"], "epochs": s["epochs_done"],
                           "test accuracy": s["test_accuracy"], "checkpoints": len(s["checkpoints"])}
                          for s in good])
    st.dataframe(table, hide_index=True, column_config={
        "test accuracy": st.column_config.NumberColumn(format="percent")})
else:
    folders = ", ".join(f"`{f}`" for f in state.runs_dirs())
    st.info(f"No runs yet in {folders}. Train one below — about a minute for LeNet-5 on the embedded "
            f"digits — or from a terminal: `.venv/bin/python -m moda_core train --model lenet5 --epochs 5`.")
ui.show_broken(summaries)

if good:
    st.subheader("Training curves")
    spec = ui.pick_run("Run", key="runs_run", summaries=summaries, prefer=ui.modular_demo_first)
    run = ui.load_or_stop(spec)
    left, right = st.columns(2)
    left.plotly_chart(figures.history_figure(run.history), key="runs_losses")
    right.plotly_chart(figures.accuracy_figure(run.history), key="runs_accuracy")
    with st.expander("Config (config.json) and metrics (metrics.json)"):
        st.json({"config": run.config, "metrics": run.metrics}, expanded=False)

st.subheader("Train a new run")
st.caption(f"Trains on the embedded MNIST-5k digits (4,000 training images) into `{state.training_dir()}`. "
           "Set α = β = γ = 0 for standard training.")
with st.form("train_form"):
    c1, c2, c3 = st.columns(3)
    model = c1.selectbox("Model", ["lenet5", "mlp", "vgg11"], key="train_model")
    width = c1.select_slider("Width multiplier", [0.25, 0.5, 1.0], value=0.25 if model == "vgg11" else 1.0,
                             key="train_width")
    epochs = c1.number_input("Epochs", min_value=1, max_value=20, value=3, key="train_epochs")
    alpha = c2.number_input("α (affinity weight)", min_value=0.0, max_value=10.0, value=1.0, step=0.1, key="train_alpha")
    beta = c2.number_input("β (dispersion weight)", min_value=0.0, max_value=10.0, value=1.0, step=0.1, key="train_beta")
    gamma = c2.number_input("γ (compactness weight)", min_value=0.0, max_value=10.0, value=0.3, step=0.1,
                            key="train_gamma")
    name = c3.text_input("Run name (empty: model-dataset-kind-time)", key="train_name")
    seed = c3.number_input("Seed", min_value=0, value=0, key="train_seed")
    submitted = st.form_submit_button("Train")

if submitted:
    config = TrainConfig(model=model, dataset="mnist5k", epochs=int(epochs), alpha=alpha, beta=beta, gamma=gamma,
                         width=float(width), seed=int(seed), device="cpu")
    bar = st.progress(0.0, text="starting…")
    chart = st.empty()
    rows: list[dict] = []

    def progress(event) -> None:
        done = ((event.epoch - 1) * event.steps + event.step) / (event.epochs * event.steps)
        bar.progress(min(1.0, done), text=f"epoch {event.epoch}/{event.epochs}, batch {event.step}/{event.steps}")
        if event.kind == "epoch":
            rows.append(event.record)
            chart.plotly_chart(figures.accuracy_figure(rows, "Accuracy per epoch (live)"),
                               key=f"train_live_{len(rows)}")

    try:
        run = train(config, state.training_dir(), name.strip() or None, progress=progress)
    except ModaError as error:
        st.error(f"Training did not start or stopped: {error}")
    else:
        bar.progress(1.0, text="done")
        st.success(f"Trained `{run.path}`: test accuracy {run.metrics['test_accuracy']:.1%} after {run.epoch} "
                   f"epochs ({run.metrics['seconds']:.0f} s). It appears in the list (and on every page) on the next interaction.")
