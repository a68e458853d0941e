"""MODA vs MwT vs standard training, side by side: one harness, same data, seed and epoch budget.

For each model on mnist5k, trains standard (then the same activation-rate decomposition, post hoc),
MODA (α=1, β=1, γ=0.3) and MwT (mask baseline, α=0.5, β=1.5), and reports per method: test
accuracy, training seconds per epoch and its ratio to standard, mean module size, mean pairwise
weight overlap, and over all class pairs the composed module's accuracy next to the standard model's
on the same pairs. Prints the table; ``--out FILE.csv`` writes it with its Markdown next to it (``.md``): the
dashboard's Compare page reads assets/results/compare.csv.

    python -m bench.compare                  # LeNet-5, VGG11, ResNet-18, MobileNet (width 0.25), 15 epochs
    python -m bench.compare --quick          # 2 epochs: minutes on a CPU (add --out /tmp/compare.csv to keep it)
    # the converged table of the README (100 epochs for every model; VGG11 reuses the demo runs, which
    # are 100-epoch runs; ResNet-18 and MobileNet took 70 and 45 minutes, one thread each, side by side):
    python -m bench.compare --models lenet5 vgg11 --epochs 100 --reuse assets/demo --merge \
        --timings-from bench/results/compare-e15.csv --out assets/results/compare.csv
    python -m bench.compare --models resnet18 mobilenet --epochs 100 --runs-dir runs/compare --merge \
        --timings-from bench/results/compare-e15.csv --out assets/results/compare.csv

``--reuse DIR``: a finished run in DIR trained with exactly the settings a row needs (model, width,
epochs, seed, method and α β γ, data) is used instead of training one; it is only read (decomposed in
memory). ``--merge``: rows of the existing output table for models not run now are kept (each row
states its own epoch budget). ``--timings-from CSV``: take seconds per epoch and the time ratio from
that table's rows of the same model, width and method — per-epoch cost does not depend on the
budget, and runs trained on a shared, busy CPU do not time well.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.common import METHODS, BenchParser, log, median_epoch_seconds, show
from moda_core import runs as run_store
from moda_core.comparison import COMPARE_COLUMNS, compare_markdown, read_compare_table, write_compare_table
from moda_core.decompose import decompose
from moda_core.io import atomic_write_bytes
from moda_core.metrics import subtask_sets, subtask_sweep
from moda_core.runs import run_dataset
from moda_core.summary import module_summary
from moda_core.train import TrainConfig, setting_differences, train


def find_reusable(folder: Path, config: TrainConfig):
    """A finished run in ``folder`` trained with ``config``'s settings (``SAME_TRAINING``), loaded; or None."""
    for entry in run_store.list_runs(folder):
        if entry.status is not run_store.RunStatus.COMPLETE:
            continue
        stored = run_store.read_config(entry.path).get("train", {})
        if not setting_differences(stored, config) and not stored.get("class_fractions"):
            return run_store.load_run(entry.path)
    return None


def main() -> None:
    parser = BenchParser(__doc__, quick={"epochs": 2},
                         out="write the table here as CSV, its Markdown next to it (.md); the Compare page's is "
                             "assets/results/compare.csv")
    parser.add_argument("--models", nargs="+", default=["lenet5", "vgg11", "resnet18", "mobilenet"])
    parser.add_argument("--width", type=float, default=0.25, help="width multiplier (LeNet-5 stays full width)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tau", type=float, default=0.9)
    parser.add_argument("--runs-dir", help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--reuse", type=Path, help="use finished runs with the same settings from this folder "
                                                    "(read only) instead of training them")
    parser.add_argument("--merge", action="store_true", help="keep the --out table's rows of models not run now")
    parser.add_argument("--timings-from", type=Path, help="take seconds per epoch and time ratios from this "
                                                          "table (same model, width and method)")
    args = parser.parse_args()
    if args.merge and not args.out:
        parser.error("--merge keeps rows of the --out table: name it")
    rows = []
    reused: set[Path] = set()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        runs_dir = Path(args.runs_dir or scratch)
        for model in args.models:
            width = 1.0 if model in ("lenet5", "mlp") else args.width
            runs = {}
            for method, weights in METHODS.items():
                config = TrainConfig(model=model, width=width, epochs=args.epochs, seed=args.seed,
                                     track_modular_terms=False, **weights)
                found = find_reusable(args.reuse, config) if args.reuse else None
                if found is not None:
                    reused.add(found.path)
                    runs[method] = found
                else:
                    runs[method] = train(config, runs_dir, f"{model}-w{width}-{method}-e{args.epochs}-s{args.seed}")
                log(f"[{time.perf_counter() - started:6.0f} s] {'reused ' + str(found.path) if found else 'trained'} "
                    f"{model} {method}: test accuracy {runs[method].metrics['test_accuracy']:.4f}")
            standard = runs["standard"]
            test = run_dataset(standard).test
            pairs = subtask_sets(standard.model.arch["num_classes"], [2], samples=10_000)

            for method, run in runs.items():
                masks = decompose(run, args.tau, save=run.path not in reused).masks  # reused runs: only read
                summary = module_summary(run.model, masks)
                sweep = subtask_sweep(run.model, masks, test, pairs, reference=standard.model)
                rows.append({
                    "model": model, "width": width, "method": method, "epochs": args.epochs, "seed": args.seed,
                    "test_accuracy": run.metrics["test_accuracy"], "seconds_per_epoch": median_epoch_seconds(run),
                    "time_ratio_vs_standard": median_epoch_seconds(run) / median_epoch_seconds(standard),
                    "mean_module_size": summary.mean_size, "mean_overlap": summary.mean_overlap,
                    "pair_params_fraction": statistics.mean(r["params_fraction"] for r in sweep),
                    "pair_composed_accuracy": statistics.mean(r["accuracy"] for r in sweep),
                    "pair_standard_accuracy": statistics.mean(r["reference_accuracy"] for r in sweep),
                })
    out = args.out
    table = pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))
    if args.timings_from:
        timed = read_compare_table(args.timings_from).set_index(["model", "width", "method"])
        for index, row in table.iterrows():
            key = (row["model"], float(row["width"]), row["method"])
            if key in timed.index:
                for column in ("seconds_per_epoch", "time_ratio_vs_standard"):
                    table.at[index, column] = timed.loc[key, column]
            else:
                log(f"note: {args.timings_from} has no row for {key}: its own timing is kept")
    if args.merge and out.exists():
        previous = read_compare_table(out)[list(COMPARE_COLUMNS)]
        kept = previous[~previous["model"].isin(set(table["model"]))]
        order = list(dict.fromkeys([*previous["model"], *table["model"]]))
        table = pd.concat([table, kept], ignore_index=True)
        table = table.sort_values("model", key=lambda c: c.map(order.index), kind="stable").reset_index(drop=True)
    table[["epochs", "seed"]] = table[["epochs", "seed"]].astype(int)  # read back as floats when merged
    budgets = table.groupby("model", sort=False)["epochs"].first().items()
    notes = [f"Epoch budgets: {', '.join(f'{m} {e}' for m, e in budgets)} "
             "(each row states its own); mnist5k, CPU, τ = {:g}.".format(args.tau)]
    if args.timings_from:
        notes.append(f"seconds_per_epoch and time_ratio_vs_standard come from `{args.timings_from}` (the same model, "
                     "width and method timed in shorter runs; per-epoch cost does not depend on the budget).")
    if out:
        table = write_compare_table(out, table)
        markdown = out.with_suffix(".md")
        atomic_write_bytes(markdown, markdown.read_bytes() + ("\n" + "\n".join(notes) + "\n").encode())
        log(f"wrote {out} and {markdown}")
    log(f"{time.perf_counter() - started:.0f} s in all")
    show(args, table.to_dict("records"), compare_markdown(table) + "\n" + "\n".join(notes))


if __name__ == "__main__":
    main()
