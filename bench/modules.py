"""MODA vs standard training of the same model on mnist5k: module size, overlap and composed accuracy.

For each model, trains a standard run (α=β=γ=0) and a MODA run (α=1, β=1, γ=0.3) with the same seed
and epochs, decomposes both at τ (standard + post-hoc decomposition is the baseline), composes every
class pair and reports: full test accuracy, mean module size, mean pairwise overlap, mean composed
accuracy over all pairs, and the standard model's accuracy on the same pairs (restricted logits).
Writes bench/results/modules.csv and prints a markdown table.

    python bench/modules.py [--epochs 15] [--models lenet5 vgg11] [--width 0.25] [--runs-dir DIR]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402

from moda_core.decompose import decompose  # noqa: E402
from moda_core.metrics import mean_off_diagonal, module_sizes, overlap_matrix, subtask_sets, subtask_sweep  # noqa: E402
from moda_core.runs import atomic_write_bytes, run_dataset  # noqa: E402
from moda_core.train import TrainConfig, train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lenet5", "vgg11"])
    parser.add_argument("--width", type=float, default=0.25, help="width multiplier for the VGG")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--tau", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs-dir", help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--out", default=str(RESULTS / "modules.csv"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        runs_dir = Path(args.runs_dir or scratch)
        for model in args.models:
            width = 1.0 if model in ("lenet5", "mlp") else args.width
            trained = {}
            for kind, weights in (("standard", (0.0, 0.0, 0.0)), ("moda", (1.0, 1.0, 0.3))):
                config = TrainConfig(model=model, width=width, epochs=args.epochs, alpha=weights[0], beta=weights[1],
                                     gamma=weights[2], seed=args.seed)
                trained[kind] = train(config, runs_dir, f"{model}-w{width}-{kind}-e{args.epochs}-s{args.seed}")
                print(f"trained {model} {kind}: test accuracy {trained[kind].metrics['test_accuracy']:.4f}", flush=True)
            standard = trained["standard"]
            test = run_dataset(standard).test
            pairs = subtask_sets(standard.model.arch["num_classes"], [2], samples=10_000)
            for kind, run in trained.items():
                masks = decompose(run, args.tau).masks
                sweep = subtask_sweep(run.model, masks, test, pairs, reference=standard.model)
                sizes = module_sizes(run.model, masks)
                rows.append({
                    "model": model, "width": width, "training": kind, "epochs": args.epochs,
                    "test_accuracy": run.metrics["test_accuracy"],
                    "seconds_per_epoch": run.metrics["seconds_per_epoch"],
                    "mean_module_size": sum(sizes) / len(sizes),
                    "mean_overlap": mean_off_diagonal(overlap_matrix(run.model, masks)),
                    "pair_params_fraction": sum(r["params_fraction"] for r in sweep) / len(sweep),
                    "pair_composed_accuracy": sum(r["accuracy"] for r in sweep) / len(sweep),
                    "pair_standard_accuracy": sum(r["reference_accuracy"] for r in sweep) / len(sweep),
                })
    table = pd.DataFrame(rows)
    atomic_write_bytes(args.out, table.to_csv(index=False).encode())
    print(table.to_markdown(index=False, floatfmt=".4f") if _has_tabulate() else table.to_string(index=False))
    print(f"\nwrote {args.out}")


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False


if __name__ == "__main__":
    main()
