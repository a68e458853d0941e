"""MODA vs MwT vs standard training, side by side: one harness, same data, seed and epoch budget.

For each model on mnist5k, trains standard (then the same activation-rate decomposition, post hoc),
MODA (α=1, β=1, γ=0.3) and MwT (mask baseline, α=0.5, β=1.5), and reports per method: test
accuracy, training seconds per epoch and its ratio to standard, mean module size, mean pairwise
weight overlap, and over all class pairs the composed module's accuracy next to the standard model's
on the same pairs. Writes bench/results/compare.csv and compare.md (the dashboard's Compare page
reads the CSV).

    python bench/compare.py            # LeNet-5, VGG11, ResNet-18, MobileNet (width 0.25), 15 epochs
    python bench/compare.py --quick    # 2 epochs: minutes on a CPU
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402

from moda_core.baselines import COMPARE_COLUMNS  # noqa: E402
from moda_core.decompose import decompose  # noqa: E402
from moda_core.metrics import mean_off_diagonal, module_sizes, overlap_matrix, subtask_sets, subtask_sweep  # noqa: E402
from moda_core.runs import atomic_write_bytes, run_dataset  # noqa: E402
from moda_core.train import TrainConfig, train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = {"standard": dict(alpha=0.0, beta=0.0, gamma=0.0), "moda": dict(), "mwt": dict(method="mwt")}


def markdown(table: pd.DataFrame) -> str:
    shown = table.copy()
    for column in ("test_accuracy", "mean_module_size", "mean_overlap", "pair_params_fraction",
                   "pair_composed_accuracy", "pair_standard_accuracy"):
        shown[column] = (100 * shown[column]).map("{:.1f}%".format)
    shown["seconds_per_epoch"] = shown["seconds_per_epoch"].map("{:.2f}".format)
    shown["time_ratio_vs_standard"] = shown["time_ratio_vs_standard"].map("{:.2f}x".format)
    header = "| " + " | ".join(shown.columns) + " |\n|" + "---|" * len(shown.columns) + "\n"
    return header + "".join("| " + " | ".join(map(str, row)) + " |\n" for row in shown.itertuples(index=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lenet5", "vgg11", "resnet18", "mobilenet"])
    parser.add_argument("--width", type=float, default=0.25, help="width multiplier (LeNet-5 stays full width)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tau", type=float, default=0.9)
    parser.add_argument("--quick", action="store_true", help="2 epochs")
    parser.add_argument("--runs-dir", help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--out", default=str(RESULTS / "compare.csv"))
    args = parser.parse_args()
    if args.quick:
        args.epochs = 2
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        runs_dir = Path(args.runs_dir or scratch)
        for model in args.models:
            width = 1.0 if model in ("lenet5", "mlp") else args.width
            runs = {}
            for method, weights in METHODS.items():
                config = TrainConfig(model=model, width=width, epochs=args.epochs, seed=args.seed,
                                     track_modular_terms=False, **weights)
                runs[method] = train(config, runs_dir, f"{model}-w{width}-{method}-e{args.epochs}-s{args.seed}")
                print(f"[{time.perf_counter() - started:6.0f} s] trained {model} {method}: "
                      f"test accuracy {runs[method].metrics['test_accuracy']:.4f}", flush=True)
            standard = runs["standard"]
            test = run_dataset(standard).test
            pairs = subtask_sets(standard.model.arch["num_classes"], [2], samples=10_000)

            def epoch_seconds(run) -> float:  # training time only; the first epoch is warm-up
                return statistics.median([h["train_seconds"] for h in run.history[1:]] or
                                         [run.history[0]["train_seconds"]])

            for method, run in runs.items():
                masks = decompose(run, args.tau).masks
                sizes = module_sizes(run.model, masks)
                sweep = subtask_sweep(run.model, masks, test, pairs, reference=standard.model)
                rows.append({
                    "model": model, "width": width, "method": method, "epochs": args.epochs, "seed": args.seed,
                    "test_accuracy": run.metrics["test_accuracy"], "seconds_per_epoch": epoch_seconds(run),
                    "time_ratio_vs_standard": epoch_seconds(run) / epoch_seconds(standard),
                    "mean_module_size": sum(sizes) / len(sizes),
                    "mean_overlap": mean_off_diagonal(overlap_matrix(run.model, masks)),
                    "pair_params_fraction": statistics.mean(r["params_fraction"] for r in sweep),
                    "pair_composed_accuracy": statistics.mean(r["accuracy"] for r in sweep),
                    "pair_standard_accuracy": statistics.mean(r["reference_accuracy"] for r in sweep),
                })
    table = pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))
    out = Path(args.out)
    atomic_write_bytes(out, table.to_csv(index=False).encode())
    atomic_write_bytes(out.with_suffix(".md"), markdown(table).encode())
    print(markdown(table))
    print(f"wrote {out} and {out.with_suffix('.md')} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
