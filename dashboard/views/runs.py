"""Runs & training: the runs in the runs folders, their config and curves; train a new run (one training
at a time for the whole server: dashboard/training.py)."""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import engine, folders, study_jobs, training, ui
from dashboard.figures.style import method_label
from dashboard.figures.training import accuracy_figure, history_figure, live_modules_figure, runs_overlay_figure
from dashboard.plain_text import code, plain
from moda_core.errors import ModaError
from moda_core.probe import PROBE_IMAGES
from moda_core.run_config import MAX_SEED
from moda_core.store.summary import RunStatus, RunSummary
from moda_core.train import TrainConfig

st.title("Runs & training")
st.caption("Each row is one training run. MODA runs (α, β, γ > 0) add three activation terms to the "
           "cross-entropy loss so that the trained network comes apart into per-class modules.")

# Per-model default width for the form (applied whenever the model changes): the convolutional models at a
# quarter width, so that a student does not start a full-width VGG on a laptop CPU (the demo's VGG is ×0.25).
# The models, widths and epochs the form offers are the browser's limits (training.LIMITS), which Resume obeys too.
MODEL_WIDTHS = {"lenet5": 1.0, "mlp": 1.0, "vgg11": 0.25, "resnet18": 0.25, "mobilenet": 0.25, "vit": 1.0}
WIDTHS = list(training.LIMITS.widths)
CLASSES = training.form_classes()
# what the engine's messages call command-line flags, in the form's words
def for_visitors(message: str) -> str:
    """An engine message as a visitor may read it: without server paths. Engine messages carry no command-line
    flags (``ModaError.hint`` holds those, for the command line), so nothing else is rewritten."""
    return folders.public(message)


def run_row(s: RunSummary, live: training.TrainingStatus | None = None) -> dict[str, Any]:
    """One row of the runs table: what makes two accuracies comparable (method and MODA's loss weights, model and
    width, classes, data and its fraction), then the epochs and the test accuracy."""
    facts = {"width": None, "classes": None, "data fraction": None, **engine.run_facts(s.path)}
    width = facts["width"]
    model = s.model or ""
    fraction = facts["data fraction"]
    data = s.dataset or ""
    method, _ = engine.run_method(s)  # with its weights by their own names when not the method's defaults
    return {"run": folders.run_label(str(s.ref)), "status": status_text(s, live), "method": method,
            "model": f"{model} ×{width:g}" if isinstance(width, (int, float)) and width != 1 and model else model,
            "classes": facts["classes"],
            "data": f"{data} · {fraction:g}%" if fraction is not None and fraction != 100 and data else data,
            "epochs": s.epochs_done,
            "accuracy": None if s.test_accuracy is None else 100 * s.test_accuracy}


def status_text(summary: RunSummary, slot_status: training.TrainingStatus | None = None) -> str:
    """The table's status of a run: a running one says how far it got, "running, epoch k/n" (k finished
    epochs: 0 before the first ends; n from its config, else from the training slot's status)."""
    if summary.status is not RunStatus.RUNNING:
        return summary.status.value
    planned = summary.epochs
    if planned is None and slot_status is not None and slot_status.busy:
        planned = slot_status.epochs or None
    return f"running, epoch {summary.epochs_done}/{planned if planned is not None else '?'}"


def resume_plan(path: str | Path) -> tuple[TrainConfig | None, str | None]:
    """An interrupted run's stored training settings, and why the browser may not resume it (None: it may):
    its config does not load (no settings then), or they exceed the form's limits (``training.LIMITS``)."""
    try:
        config = engine.stored_training(path)
    except ModaError as error:
        return None, for_visitors(str(error))
    except (ValueError, TypeError) as error:
        return None, f"its config does not load ({type(error).__name__})"
    config.device = "cpu"
    return config, training.LIMITS.refusal(config)


def run_name_problem(name: str, folder: Path) -> str | None:
    """Why a typed run name cannot be used (None when it can): the run store's rule (``engine.check_run_name``),
    and not taken yet."""
    if not name:
        return None
    try:
        engine.check_run_name(name)
    except ModaError as error:
        return str(error)
    if (folder / name).exists():
        return f"a run named '{name}' already exists in this folder: pick another name"
    return None


summaries = folders.list_runs()
openable = [s for s in summaries if folders.openable(s)]
slot = training.slot()
if summaries:
    # what makes two accuracies comparable first (method, model, width, classes, data), then the loss weights
    live = slot.status()
    # compact: the model with its width, the data with its fraction, MODA's loss weights with the method (a run's
    # checkpoints are offered where they are used), so that the table fits a 1280-px screen and a projector
    table = pd.DataFrame([run_row(s, live) for s in summaries])
    ui.table(table, formats={"accuracy": "%.1f%%"}, hide_index=True, width="stretch", column_config={
        "model": st.column_config.TextColumn(help="the model, ×width multiplier of its layers when narrowed"),
        "classes": st.column_config.TextColumn(help="the classes the run was trained on (all: every class of "
                                                    "the data set); fewer classes make a high accuracy easier"),
        "data": st.column_config.TextColumn(help="the data set, and the share of its training images used"),
        "accuracy": st.column_config.NumberColumn(format="%.1f%%", help="test accuracy, on the test images of the "
                                                  "run's own classes (see classes)"),
        "method": st.column_config.TextColumn(help="how it was trained; in brackets its loss weights by their "
                                                   "names when they are not the method's defaults (the training "
                                                   "curves below name every run's weights)"),
        "status": st.column_config.TextColumn(help="complete; running, epoch k/n (being trained: k of its n "
                                                   "epochs finished); interrupted (stopped "
                                                   "before its last epoch: resume or delete it below the table); "
                                                   "broken (does not load: see below)")})
else:
    st.info(f"No runs yet in {folders.folders_text()}. Train one below — about a minute for LeNet-5 on the embedded "
            f"digits — or from a terminal: `moda train --model lenet5 --epochs 5`.")
# a run being trained before its first epoch ends does not load yet, but it is not broken: its row says
# "running, epoch 0/n"
ui.show_broken([s for s in summaries if s.status is not RunStatus.RUNNING])
folder = folders.training_folder()
interrupted = [s for s in summaries if s.status is RunStatus.INTERRUPTED and folder is not None
               and s.path.parent.resolve() == folder.path.resolve()]
if interrupted:
    st.warning(f"{len(interrupted)} run(s) stopped before their last epoch (Stop was pressed, the server stopped, or "
               "the training failed): resume one from its last saved epoch, or delete it to free its name.")
    for s in interrupted:
        label = folders.run_label(str(s.ref))
        c1, c2, c3 = st.columns([3, 1, 1])
        c1.markdown(f"{code(label)}: {plain(s.epochs_done)} of {plain(s.epochs or '?')} epochs saved")
        config, refusal = resume_plan(s.path)
        if refusal:  # the button stays disabled and says why (a run beyond the limits: the command line)
            command = "moda train --resume --name " + shlex.quote(s.name)
            st.caption(f"{code(label)} cannot be resumed from the browser: {plain(refusal)}." + (
                f" Resume it on the command line instead: {code(command)} in its runs folder."
                if config is not None else ""))
        if c2.button("Resume", key=f"resume_{s.name}", disabled=slot.status().busy or refusal is not None):
            try:
                slot.start(config, folder.path, s.name, folder.label, shown=for_visitors, resume=True)
            except ModaError as error:
                st.error(f"{code(label)} cannot be resumed: {plain(for_visitors(str(error)))}")
            else:
                st.rerun()
        if c3.button("Delete", key=f"delete_{s.name}"):
            st.session_state["runs_delete"] = str(s.ref)
        if st.session_state.get("runs_delete") == str(s.ref):
            st.error(f"Delete {code(label)} and its {plain(s.epochs_done)} saved epoch(s)? "
                     "This cannot be undone.")
            if st.button(f"Yes, delete {plain(s.name)}", key=f"delete_yes_{s.name}"):
                st.session_state.pop("runs_delete", None)
                try:
                    engine.discard_run(s.path)  # refused while a process trains into it
                except ModaError as error:
                    st.error(f"{code(label)} could not be deleted: {plain(for_visitors(str(error)))}")
                else:
                    st.rerun()



def curves() -> None:
    """A run's training curves, and several runs' on one chart."""
    st.subheader("Training curves")
    spec = ui.pick_run("Run", key="runs_run", summaries=summaries, prefer=ui.modular_demo_first)
    run = ui.load_or_stop(spec)
    left, right = st.columns(2)
    terms = engine.loss_terms(spec)  # name → trained (else measured)
    ui.chart(history_figure(run.history, terms=tuple(terms), trained=terms), key="runs_losses", where=left)
    if [term for term, trained in terms.items() if trained] == ["ce"] and len(terms) > 1:
        left.caption("A standard run: only the cross-entropy was trained; affinity, dispersion and compactness "
                     "(dashed) were measured, not trained.")
    ui.chart(accuracy_figure(run.history), key="runs_accuracy", where=right)
    listed = next((s for s in summaries if str(s.ref) == spec or str(s.path) == spec), None)
    method, weights = engine.run_method(listed) if listed is not None else (None, None)
    if weights:
        right.caption(f"Trained by {method.split(' (')[0]} with the loss weights {weights}.")
    with st.expander("Config (config.json) and metrics (metrics.json)"):
        st.json(json.loads(folders.public(json.dumps({"config": run.config, "metrics": run.metrics}))), expanded=False)

    st.subheader("Several runs on one chart")
    choices = folders.loadable_specs(summaries)
    if "runs_overlay" not in st.session_state:  # at first the run above and its twins (same model and data)
        st.session_state["runs_overlay"] = list(dict.fromkeys([spec, *study_jobs.twins(summaries, spec).values()]))
    st.session_state["runs_overlay"] = [c for c in st.session_state["runs_overlay"] if c in choices]
    overlaid = st.multiselect("Runs to draw together", choices, key="runs_overlay", format_func=folders.run_label,
                              help="Each run's test accuracy and cross-entropy loss per epoch, one colour per run.")
    histories, unloadable = {}, []
    for choice in overlaid:
        loaded, error = engine.try_load(choice)
        if loaded is None:
            unloadable.append(f"{code(folders.run_label(choice))} ({plain(error)})")
        else:
            histories[folders.run_label(choice)] = loaded.history
    if histories:
        left, right = st.columns(2)
        ui.chart(runs_overlay_figure(histories), key="runs_overlay_accuracy", where=left)
        ui.chart(runs_overlay_figure(histories, "ce", "Cross-entropy loss per epoch",
                                     "cross-entropy loss"), key="runs_overlay_loss", where=right)
    else:
        st.caption("Pick runs above to draw their curves together.")
    if unloadable:
        st.caption("Left out, as they do not load: " + "; ".join(unloadable) + ".")


st.subheader("Train a new run")
if folder is None:
    st.info("Training from the browser is off on this server: every configured runs folder is read-only. "
            "Train from a terminal instead: `moda train --model lenet5 --epochs 5`.")
    if openable:
        curves()
    st.stop()
st.caption(f"Trains on the embedded MNIST-5k digits (4,000 training images) into {code(folder.label)}, one training "
           "at a time for everyone using this server. Set α = β = γ = 0 for standard training.")
busy = slot.status().busy


def _model_default_width() -> None:
    st.session_state["train_width"] = MODEL_WIDTHS.get(st.session_state["train_model"], 1.0)


FEW_STEPS_KEY = "train_few_steps"  # the form's settings that give few steps, until Train anyway or a change


def start_training(config: TrainConfig, name: str | None, then: tuple[TrainConfig, ...] = ()) -> None:
    """Start ``config`` (and ``then`` after it) on the server's training slot, or say why it did not start."""
    try:
        slot.start(config, folder.path, name, folder.label, shown=for_visitors, then=then)
    except training.TrainingBusy as error:
        st.warning(f"{plain(str(error))}. Wait for it to finish: this page updates by itself.")
    except ModaError as error:
        st.error(f"Training did not start: {plain(for_visitors(str(error)))}")
    else:
        st.session_state.pop(FEW_STEPS_KEY, None)
        st.rerun()  # redraw with the form disabled and the progress below


st.markdown("**Lecture presets**: one click trains a MODA run and then its standard-trained twin (the same model, "
            "data and seed), each keeping a checkpoint every epoch, so that Modules over training and Compare show "
            "them side by side.")
for column, preset in zip(st.columns(len(training.PRESETS)), training.PRESETS, strict=True):
    moda_seconds, twin_seconds = preset.seconds
    if column.button(f"Train {preset.title}: MODA + twin", key=f"preset_{preset.model}", disabled=busy,
                     help=f"α, β, γ = 1, 1, 0.3, then 0, 0, 0; batches of {preset.batch_size}, all 4,000 training "
                          "images, seed 0."):
        first, *then = preset.configs()
        start_training(first, None, tuple(then))
    column.caption(f"About {moda_seconds} s + {twin_seconds} s on a 2-core laptop CPU (measured), ≥ "
                   f"{preset.accuracy:.0%} test accuracy: {preset.shows}.")

c1, _, _ = st.columns(3)
model = c1.selectbox("Model", list(training.LIMITS.models), key="train_model", on_change=_model_default_width,
                     help="Picking a model sets its width multiplier to a default a laptop CPU trains in minutes.")
st.session_state.setdefault("train_width", MODEL_WIDTHS.get(model, 1.0))
with st.form("train_form"):
    c1, c2, c3 = st.columns(3)
    width = c1.select_slider("Width multiplier", WIDTHS, key="train_width",
                             help="1 is the full model; VGG, ResNet and MobileNet default to ×0.25 on CPU.")
    epochs = c1.number_input("Epochs", min_value=1, max_value=training.LIMITS.max_epochs, value=5, key="train_epochs")
    alpha = c2.number_input("α (affinity weight)", min_value=0.0, max_value=10.0, value=1.0, step=0.1,
                            key="train_alpha")
    beta = c2.number_input("β (dispersion weight)", min_value=0.0, max_value=10.0, value=1.0, step=0.1,
                           key="train_beta")
    gamma = c2.number_input("γ (compactness weight)", min_value=0.0, max_value=10.0, value=0.3, step=0.1,
                            key="train_gamma")
    name = c3.text_input("Run name (empty: model-dataset-method-time)", key="train_name",
                         help="letters, digits, '.', '_' and '-', not starting with '.' or '-'")
    seed = c3.number_input("Seed", min_value=0, max_value=MAX_SEED, value=0, key="train_seed",
                           help=f"a whole number from 0 to {MAX_SEED:,}, as on the command line")
    # the classes on a row of their own: ten chips do not fit a third of the form
    chosen = st.multiselect("Classes", CLASSES, default=CLASSES, key="train_classes",
                            help=f"The digits to learn (at least {training.LIMITS.min_classes}); fewer classes "
                                 "train faster and make a high accuracy easier.")
    c1, c2, c3 = st.columns(3)
    checkpoint_every = c1.number_input(
        "Checkpoint every N epochs (0: final weights only)", min_value=0, max_value=training.LIMITS.max_epochs,
        value=1, key="train_checkpoint_every",
        help=f"Keeps the weights every N epochs: module size and overlap are drawn live at each checkpoint, and "
             f"Modules over training follows the run through them. A run keeps at most "
             f"{training.LIMITS.max_checkpoints} checkpoints: with more epochs, N is raised to fit (20 epochs: "
             "every 2).")
    low, high = training.LIMITS.fractions
    fraction = c2.slider("Data fraction (share of each class's training images)", min_value=low, max_value=high,
                         value=high, step=0.05, format="%.2f", key="train_fraction",
                         help="A stratified share of the 4,000 training images, the same for every class unless "
                              "one class is made scarce.")
    scarce = c3.selectbox("Scarce class (for a weak model on Swap)", [None, *CLASSES], key="train_scarce",
                          format_func=lambda c: "none" if c is None else f"digit {c}",
                          help="Train this class on only a small share of its images: the model comes out weak "
                               "on it, ready to be repaired with a strong run's module on the Swap page.")
    low, high = training.LIMITS.scarce_fractions
    scarce_fraction = c3.number_input("Scarce class's data fraction", min_value=low, max_value=high, value=0.02,
                                      step=0.01, format="%.2f", key="train_scarce_fraction",
                                      help="Share of the scarce class's training images kept (with none picked "
                                           "above, it is not used).")
    submitted = st.form_submit_button("Train", disabled=busy)

if submitted:
    try:
        problem = run_name_problem(name.strip(), folder.path)
        if problem:
            raise ModaError(problem)
        config = training.form_config(model=model, epochs=int(epochs), alpha=alpha, beta=beta, gamma=gamma,
                                      width=float(width), seed=int(seed),
                                      checkpoint_every=int(checkpoint_every), classes=chosen,
                                      fraction=float(fraction), scarce=scarce,
                                      scarce_fraction=float(scarce_fraction))
        config.validate()
        steps = training.optimisation_steps(config)
    except ModaError as error:
        st.session_state.pop(FEW_STEPS_KEY, None)
        st.error(f"Training did not start: {plain(for_visitors(str(error)))}")
    else:
        if steps < training.FEW_STEPS:
            st.session_state[FEW_STEPS_KEY] = (config, name.strip() or None, steps)
        else:
            start_training(config, name.strip() or None)
few = st.session_state.get(FEW_STEPS_KEY)
if few is not None:
    config, few_name, steps = few
    per_epoch = steps // config.epochs
    st.warning(f"These settings give only {steps} optimisation steps in all ({config.epochs} epoch"
               f"{'s' if config.epochs != 1 else ''} × {per_epoch} batch{'es' if per_epoch != 1 else ''} of "
               f"{config.batch_size} images): the model will come out badly under-trained, its accuracy far below "
               f"what the method can reach. At least {training.FEW_STEPS} steps are advised: more epochs or a "
               "larger data fraction, or one of the lecture presets above.")
    if st.button("Train anyway", key="train_anyway", disabled=slot.status().busy):
        start_training(config, few_name)


def live_modules_chart(status: training.TrainingStatus) -> int:
    """Module size and overlap at the session's τ of each state the training saved (and of its twin), as the
    training slot's background worker decomposes them on a few hundred training images; returns how many
    states are still being decomposed."""
    tau = ui.shared_tau()
    live = slot.live_modules(tau)
    series = {}
    if live.run["epoch"]:
        trained = folders.run_label(live.run_spec) if live.run_spec else status.run
        series[f"{method_label(live.method)}: {trained}"] = live.run
    twin_label = ""
    if live.twin is not None and series:
        final = len(live.twin["epoch"]) == 1
        twin_label = f"{method_label(live.twin_method)}: {folders.run_label(live.twin_spec)}" + (
            " (final weights)" if final else "") + folders.unfinished_note(summaries, live.twin_spec)
        series[twin_label] = live.twin
    methods = {label: method for label, method in zip(series, [live.method, live.twin_method], strict=False)}
    every = status.checkpoint_every
    if series:
        ui.chart(live_modules_figure(series, methods, tau, status.epochs, levels=[twin_label]),
                 key="train_live_modules")
        st.caption(f"At each checkpoint, the saved weights decomposed at τ = {tau:.2f} (the pages' τ: set it on any "
                   f"page's slider) on a fixed set of up to {PROBE_IMAGES} training images, every class "
                   "present. Modules over training measures them again on all training images, with the test "
                   "accuracy, once the training is done.")
    elif every:
        st.caption(f"Module size and overlap at τ = {tau:.2f} appear here at each checkpoint (every "
                   f"{'epoch' if every == 1 else f'{every} epochs'}).")
    else:
        st.caption("This training keeps no periodic checkpoints: its modules are drawn once, after its last epoch "
                   "(set Checkpoint every N epochs to watch them form).")
    if live.pending:
        st.caption(f"Decomposing {live.pending} saved state{'s' if live.pending != 1 else ''} at τ = {tau:.2f}…")
    if series and live.twin_spec and not twin_label and not live.pending:
        st.caption(f"Its twin {code(folders.run_label(live.twin_spec))} has no state to compare with.")
    elif series and not live.twin_spec and not live.pending:
        st.caption("No twin of this run in the runs folders (the same model, width, classes and data fractions "
                   "trained another way) to draw next to it.")
    if live.note:
        st.caption(plain(for_visitors(live.note)))
    return live.pending


@st.fragment(run_every=1.0 if slot.status().busy or slot.live_modules(ui.shared_tau()).pending else None)
def training_progress() -> None:
    """The shared training's progress, redrawn every second while it runs (every session sees it)."""
    status = slot.status()
    if status.busy and status.stopping:
        st.info(f"Stopping {plain(status.run)} after the current step: its finished epochs stay, and it will be "
                "listed as interrupted, to resume later.")
    elif status.busy:
        st.info(f"{plain(status.busy_message())}. It trains on the server: you may leave this page or close the tab, "
                "and come back to see how far it got.")
        st.button("Stop", key="train_stop", on_click=slot.stop,
                  help="End this training after its current step (anyone using this server may): its finished "
                       "epochs stay, and the run is listed as interrupted, to resume or delete.")
    if status.busy:
        st.progress(status.fraction, text=f"epoch {status.epoch}/{status.epochs}, batch {status.step}/{status.steps}"
                    if status.epoch else "loading the data and building the model…")
        if status.history:
            left, right = st.columns(2)
            ui.chart(accuracy_figure(status.history, "Accuracy per epoch (live)", status.epochs), key="train_live",
                     where=left)
            with right:
                live_modules_chart(status)
        st.session_state["train_seen_busy"] = True
    elif status.outcome:
        if st.session_state.pop("train_seen_busy", False):
            st.rerun()  # the training just ended: redraw the whole page (its run joins the table)
        if status.outcome == "done":
            st.success(f"{plain(status.message)} It appears in the list (and on every page)"
                       + (": Modules over training follows it through its checkpoints." if status.checkpoint_every
                          else "."))
        else:
            (st.warning if status.outcome == "stopped" else st.error)(plain(for_visitors(status.message)))
        if status.history:  # the last training's curves stay until the next one starts
            left, right = st.columns(2)
            ui.chart(accuracy_figure(status.history, "Accuracy per epoch", status.epochs), key="train_live",
                     where=left)
            with right:
                pending = live_modules_chart(status)
            if pending:
                st.session_state["train_live_pending"] = True
            elif st.session_state.pop("train_live_pending", False):
                st.rerun()  # all drawn: one page run without the once-a-second redraw


training_progress()
if openable:
    curves()
