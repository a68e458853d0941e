"""The modular loss alone, before and after the ReLU shortcut, side by side on the same activations.

The training loss reads ReLU outputs, which are never negative, so ``mean |a|`` over H,W needs no
``abs`` (``modular_losses(..., nonnegative=True)``): identical values and gradients, one pass fewer
over the step's largest tensors in both directions. Prints forward+backward time of the loss for the
general path and the shortcut, per model, on one batch of 128 CIFAR-shaped inputs.

    python -m bench.loss_fusion [--models resnet18 vgg16 mobilenet] [--width 0.25] [--repeats 9] [--quick] [--json]
                                [--out FILE.json]

``--quick``: ResNet-18 only, width 0.125, 3 repeats.
"""
from __future__ import annotations

import json
import statistics
import time

import torch

from bench.common import BenchParser, log, show, write_result
from moda_core.activations import run_with_cache
from moda_core.losses import modular_losses
from moda_core.models import build_model


def main() -> None:
    parser = BenchParser(__doc__, quick={"models": ["resnet18"], "width": 0.125, "repeats": 3},
                         out="write the result here as JSON")
    parser.add_argument("--models", nargs="+", default=["resnet18", "vgg16", "mobilenet"])
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    torch.manual_seed(0)
    labels = torch.randint(0, 10, (128,))
    result, lines = {}, []
    for name in args.models:
        model = build_model(name, 3, 32, 10, args.width).train()
        _, cache = run_with_cache(model, torch.randn(128, 3, 32, 32))
        activations = [a.clone().requires_grad_() for a in cache.values()]

        def loss_step(nonnegative: bool, activations: list[torch.Tensor] = activations) -> float:
            started = time.perf_counter()
            sum(modular_losses(activations, labels, nonnegative=nonnegative)).backward()
            return time.perf_counter() - started

        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):  # interleaved
            for nonnegative in (False, True):
                times[nonnegative].append(loss_step(nonnegative))
        before, after = statistics.median(times[False]), statistics.median(times[True])
        result[name] = {"width": args.width, "points": len(activations), "general_seconds": before,
                        "shortcut_seconds": after, "speedup": before / after}
        lines.append(f"{name} (width {args.width}, {len(activations)} points): loss fwd+bwd {before * 1000:.1f} ms "
                     f"→ {after * 1000:.1f} ms with the ReLU shortcut ({before / after:.1f}x faster)")
        log(lines[-1])
    if args.out:
        write_result(args.out, json.dumps(result, indent=2) + "\n")
    show(args, result, "\n".join(lines))


if __name__ == "__main__":
    main()
