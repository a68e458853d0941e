"""Module replacement on mnist5k: the repair table (docs/design.md, Module replacement), printed and saved as CSV.

A strong VGG11 (width 0.25) is MODA-trained once on classes 0–4 (or given with ``--strong-run``).
For every setting and mixed class m a weak LeNet-5 is trained on classes m, 5–9 without augmentation
(``moda_core.replace_experiment.weak_config``):

- ``paper``:  10% of the training data of every class, as in the paper;
- ``scarce``: 10% of classes 5–9 but only 2% of class m (8 digits), so the weak model is weak
  exactly where the module helps.

Its early (under-fit) and last (over-fit) checkpoints are each repaired with the strong model's
module for m by the three strategies (``calibrate``: MODA's K×K layer; ``normalize``: the
CNNSplitter-style baseline; ``affine``: ours, only the target's logit changes). Every row is one
repair measured on the weak run's test split, with the paper's measure: the target's accuracy
before/after and the mean accuracy of the other classes before/after (signed), next to the largest
single-class drop and overall accuracy. Means per setting and strategy come last.

    python -m bench.repair [--quick] [--runs-dir DIR] [--strong-run RUN] [--json] [--out bench/results/repair.csv]

``--out``: the table as CSV (the committed one is bench/results/repair.csv). ``--quick``: the scarce setting,
mixed class 3, a 15-epoch strong run and 20-epoch weak runs (a few minutes on 2 CPU cores). ``--json``: stdout is
``{strategy: {"target_gain", "other_mean_change", "other_max_drop", "other_max_change", "accuracy_change",
"early": {…}, "late": {…}, "settings": {setting: {…}}}}`` (means over the rows; fractions, not points).
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.common import BenchParser, log, show, write_result
from moda_core.replace import STRATEGIES, repair
from moda_core.replace_experiment import SETTINGS, strong_config, weak_config
from moda_core.runs import load_run
from moda_core.train import TrainConfig, train

MIXED_CLASSES = [0, 1, 2, 3, 4]
QUICK_MIXED_CLASS = 3
MEASURES = ["target_gain", "other_mean_change", "other_max_drop", "other_max_change", "accuracy_change"]


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


def summary(table: pd.DataFrame) -> dict[str, dict]:
    """Means per strategy, also per checkpoint (early/late) and per setting: the ``--json`` result."""
    result = {}
    for strategy, rows in table.groupby("strategy", sort=False):
        entry = rows[MEASURES].mean().to_dict()
        for checkpoint in ("early", "late"):
            entry[checkpoint] = rows[rows["checkpoint"] == checkpoint][MEASURES].mean().to_dict()
        entry["settings"] = {setting: {**part[MEASURES].mean().to_dict(),
                                       **{c: part[part["checkpoint"] == c][MEASURES].mean().to_dict()
                                          for c in ("early", "late")}}
                             for setting, part in rows.groupby("setting", sort=False)}
        result[strategy] = entry
    return result


def main() -> None:
    parser = BenchParser(__doc__, quick={"settings": ["scarce"], "mixed_classes": [QUICK_MIXED_CLASS],
                                         "strong_epochs": 15, "weak_epochs": 20},
                         out="write the table here as CSV")
    parser.add_argument("--runs-dir", help="keep (and reuse) the runs here instead of a temporary folder")
    parser.add_argument("--strong-run", help="use this finished strong run (classes 0-4) instead of training one; "
                                             "it is copied into the runs folder first (its decomposition goes there)")
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    parser.add_argument("--mixed-classes", nargs="+", type=int, default=MIXED_CLASSES)
    parser.add_argument("--strong-epochs", type=int, default=30)
    parser.add_argument("--weak-epochs", type=int, default=40, help="the last is the late checkpoint")
    parser.add_argument("--early-epoch", type=int, default=6,
                        help="the under-fit weak checkpoint (train accuracy still well below 1)")
    parser.add_argument("--calibration-epochs", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    strong_epochs, weak_epochs = args.strong_epochs, args.weak_epochs
    if not 1 <= args.early_epoch < weak_epochs:
        parser.error(f"--early-epoch must be between 1 and the weak epochs - 1 ({weak_epochs - 1})")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        runs_dir = Path(args.runs_dir or scratch)
        if args.strong_run:
            source = load_run(args.strong_run)
            if source.metrics.get("status") != "complete":
                parser.error(f"--strong-run {args.strong_run} has not finished training")
            copy = runs_dir / f"strong-{source.path.name}"
            if not copy.exists():
                shutil.copytree(source.path, copy)
            strong = load_run(copy)
            strong_label = f"{args.strong_run} ({source.config['train']['epochs']} epochs)"
        else:
            strong = trained(runs_dir, f"strong-vgg11-e{strong_epochs}", strong_config(strong_epochs, args.device))
            strong_label = f"trained here ({strong_epochs} epochs)"
        rows = []
        for setting in args.settings:
            for m in args.mixed_classes:
                weak = trained(runs_dir, f"weak-{setting}-m{m}-e{weak_epochs}-c{args.early_epoch}",
                               weak_config(setting, m, weak_epochs, checkpoint_every=args.early_epoch,
                                           device=args.device))
                device = next(weak.model.parameters()).device
                for checkpoint, epoch, spec in (("early", args.early_epoch, f"{weak.path}@{args.early_epoch}"),
                                                ("late", weak_epochs, weak.path)):
                    weak_run = load_run(spec, device)
                    for strategy in STRATEGIES:
                        report = repair(weak_run, strong, 0, m, strategy, epochs=args.calibration_epochs).report
                        rows.append({"setting": setting, "mixed_class": m, "checkpoint": checkpoint,
                                     "weak_epoch": epoch, "weak_train_size": weak.config["data"]["train_size"],
                                     "weak_train_accuracy": weak.history[epoch - 1]["train_accuracy"],
                                     "strategy": strategy,
                                     **{key: report[key] for key in (
                                         "target_before", "target_after", "target_gain", "other_mean_before",
                                         "other_mean_after", "other_mean_change", "other_max_change",
                                         "other_max_drop", "accuracy_before", "accuracy_after", "accuracy_change",
                                         "module_params_fraction", "seconds")}})
                        log(f"{setting} m={m} {checkpoint} (epoch {epoch}) {strategy}: target "
                            f"{report['target_before']:.2f} -> {report['target_after']:.2f}, other classes' mean "
                            f"{report['other_mean_change'] * 100:+.2f} points, largest drop "
                            f"{report['other_max_drop'] * 100:.1f} points")
    table = pd.DataFrame(rows)
    if args.out:
        write_result(args.out, table.to_csv(index=False, float_format="%.4f"))
    points = lambda v: f"{v * 100:+.2f}"  # noqa: E731
    text = "\n".join([
        table.drop(columns=["seconds"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"),
        f"\nstrong VGG11 (width 0.25, MODA, classes 0-4), {strong_label}: test accuracy "
        f"{strong.metrics['test_accuracy']:.4f}; weak LeNet-5: early = epoch {args.early_epoch}, "
        f"late = epoch {weak_epochs}; {time.perf_counter() - started:.0f} s in all",
        "\nmeans by setting and strategy (points):\n"
        + table.groupby(["setting", "strategy"], sort=False)[MEASURES].mean().to_string(float_format=points),
        "\nmeans by setting, strategy and checkpoint (points):\n"
        + table.groupby(["setting", "strategy", "checkpoint"], sort=False)[MEASURES].mean()
        .to_string(float_format=points)])
    show(args, summary(table), text)


if __name__ == "__main__":
    main()
