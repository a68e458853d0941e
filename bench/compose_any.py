"""The graph composer (any model) next to the zoo's block-rule composer, on the same masks, side by side.

For every zoo model both composers build the module of the same two classes from the same random masks; the
table gives each one's time (median of ``--repeats``), the ratio graph / zoo, and the share of the parameters
each keeps (the two may differ: the graph composer also slices through what a block rule keeps whole, and
both are exact). Then outside models, which only the graph composer can take (torchvision ResNet-18,
VGG11-bn, MobileNetV2 ×0.25, a small ViT, adapted to 1×28×28), with their time, kept share and the number of
ops kept whole. Writes bench/results/compose_any.md.

    python -m bench.compose_any [--density 0.5] [--repeats 5] [--json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from moda_core.compose import compose_module, parameter_count
from moda_core.graph import activation_sites
from moda_core.graph_compose import compose_graph
from moda_core.models import build_model

RESULTS = Path(__file__).resolve().parent / "results"
ZOO = [("lenet5", 1.0), ("vgg11", 1.0), ("resnet18", 1.0), ("mobilenet", 1.0), ("vit", 1.0)]
CLASSES = [3, 7]


def random_masks(model: torch.nn.Module, density: float, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    masks = {}
    for name, site in activation_sites(model, example_input=torch.zeros(1, 1, 28, 28)).items():
        mask = torch.rand(10, site.units, generator=generator) < density
        mask[:, 0] = True
        masks[name] = mask
    return masks


def timed(function, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def outside_models() -> dict[str, torch.nn.Module]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test suite's adapted models
    import graph_models

    return {"torchvision resnet18": graph_models.tv_resnet18(), "torchvision vgg11_bn": graph_models.tv_vgg11_bn(),
            "torchvision mobilenet_v2 ×0.25": graph_models.tv_mobilenet_v2(),
            "torchvision ViT (2 layers)": graph_models.tv_vit()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--density", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.zeros(2, 1, 28, 28)
    rows = []
    for name, width in ZOO:
        model = build_model(name, 1, 28, 10, width).eval()
        masks = random_masks(model, args.density)
        zoo_time, zoo = timed(lambda: compose_module(model, masks, CLASSES), args.repeats)  # noqa: B023
        graph_time, graph = timed(lambda: compose_graph(model, masks, CLASSES, x), args.repeats)  # noqa: B023
        full = parameter_count(model)
        rows.append({"model": f"zoo {name}", "params": full, "zoo_seconds": zoo_time, "graph_seconds": graph_time,
                     "ratio": graph_time / zoo_time, "zoo_kept": parameter_count(zoo) / full,
                     "graph_kept": parameter_count(graph.module) / full, "kept_whole": len(graph.report)})
    for name, model in outside_models().items():
        model = model.eval()
        masks = random_masks(model, args.density)
        graph_time, graph = timed(lambda: compose_graph(model, masks, CLASSES, x), args.repeats)  # noqa: B023
        full = parameter_count(model)
        rows.append({"model": name, "params": full, "zoo_seconds": None, "graph_seconds": graph_time, "ratio": None,
                     "zoo_kept": None, "graph_kept": parameter_count(graph.module) / full,
                     "kept_whole": len(graph.report)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    lines = [f"Composing classes {CLASSES} from random masks of density {args.density} (median of {args.repeats}; "
             f"{torch.get_num_threads()} CPU threads)", "",
             "| model | parameters | zoo composer s | graph composer s | graph / zoo | zoo keeps | graph keeps | "
             "ops kept whole |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        zoo_seconds = "—" if row["zoo_seconds"] is None else f"{row['zoo_seconds']:.3f}"
        ratio = "—" if row["ratio"] is None else f"{row['ratio']:.1f}×"
        zoo_kept = "—" if row["zoo_kept"] is None else f"{row['zoo_kept']:.1%}"
        lines.append(f"| {row['model']} | {row['params']:,} | {zoo_seconds} | {row['graph_seconds']:.3f} | {ratio} | "
                     f"{zoo_kept} | {row['graph_kept']:.1%} | {row['kept_whole']} |")
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "compose_any.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
