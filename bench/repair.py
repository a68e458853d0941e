"""Module replacement on mnist5k: the whole repair table of DESIGN.md §1.6, printed and saved as CSV.

A strong VGG11 (width 0.25) is MODA-trained once on classes 0–4. For every mixed class m in 0–4 a
weak LeNet-5 is trained on classes m, 5–9 with 10% of the training data and no augmentation,
keeping checkpoints; its early (under-fit) and last (over-fit) checkpoints are each repaired with
the strong model's module for m by both strategies (``calibrate``, ``normalize``). Every row is one
repair measured on the weak run's test split; the means per strategy come last.

    python bench/repair.py [--quick] [--runs-dir DIR] [--csv bench/results/repair.csv] [--json]

``--quick`` uses only m = 0 and fewer epochs (minutes on a CPU). ``--json``: the last stdout line is
``{strategy: {"target_gain", "other_max_change", "other_max_drop", "early": {…}, "late": {…}}}``
(means). ``other_max_change`` counts gains and losses on the other classes alike; ``other_max_drop``
only losses.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402

from moda_core.replace import STRATEGIES, repair  # noqa: E402
from moda_core.runs import atomic_write_bytes, load_run  # noqa: E402
from moda_core.train import TrainConfig, train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "repair.csv"
STRONG_CLASSES = [0, 1, 2, 3, 4]
WEAK_REST = [5, 6, 7, 8, 9]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def trained(runs_dir: Path, name: str, config: TrainConfig):
    """The run ``name`` if it already finished (a reused --runs-dir), else train it."""
    if (runs_dir / name).exists():
        run = load_run(runs_dir / name)
        if run.metrics.get("status") == "complete":
            return run
    started = time.perf_counter()
    run = train(config, runs_dir, name, resume=(runs_dir / name).exists())
    log(f"trained {name}: test accuracy {run.metrics['test_accuracy']:.4f} ({time.perf_counter() - started:.0f} s)")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only mixed class 0, fewer epochs")
    parser.add_argument("--runs-dir", help="keep (and reuse) the runs here instead of a temporary folder")
    parser.add_argument("--csv", default=str(RESULTS), help="where to write the table")
    parser.add_argument("--strong-epochs", type=int, help="default 10 (quick: 4)")
    parser.add_argument("--weak-epochs", type=int, help="default 40 (quick: 20); the last is the late checkpoint")
    parser.add_argument("--early-epoch", type=int, default=8,
                        help="the under-fit weak checkpoint (train accuracy still well below 1)")
    parser.add_argument("--calibration-epochs", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    strong_epochs = args.strong_epochs or (4 if args.quick else 10)
    weak_epochs = args.weak_epochs or (20 if args.quick else 40)
    mixed_classes = [0] if args.quick else STRONG_CLASSES
    if not 1 <= args.early_epoch < weak_epochs:
        parser.error(f"--early-epoch must be between 1 and the weak epochs - 1 ({weak_epochs - 1})")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        runs_dir = Path(args.runs_dir or scratch)
        strong = trained(runs_dir, f"strong-vgg11-e{strong_epochs}", TrainConfig(
            model="vgg11", width=0.25, epochs=strong_epochs, alpha=1.0, beta=1.0, gamma=0.3, classes=STRONG_CLASSES,
            device=args.device))
        rows = []
        for m in mixed_classes:
            # batch 32: 10% of the data is only 240 samples, so a batch of 128 would give 2 steps an epoch
            weak = trained(runs_dir, f"weak-lenet5-m{m}-e{weak_epochs}-c{args.early_epoch}", TrainConfig(
                model="lenet5", epochs=weak_epochs, alpha=0.0, beta=0.0, gamma=0.0, batch_size=32,
                classes=[m, *WEAK_REST], train_fraction=0.1, augment=False, checkpoint_every=args.early_epoch,
                track_modular_terms=False, device=args.device))
            device = next(weak.model.parameters()).device
            for checkpoint, epoch, spec in (("early", args.early_epoch, f"{weak.path}@{args.early_epoch}"),
                                            ("late", weak_epochs, weak.path)):
                weak_run = load_run(spec, device)
                for strategy in STRATEGIES:
                    report = repair(weak_run, strong, 0, m, strategy, epochs=args.calibration_epochs).report
                    rows.append({"mixed_class": m, "checkpoint": checkpoint, "weak_epoch": epoch,
                                 "weak_train_accuracy": weak.history[epoch - 1]["train_accuracy"],
                                 "strategy": strategy, "target_before": report["before"][str(m)],
                                 "target_after": report["after"][str(m)], "target_gain": report["target_gain"],
                                 "other_max_change": report["other_max_change"],
                                 "other_max_drop": report["other_max_drop"],
                                 "accuracy_before": report["accuracy_before"],
                                 "accuracy_after": report["accuracy_after"],
                                 "module_params_fraction": report["module_params_fraction"],
                                 "seconds": report["seconds"]})
                    log(f"m={m} {checkpoint} (epoch {epoch}) {strategy}: target {report['before'][str(m)]:.2f} -> "
                        f"{report['after'][str(m)]:.2f}, other classes move at most {report['other_max_change']:.2f} "
                        f"(drop at most {report['other_max_drop']:.2f})")
    table = pd.DataFrame(rows)
    csv_path = Path(args.csv)
    atomic_write_bytes(csv_path, table.to_csv(index=False, float_format="%.4f").encode())
    columns = ["target_gain", "other_max_change", "other_max_drop"]
    means = table.groupby("strategy")[columns].mean()
    by_checkpoint = table.groupby(["strategy", "checkpoint"])[columns].mean()
    print(table.drop(columns=["seconds"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nstrong VGG11 (width 0.25, MODA, classes 0-4, {strong_epochs} epochs): test accuracy "
          f"{strong.metrics['test_accuracy']:.4f}; weak LeNet-5: 10% of the data, early = epoch {args.early_epoch}, "
          f"late = epoch {weak_epochs}; {time.perf_counter() - started:.0f} s in all; table in {csv_path}")
    print("\nmeans by strategy:\n" + means.to_string(float_format=lambda v: f"{v:+.4f}"))
    print("\nmeans by strategy and checkpoint:\n" + by_checkpoint.to_string(float_format=lambda v: f"{v:+.4f}"))
    if args.json:
        summary = {strategy: {**means.loc[strategy].to_dict(),
                              **{checkpoint: by_checkpoint.loc[(strategy, checkpoint)].to_dict()
                                 for checkpoint in ("early", "late")}}
                   for strategy in means.index}
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
