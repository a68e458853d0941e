"""Swap: repair a weak model's bad class with a strong model's module, by the three strategies at once."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import engine, folders, ui
from dashboard.figures.swap import swap_bars
from dashboard.plain_text import plain
from moda_core.errors import ModaError
from moda_core.replace import STRATEGIES
from moda_core.store.names import RunRef

# one sentence per strategy: what it changes in the weak model
STRATEGY_SENTENCES = {
    "calibrate": "MODA's repair (the paper): a small K×K layer, trained on the weak model's training data, remixes "
                 "the weak logits with the module's logit in the target's place; it may move every class.",
    "normalize": "CNNSplitter-style baseline, no training: the module's output, min-max scaled over the training "
                 "data, replaces the weak model's probability of the target.",
    "affine": "MODA Studio's own strategy (not in the paper): only the target's logit changes, to a·s + c·w + b "
              "of the module's logit s and the weak model's own w, fitted on the training data; every other "
              "logit stays exactly as it was, so another class can only lose a sample where the target now "
              "out-ranks it.",
}
RESULT_KEY = "swap_result"  # {"controls": the controls it was computed for, "reports": strategy → report}

st.title("Swap")
st.caption("A weak model is bad at one class; a strong model trained with MODA has a module for that class. "
           "The swap plugs the module into the weak model by three strategies and measures each as the paper "
           "does: the target class's accuracy before/after and the mean accuracy of the other classes "
           "before/after, with the largest single-class drop beside them.")

summaries = folders.list_runs()
if not folders.loadable_specs(summaries):
    ui.pick_run("Run", key="swap_empty", summaries=summaries)
    st.stop()
c1, c2 = st.columns(2)
with c1:
    weak = ui.pick_run("Weak run (or one of its checkpoints)", key="swap_weak", with_checkpoints=True,
                       summaries=summaries, prefer=lambda s: s.name.startswith("swap-weak"),
                       prefer_spec=lambda spec: "swap-weak@" in spec, shared=False, url="weak",
                       help="RUN @ epoch N is a periodic checkpoint: an early one is under-fit, the last over-fit.")
with c2:
    strong = ui.pick_run("Strong run (module donor)", key="swap_strong", summaries=summaries,
                         prefer=lambda s: s.name.startswith("swap-strong"), shared=False, url="strong")
if weak is None or strong is None:
    st.stop()
if RunRef.parse(weak).path.resolve() == RunRef.parse(strong).path.resolve():
    # a model repaired with its own module measures nothing: refuse before loading or computing anything
    checkpoint = RunRef.parse(weak).epoch is not None
    st.warning(f"The weak and the strong run are the same run ({plain(folders.run_label(strong))}"
               f"{', the weak side one of its checkpoints' if checkpoint else ''}): a swap repairs one model with "
               "another model's module, so pick a different weak run or strong run.")
    st.session_state.pop(RESULT_KEY, None)
    st.stop()
ui.load_or_stop(weak)
ui.load_or_stop(strong)
ui.composable_or_stop(strong)
weak_classes, strong_classes = engine.run_classes(weak), engine.run_classes(strong)
weak_names = dict(zip(weak_classes, engine.class_names(weak), strict=False))
shared = [c for c in weak_classes if c in strong_classes]
if not shared:
    st.warning(f"These runs share no class (weak: {plain(weak_classes)}, strong: {plain(strong_classes)}); pick a "
               "strong run that learned one of the weak run's classes.")
    st.session_state.pop(RESULT_KEY, None)
    st.stop()
# on a projector τ joins the class and the epochs on one row, so that the chart a swap draws is on the first screen
c1, c2, *c3 = st.columns(3 if ui.presenting() else 2)
ui.linked_choice("class", "swap_class", shared, ui.url_int, "class")
if st.session_state.get("swap_class") not in shared:
    st.session_state.pop("swap_class", None)
target = c1.selectbox("Class to repair", shared, format_func=lambda c: weak_names[c], key="swap_class",
                      help="Classes both runs learned (original class ids).")
ui.linked_choice("epochs", "swap_epochs", range(1, 51), ui.url_int, "number of calibration epochs")
st.session_state.setdefault("swap_epochs", 5)
epochs = c2.number_input("Calibration epochs (calibrate only)", min_value=1, max_value=50, key="swap_epochs")
ui.link("class", str(target))
ui.link("epochs", str(int(epochs)))
with c3[0] if c3 else st.container():
    tau = ui.tau_slider("swap_tau")


def strategies() -> None:
    with st.expander("What each strategy does", expanded=False):
        for strategy in STRATEGIES:
            st.markdown(f"- **{strategy}**: {STRATEGY_SENTENCES[strategy]}")


# a result belongs to the controls it was computed for: once they change (or the page is left and the
# widgets come back with other values) it is discarded, never shown against other runs or classes
controls = (weak, strong, int(target), int(epochs), round(float(tau), 2))
if st.button("Run swap", key="swap_go", type="primary"):
    reports = {}
    try:
        for strategy in STRATEGIES:  # each repair runs on the server's board and shows its stages while it runs
            reports[strategy] = engine.swap(weak, strong, target, target, strategy, int(epochs), tau)
    except ModaError as error:
        st.session_state.pop(RESULT_KEY, None)
        st.error(f"The swap did not run: {plain(folders.public(str(error)))}")
        st.stop()
    st.session_state[RESULT_KEY] = {"controls": controls, "reports": reports}
result = st.session_state.get(RESULT_KEY)
if result is not None and result["controls"] != controls:
    del st.session_state[RESULT_KEY]
    result = None
if result is None:
    st.info("Choose the runs and the class, then press **Run swap** to compare the three strategies.")
    strategies()
    st.stop()

reports = result["reports"]
first = next(iter(reports.values()))
ids = list(first["before"])
names = [weak_names.get(int(c), c) for c in ids]
ui.chart(swap_bars(names, [first["before"][c] for c in ids],
                   {s: [r["after"][c] for c in ids] for s, r in reports.items()},
                   target=weak_names[target], height=390 if ui.presenting() else 450), key="swap_bars")
st.caption("The paper reports, on CIFAR-10, a target gain of about +12 points with the other classes' mean "
           "moving by less than 0.5 point. \"Before\" is the weak model alone; every bar is accuracy on the weak "
           "run's test split; a bar at 0% is labelled, as it has no height to see.")
st.markdown(f"**{plain(folders.run_epoch_label(weak))}**, class {plain(weak_names[target])} repaired with the "
            f"module of **{plain(folders.run_epoch_label(strong))}** (τ = {tau:.2f}; the module has "
            f"{first['module_params_fraction']:.1%} of the strong model's weights; calibrate trained its layer for "
            f"{reports['calibrate']['epochs']} epoch{'s' if reports['calibrate']['epochs'] != 1 else ''}).")


def points(value: float) -> str:
    return f"{value * 100:+.1f}"


# short headers, so that the seven columns fit a 1280-px screen (and a projector) without scrolling; each says the
# rest when pointed at
COLUMN_HELP = {
    "target": "The repaired class's test accuracy, before → after the swap.",
    "target gain": "Change of the target's accuracy, in percentage points (the paper's measure).",
    "others' mean": "Mean test accuracy of the other classes, before → after.",
    "others' change": "Change of the other classes' mean accuracy, in points (the paper's measure).",
    "largest drop": "The largest drop of one other class's accuracy, in points.",
    "overall": "Accuracy on all the weak run's test images, before → after (the change in points).",
}
table = pd.DataFrame([{
    "strategy": strategy,
    "target": f"{r['target_before']:.1%} → {r['target_after']:.1%}",
    "target gain": points(r["target_gain"]),
    "others' mean": f"{r['other_mean_before']:.1%} → {r['other_mean_after']:.1%}",
    "others' change": points(r["other_mean_change"]),
    "largest drop": f"{r['other_max_drop'] * 100:.1f}",
    "overall": f"{r['accuracy_before']:.1%} → {r['accuracy_after']:.1%} ({points(r['accuracy_change'])})",
} for strategy, r in reports.items()])
ui.table(table, hide_index=True, key="swap_table", width="stretch",
         column_config={name: st.column_config.TextColumn(name, help=text) for name, text in COLUMN_HELP.items()})
st.caption("Gains, changes and drops in percentage points.")
for strategy, r in reports.items():
    st.markdown(f"**{strategy}** — target {points(r['target_gain'])} points, other classes' mean "
                f"{points(r['other_mean_change'])} points, largest drop {r['other_max_drop'] * 100:.1f} points. "
                f"{STRATEGY_SENTENCES[strategy]}")
strategies()
