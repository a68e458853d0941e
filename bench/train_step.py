"""Training cost of MODA vs standard training, measured side by side in one process.

For each model: whole epochs on mnist5k, standard (α=β=γ=0, no modular terms tracked) and MODA
(α=1, β=1, γ=0.3), interleaved, same seed; prints test accuracy, seconds per epoch and the ratio
MODA / standard of the median epoch time.

    python -m bench.train_step [--models lenet5 vgg11] [--width 0.25] [--epochs 5] [--json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile

import torch

from moda_core.train import TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lenet5", "vgg11"])
    parser.add_argument("--width", type=float, default=0.25, help="width multiplier for VGG/ResNet/MobileNet")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as runs_dir:
        for model in args.models:
            width = 1.0 if model in ("lenet5", "mlp") else args.width
            row = {}
            for method, weights in (("standard", (0.0, 0.0, 0.0)), ("moda", (1.0, 1.0, 0.3))):
                config = TrainConfig(model=model, width=width, epochs=args.epochs, alpha=weights[0],
                                     beta=weights[1], gamma=weights[2], device=args.device,
                                     track_modular_terms=False)
                run = train(config, runs_dir, f"{model}-{method}")
                # the first epoch includes warm-up; the median of the rest is the steady cost
                seconds = [h["train_seconds"] for h in run.history[1:]] or [run.history[0]["train_seconds"]]
                row[method] = {"test_accuracy": run.metrics["test_accuracy"],
                               "seconds_per_epoch": statistics.median(seconds)}
            row["moda_ratio"] = row["moda"]["seconds_per_epoch"] / row["standard"]["seconds_per_epoch"]
            row["width"] = width
            results[model] = row
            print(f"{model} (width {width}): standard acc {row['standard']['test_accuracy']:.4f} "
                  f"{row['standard']['seconds_per_epoch']:.2f} s/epoch | MODA acc {row['moda']['test_accuracy']:.4f} "
                  f"{row['moda']['seconds_per_epoch']:.2f} s/epoch | MODA/standard {row['moda_ratio']:.2f}x")
    results["device"] = str(torch.device("cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"))
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
