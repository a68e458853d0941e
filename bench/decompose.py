"""Decomposition time as a ratio to one plain evaluation pass over the same data, side by side.

    python -m bench.decompose [--model vgg16] [--width 0.5] [--repeats 3] [--quick] [--json] [--out FILE.json]

``--quick``: VGG11 at width 0.125, one repeat.
"""
from __future__ import annotations

import json
import statistics
import time

import torch

from bench.common import BenchParser, show, write_result
from moda_core.data import load_dataset
from moda_core.decompose import activation_rates, masks_from_rates
from moda_core.evaluate import predict_logits
from moda_core.models import build_model


def main() -> None:
    parser = BenchParser(__doc__, quick={"model": "vgg11", "width": 0.125, "repeats": 1},
                         out="write the result here as JSON")
    parser.add_argument("--model", default="vgg16")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    data = load_dataset("mnist5k", device=args.device)
    model = build_model(args.model, 1, 28, 10, args.width).to(args.device).eval()
    predict_logits(model, data.train, batch_size=500)  # warm-up

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    plain, decomposition = [], []
    for _ in range(args.repeats):  # interleaved, so drift hits both alike
        sync()
        started = time.perf_counter()
        predict_logits(model, data.train, batch_size=500)
        sync()
        plain.append(time.perf_counter() - started)
        started = time.perf_counter()
        rates, _ = activation_rates(model, data.train, 10, batch_size=500)
        masks_from_rates(rates, 0.9)
        sync()
        decomposition.append(time.perf_counter() - started)
    result = {"model": args.model, "width": args.width, "device": args.device, "samples": len(data.train),
              "plain_seconds": statistics.median(plain), "decompose_seconds": statistics.median(decomposition)}
    result["ratio"] = result["decompose_seconds"] / result["plain_seconds"]
    if args.out:
        write_result(args.out, json.dumps(result, indent=2) + "\n")
    show(args, result, f"{args.model} width {args.width} on {args.device}, {len(data.train)} images: plain eval pass "
                       f"{result['plain_seconds']:.2f} s, decomposition {result['decompose_seconds']:.2f} s "
                       f"→ ratio {result['ratio']:.2f}x (target ≤ 1.3x)")


if __name__ == "__main__":
    main()
