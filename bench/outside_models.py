"""The outside-model table: every model of the graph suite (``tests/outside_models.py``, ``tests/graph_models.py``)
read, masked and composed as the tests do, in one table: its points and units, the largest relative difference
between the composed module and the independent masked model (``tests/helpers.independent_masked_model``) over
mask densities 0.5, 0.2 and 1 (classes 2 and 7), the share of the parameters the density-0.5 module keeps, and
what the graph keeps whole and why.

    python -m bench.outside_models [--out FILE]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the suite's models and its independent masked model

import graph_models  # noqa: E402
import outside_models  # noqa: E402
from helpers import independent_masked_model  # noqa: E402

from moda_core.compose import compose_module, parameter_count  # noqa: E402
from moda_core.graph import graph_of  # noqa: E402
from moda_core.loop import prepare_model  # noqa: E402

CLASSES = [2, 7]
GRAPH_MODELS = {"FunctionalNet": (graph_models.FunctionalNet, "relu"),
                "SharedReLUNet": (graph_models.SharedReLUNet, "relu"), "ReLU6Net": (graph_models.ReLU6Net, "relu"),
                "SkipNet": (graph_models.SkipNet, "relu"), "CatNet": (graph_models.CatNet, "relu"),
                "GeluSiluNet": (graph_models.GeluSiluNet, "gelu,silu"),
                "torchvision resnet18": (graph_models.tv_resnet18, "relu"),
                "torchvision vgg11_bn": (graph_models.tv_vgg11_bn, "relu"),
                "torchvision mobilenet_v2 ×0.25": (graph_models.tv_mobilenet_v2, "relu"),
                "torchvision ViT (2 layers)": (graph_models.tv_vit, "relu")}


def units(model: torch.nn.Module) -> str:
    """Points as ``name: units (axis)``, runs of equal entries folded."""
    points = list(graph_of(model).points.values())
    shown = ", ".join(f"{p.name}: {p.units} (dim {p.axis})" for p in points[:4])
    return shown + (f", … ({len(points)} points)" if len(points) > 4 else "")


def row(name: str, make, points: str) -> dict:
    torch.manual_seed(0)
    model = prepare_model(graph_models.calibrated(make()), torch.zeros(2, 1, 28, 28), points)
    graph = graph_of(model)
    axes = {p.name: p.axis for p in graph.points.values()}
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    worst, kept = 0.0, None
    for density in (0.5, 0.2, 1.0):
        generator = torch.Generator().manual_seed(1)
        masks = {}
        for point in graph.points.values():
            mask = (torch.rand(10, point.units, generator=generator) < density) | (density >= 1)
            mask[torch.arange(10), torch.randint(0, point.units, (10,), generator=generator)] = True
            masks[point.name] = mask
        composed = compose_module(model, masks, CLASSES)
        with torch.no_grad():
            expected = independent_masked_model(model, {p: m[CLASSES].any(0) for p, m in masks.items()}, axes)(x)
            got = composed(x)
        expected = expected[:, CLASSES]
        worst = max(worst, ((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item())
        kept = parameter_count(composed) / parameter_count(model) if density == 0.5 else kept
    reasons: dict[str, int] = {}
    for _, reason in graph.kept_whole():
        reasons[reason] = reasons.get(reason, 0) + 1
    whole = "; ".join(f"{count} × {reason}" for reason, count in reasons.items()) or "nothing"
    return {"model": name, "points": units(model), "error": worst, "kept": kept, "whole": whole}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    models = {name: entry for name, entry in outside_models.MODELS.items()}
    models.update(GRAPH_MODELS)
    lines = [f"Composed (classes {CLASSES}) vs an independent masked model, mask densities 0.5, 0.2 and 1; "
             "parameters kept at density 0.5", "",
             "| model | points: units (unit axis) | largest relative error | parameters kept | kept whole |",
             "|---|---|---:|---:|---|"]
    for name, (make, points) in models.items():
        r = row(name, make, points)
        lines.append(f"| {r['model']} | {r['points']} | {r['error']:.1e} | {r['kept']:.1%} | {r['whole']} |")
        print(lines[-1], flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
