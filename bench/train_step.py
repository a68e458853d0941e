"""Training cost of MODA vs standard training, measured side by side in one process.

For each model: whole epochs on mnist5k, standard (α=β=γ=0, no modular terms tracked) and MODA
(α=1, β=1, γ=0.3), interleaved, same seed; prints test accuracy, seconds per epoch and the ratio
MODA / standard of the median epoch time.

    python -m bench.train_step [--models lenet5 vgg11] [--width 0.25] [--epochs 5] [--quick] [--json] [--out FILE.json]

``--quick``: LeNet-5 only, 2 epochs.
"""
from __future__ import annotations

import json
import tempfile

import torch

from bench.common import METHODS, BenchParser, log, median_epoch_seconds, show, write_result
from moda_core.train import TrainConfig, train


def main() -> None:
    parser = BenchParser(__doc__, quick={"models": ["lenet5"], "epochs": 2}, out="write the result here as JSON")
    parser.add_argument("--models", nargs="+", default=["lenet5", "vgg11"])
    parser.add_argument("--width", type=float, default=0.25, help="width multiplier for VGG/ResNet/MobileNet")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    results, lines = {}, []
    with tempfile.TemporaryDirectory() as runs_dir:
        for model in args.models:
            width = 1.0 if model in ("lenet5", "mlp") else args.width
            row = {}
            for method in ("standard", "moda"):
                config = TrainConfig(model=model, width=width, epochs=args.epochs, device=args.device,
                                     track_modular_terms=False, **METHODS[method])
                run = train(config, runs_dir, f"{model}-{method}")
                row[method] = {"test_accuracy": run.metrics["test_accuracy"],
                               "seconds_per_epoch": median_epoch_seconds(run)}
            row["moda_ratio"] = row["moda"]["seconds_per_epoch"] / row["standard"]["seconds_per_epoch"]
            row["width"] = width
            results[model] = row
            lines.append(f"{model} (width {width}): standard acc {row['standard']['test_accuracy']:.4f} "
                         f"{row['standard']['seconds_per_epoch']:.2f} s/epoch | MODA acc "
                         f"{row['moda']['test_accuracy']:.4f} {row['moda']['seconds_per_epoch']:.2f} s/epoch | "
                         f"MODA/standard {row['moda_ratio']:.2f}x")
            log(lines[-1])
    results["device"] = str(torch.device("cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"))
    if args.out:
        write_result(args.out, json.dumps(results, indent=2) + "\n")
    show(args, results, "\n".join(lines))


if __name__ == "__main__":
    main()
