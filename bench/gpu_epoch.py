"""Seconds per training epoch at CIFAR-10 scale: standard vs MODA, for VGG16, ResNet-18 and MobileNet.

50,000 synthetic 3×32×32 images (the ``synthetic`` data set), batch 128, the real trainer (bf16
autocast and channels-last on CUDA; ``--compile`` for torch.compile). Standard and MODA runs of a
model are trained one after the other in this process; the first epoch (warm-up, compilation) is
left out of the median. Prints where it ran; ``--out`` writes the table as CSV.

    python -m bench.gpu_epoch [--epochs 3] [--models vgg16 resnet18 mobilenet] [--compile] [--json] [--out FILE]
    python -m bench.gpu_epoch --quick      # CPU smoke run: width 0.125, 2 epochs, 5% of the images
"""
from __future__ import annotations

import tempfile

import pandas as pd
import torch

from bench.common import METHODS, BenchParser, device_name, log, median_epoch_seconds, show, write_result
from moda_core.train import TrainConfig, resolve_device, train


def main() -> None:
    parser = BenchParser(__doc__, quick={"width": 0.125, "epochs": 2, "train_fraction": 0.05},
                         out="write the table here as CSV")
    parser.add_argument("--models", nargs="+", default=["vgg16", "resnet18", "mobilenet"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--train-fraction", type=float, default=1.0)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    where = device_name(device)
    log(f"running on {where}, torch {torch.__version__}")
    rows = []
    with tempfile.TemporaryDirectory() as runs_dir:
        for model in args.models:
            for method in ("standard", "moda"):
                config = TrainConfig(model=model, dataset="synthetic", width=args.width, epochs=args.epochs,
                                     **METHODS[method], batch_size=128,
                                     train_fraction=args.train_fraction, device=args.device, compile=args.compile,
                                     track_modular_terms=False)
                run = train(config, runs_dir, f"{model}-{method}")
                # training time only (no test pass); the first epoch is warm-up
                seconds = median_epoch_seconds(run)
                images = run.config["data"]["train_size"]
                rows.append({"model": model, "training": method, "width": args.width, "images": images,
                             "seconds_per_epoch": seconds, "images_per_second": images / seconds,
                             "device": where, "compile": args.compile})
                log(f"{model:10s} {method:8s} {seconds:8.2f} s/epoch  {images / seconds:10.0f} images/s")
    table = pd.DataFrame(rows)
    ratio = table.pivot(index="model", columns="training", values="seconds_per_epoch")
    ratio = ratio["moda"] / ratio["standard"]
    if args.out:
        write_result(args.out, table.to_csv(index=False))
    show(args, {"rows": table.to_dict("records"), "moda_ratio": ratio.to_dict()},
         table.to_string(index=False) + "\n\nMODA / standard epoch time:\n" + ratio.round(3).to_string())


if __name__ == "__main__":
    main()
