"""Analytic weight-overlap matrix vs the brute-force count, on the same masks, side by side.

Brute force gives every weight a unique id, composes each single-class module and counts the ids
two modules share; the analytic count uses only the masks (docs/design.md, Weight overlap). Both run on the same
random masks of a full-width VGG16 with 100 classes; brute force is timed on the first
``--brute-classes`` classes (it grows with classes × parameters), and so is the analytic matrix for
the ratio. Then the analytic matrix for all 100 classes is timed on its own.

    python -m bench.overlap [--model vgg16] [--width 1.0] [--classes 100] [--brute-classes 10] [--quick] [--json]
                            [--out FILE.json]

``--quick``: VGG11 at width 0.125, 20 classes, brute force on 3.
"""
from __future__ import annotations

import json
import time

import torch

from bench.common import BenchParser, show, write_result
from moda_core.activations import modular_points, run_with_cache
from moda_core.compose import compose_module, parameter_count
from moda_core.models import build_model
from moda_core.overlap import overlap_counts


def brute_force(model, masks, classes) -> torch.Tensor:
    with torch.no_grad():
        start = 0
        for param in model.parameters():
            param.copy_(torch.arange(start, start + param.numel(), dtype=torch.float64).view_as(param))
            start += param.numel()
    total = parameter_count(model)
    indicator = torch.zeros(len(classes), total, dtype=torch.float32)
    for row, c in enumerate(classes):
        ids = torch.cat([p.detach().flatten() for p in compose_module(model, masks, [c]).parameters()]).long()
        indicator[row, ids] = 1.0
    return (indicator @ indicator.T).double()


def main() -> None:
    parser = BenchParser(__doc__, quick={"model": "vgg11", "width": 0.125, "classes": 20, "brute_classes": 3},
                         out="write the result here as JSON")
    parser.add_argument("--model", default="vgg16")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--brute-classes", type=int, default=10)
    parser.add_argument("--density", type=float, default=0.1, help="fraction of units each class keeps")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model(args.model, 3, 32, args.classes, args.width).double().eval()
    _, cache = run_with_cache(model, torch.zeros(1, 3, 32, 32, dtype=torch.float64))
    masks = {}
    for point in modular_points(model):
        mask = torch.rand(args.classes, cache[point].shape[1]) < args.density
        mask[:, 0] = True
        masks[point] = mask

    subset = list(range(args.brute_classes))
    sub_masks = {p: m[subset] for p, m in masks.items()}
    sub_model = build_model(args.model, 3, 32, args.brute_classes, args.width).double().eval()
    started = time.perf_counter()
    analytic_small = overlap_counts(sub_model, sub_masks)
    analytic_seconds = time.perf_counter() - started
    started = time.perf_counter()
    brute = brute_force(sub_model, sub_masks, subset)
    brute_seconds = time.perf_counter() - started
    assert torch.equal(analytic_small, brute), "analytic overlap disagrees with brute force"

    started = time.perf_counter()
    overlap_counts(model, masks)
    full_seconds = time.perf_counter() - started
    result = {"model": args.model, "width": args.width, "params": parameter_count(model),
              "brute_classes": args.brute_classes, "brute_seconds": brute_seconds,
              "analytic_seconds_same_classes": analytic_seconds, "speedup": brute_seconds / analytic_seconds,
              "classes": args.classes, "analytic_seconds_all_classes": full_seconds}
    if args.out:
        write_result(args.out, json.dumps(result, indent=2) + "\n")
    show(args, result, f"{args.model} width {args.width} ({result['params']:,} parameters): {args.brute_classes} "
                       f"classes — brute force {brute_seconds:.2f} s, analytic {analytic_seconds * 1000:.1f} ms "
                       f"(analytic is {result['speedup']:.0f}x faster, identical counts); "
                       f"analytic {args.classes}-class matrix {full_seconds * 1000:.1f} ms")


if __name__ == "__main__":
    main()
