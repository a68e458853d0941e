"""Compare: standard training vs MODA vs MwT on the same models, from bench/compare.py's table."""
from __future__ import annotations

import streamlit as st

from dashboard import engine, folders, ui
from dashboard.figures.compare import compare_accuracy, compare_cost, compare_module_size, compare_overlap, model_label
from dashboard.figures.style import method_label
from moda_core.comparison import CompareFileError

REGENERATE = ("`.venv/bin/python -m bench.compare --out assets/results/compare.csv` writes it (`--quick --out "
              "FILE.csv` writes a version that takes minutes instead of the full run to a file of your own)")

st.title("Compare")
st.caption("Three ways to get per-class modules out of one model, on the same data: **standard training** "
           "followed by the same activation-rate decomposition, **MODA** (activation-driven training, this "
           "tool) and **MwT** (*Modularizing while Training*, ICSE 2024: the mask-based baseline, which "
           "learns a mask per class while it trains).")

path = folders.compare_csv_path()
if not path.exists():
    st.info(f"No comparison table yet at `{folders.shown_path(path)}`. {REGENERATE}; then reload this page. "
            f"Set `{folders.COMPARE_ENV}` to show a table kept elsewhere.")
    st.stop()
try:
    table = engine.compare_table(path)
except CompareFileError as error:
    st.error(f"The comparison table cannot be shown: {folders.public(str(error))} {REGENERATE}.")
    st.stop()
overhead, overhead_problem = None, None
try:
    overhead = engine.train_overhead(folders.overhead_json_path(path))
except CompareFileError as error:
    overhead_problem = folders.public(str(error))
rows = table.to_dict("records")

left, right = st.columns(2)
ui.chart(compare_module_size(rows), key="cmp_sizes", where=left)
left.caption("Module size: the share of the model's weights that one class's module keeps. Smaller modules "
             "mean smaller networks when you reuse a few classes.")
ui.chart(compare_overlap(rows), key="cmp_overlap", where=right)
right.caption("Overlap: the share of the weights that two class modules both keep, averaged over all pairs "
              "of classes. Less overlap means the classes really live in separate parts of the network.")

SMALL_STANDARD = 0.20  # a standard-trained model whose modules keep less than this share: say why


def small_standard_modules(rows: list[dict]) -> list[str]:
    """For each model whose standard-trained modules are already small, why: the share of its weights in fully
    connected layers, where even standard training's units serve few classes."""
    notes = []
    for row in rows:
        if row["method"] != "standard" or not row["mean_module_size"] < SMALL_STANDARD:
            continue
        shares = engine.fully_connected_share(str(row["model"]), float(row["width"]))
        if shares is None:
            continue
        linear, total = shares
        moda = next((r for r in rows if (r["model"], r["width"], r["method"]) == (row["model"], row["width"], "moda")),
                    None)
        versus = "" if moda is None else (f"; MODA: {moda['mean_module_size']:.1%} and "
                                          f"{moda['mean_overlap']:.1%}")
        notes.append(
            f"Why a standard-trained {model_label(row)} already has small modules (mean size "
            f"{row['mean_module_size']:.1%}, overlap {row['mean_overlap']:.1%}{versus}): {linear / total:.1%} of its "
            f"{total:,} parameters sit in its fully connected layers, whose units in a trained classifier already "
            f"fire for few classes, so each class's module keeps a small part of them; its convolutions, which every "
            f"module keeps nearly whole, hold only {1 - linear / total:.1%}. MODA's difference shows on models whose "
            "weights sit mostly in convolutions.")
    return notes


for note in small_standard_modules(rows):
    st.caption(note)

ui.chart(compare_accuracy(rows), key="cmp_accuracy")
st.caption("Left: each trained model's accuracy on all test images. Right: modules composed for two classes, "
           "averaged over the class pairs, next to the standard model answering the same two-class questions "
           "(grey): a good module loses little against it.")

device, ratios = overhead if overhead else (None, None)
ui.chart(compare_cost(rows, ratios, device), key="cmp_cost")
st.caption("Training time divided by standard training's time on the same model: 1 (dashed line) costs the "
           "same as standard training, 2 takes twice as long."
           + (f" The right panel times single training steps (`{folders.OVERHEAD_JSON}`) of "
              + ("the same models." if set(ratios) <= {str(r["model"]) for r in rows} else
                 f"other models than the left panel's ({', '.join(sorted(ratios))}, at the widths "
                 "bench/train_overhead.py builds them), so compare the two panels by method, not by bar.")
              if ratios else ""))
if overhead_problem:
    st.warning(f"Step-time ratios left out: {overhead_problem}")

st.subheader("The table")
# as the README's table: readable, short headers (each explained when pointed at), percentages with one decimal as on
# every chart (the file keeps shares 0–1), time and pair accuracy each with its reference in brackets, so that it fits
# a 1280-px screen; the seed and epoch budget are in the caption
HEADERS = {  # shown column → help
    "model": "The model and its width multiplier.",
    "method": "How it was trained.",
    "accuracy": "Test accuracy of the whole model, all classes.",
    "s / epoch (× std.)": "Seconds per training epoch, and ÷ standard training's on the same model.",
    "module": "Mean module size: the share of the weights one class's module keeps.",
    "overlap": "Mean pairwise overlap: the share of the weights two classes' modules both keep.",
    "pair model": "Parameters of a model composed for two classes ÷ the full model's, mean over all class pairs.",
    "pair acc. (std.)": "Accuracy of the composed two-class models on their two classes (no fine-tuning), mean over "
                        "all class pairs; in brackets the standard model restricted to the same classes' outputs.",
}


def percent(value: float) -> str:
    return f"{100 * value:.1f}%" if value == value else "—"  # NaN: not measured


def number(value: float, pattern: str) -> str:
    return pattern.format(value) if value == value else "—"


shown = [{
    "model": model_label(row), "method": method_label(str(row["method"])),
    "accuracy": percent(row["test_accuracy"]),
    "s / epoch (× std.)": f"{number(row['seconds_per_epoch'], '{:.2f} s')} "
                          f"({number(row['time_ratio_vs_standard'], '×{:.2f}')})",
    "module": percent(row["mean_module_size"]), "overlap": percent(row["mean_overlap"]),
    "pair model": percent(row["pair_params_fraction"]),
    "pair acc. (std.)": f"{percent(row['pair_composed_accuracy'])} ({percent(row['pair_standard_accuracy'])})",
} for row in table.to_dict("records")]
ui.table(shown, hide_index=True, width="stretch",
         column_config={name: st.column_config.TextColumn(name, help=text) for name, text in HEADERS.items()})
budgets = engine.compare_budgets(table)
seeds = ", ".join(f"{s:g}" for s in budgets["seeds"])
epochs = ", ".join(f"{e:g}" for e in budgets["epochs"])
uneven = ", ".join(model_label(u) for u in budgets["uneven"])
same = (f"Not like for like: the methods of {uneven} used different seeds or epoch budgets (seeds {seeds}; "
        f"epochs {epochs})." if budgets["uneven"] else
        f"All methods used one seed ({seeds}) and one epoch budget ({epochs} epochs) per model, so the rows "
        "compare like for like.")
st.caption(f"From `{folders.shown_path(path)}`; {REGENERATE}. {same} One row per model × method; accuracies, "
           "module sizes and overlaps in percent (the file keeps them as shares 0–1); point at a column's name for "
           "what it measures.")
if budgets["uneven"]:
    st.warning(same)
