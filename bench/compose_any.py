"""Composition on the one graph, next to the composers it replaced, side by side in one process.

For every zoo model the graph composer (``moda_core.compose.compose_module``) builds the module of two classes from
the same random masks: its time (median of ``--repeats``, the model's graph already read, as a served dashboard
has it) and the first call's (which reads the graph), and the share of the parameters it keeps; and the module
summary of all ten classes (``moda_core.summary.module_summary``: sizes and the overlap of every pair, what a τ
step on the Activations and Modules pages computes). With ``--baseline REF`` (a git revision from before the one
graph, e.g. ``d59e959``) the script extracts that revision's ``moda_core`` as the package ``moda_base`` and imports
it next to this one, so the zoo composer (block rules), the old graph composer and the old summary run on the same
models, masks and weights in the same process, their calls interleaved with the new one's (order alternating), and
the ratio new / old is of medians measured side by side. Then outside models (torchvision ResNet-18, VGG11-bn,
MobileNetV2 ×0.25, a small ViT, adapted to 1×28×28): time, kept share and ops kept whole.

    python -m bench.compose_any [--baseline REF] [--density 0.5] [--repeats 9] [--quick] [--json] [--out FILE]

The committed table is bench/results/compose_any.md (``--out bench/results/compose_any.md``). ``--quick``: LeNet-5
and the ViT of the zoo, no outside model, 2 repeats.
"""
from __future__ import annotations

import importlib
import io
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from bench import graph_models
from bench.common import ROOT, BenchParser, log, show, write_result
from moda_core.activations import point_units
from moda_core.compose import compose_module, parameter_count
from moda_core.graph import graph_of
from moda_core.loop import prepare_model
from moda_core.models import build_model
from moda_core.summary import module_summary

ZOO = ["lenet5", "vgg11", "resnet18", "mobilenet", "vit"]
CLASSES = [3, 7]


def random_masks(model: torch.nn.Module, density: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """The masks the previous version of this script drew: per point in forward order, 10 × units, unit 0 kept."""
    generator = torch.Generator().manual_seed(seed)
    masks = {}
    for name, units in point_units(model).items():
        mask = torch.rand(10, units, generator=generator) < density
        mask[:, 0] = True
        masks[name] = mask
    return masks


def side_by_side(functions: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, their calls interleaved (the order reversed every other round) after one
    call each, so that what the machine does meanwhile falls on all of them alike."""
    for function in functions.values():
        function()
    times: dict[str, list[float]] = {key: [] for key in functions}
    for round_ in range(repeats):
        for key in list(functions)[::1 if round_ % 2 else -1]:
            start = time.perf_counter()
            functions[key]()
            times[key].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in times.items()}


def baseline_package(ref: str, folder: Path) -> Any:
    """Revision ``ref``'s ``moda_core``, extracted into ``folder`` as the package ``moda_base`` (its imports renamed)
    and imported beside this one."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "moda_core"], capture_output=True,
                             check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    (folder / "moda_core").rename(folder / "moda_base")
    for path in (folder / "moda_base").rglob("*.py"):
        path.write_text(re.sub(r"\bmoda_core\b", "moda_base", path.read_text()))
    sys.path.insert(0, str(folder))
    for module in ("compose", "graph", "graph_compose", "models", "summary"):
        importlib.import_module(f"moda_base.{module}")
    return sys.modules["moda_base"]


def outside_models() -> dict[str, torch.nn.Module]:
    return {"torchvision resnet18": graph_models.tv_resnet18(), "torchvision vgg11_bn": graph_models.tv_vgg11_bn(),
            "torchvision mobilenet_v2 ×0.25": graph_models.tv_mobilenet_v2(),
            "torchvision ViT (2 layers)": graph_models.tv_vit()}


def old_masks(base: Any, old: torch.nn.Module, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """The same masks under the baseline's names for its activation sites (in forward order); None if they differ."""
    sites = base.graph.activation_sites(old, example_input=torch.zeros(1, 1, 28, 28))
    if [s.units for s in sites.values()] != [m.shape[1] for m in masks.values()]:
        return None
    return dict(zip(sites, masks.values(), strict=True))


def measure(model: torch.nn.Module, density: float, repeats: int, base: Any = None, zoo: str | None = None) -> dict:
    """One row: the graph composer and the summary, and with ``base`` the baseline's, timed side by side."""
    masks = random_masks(model, density)
    start = time.perf_counter()
    composed = compose_module(model, masks, CLASSES)  # the first call reads the graph
    first = time.perf_counter() - start
    functions = {"seconds": lambda: compose_module(model, masks, CLASSES)}
    summaries = {"summary_seconds": lambda: module_summary(model, masks)}
    row = {"params": parameter_count(model), "first_seconds": first, "kept": parameter_count(composed) /
           parameter_count(model), "kept_whole": len(graph_of(model).kept_whole())}
    old = base.models.build_model(zoo, 1, 28, 10).eval() if base is not None and zoo else model
    theirs = old_masks(base, old, masks) if base is not None else None
    if zoo and theirs is not None:
        old.load_state_dict(model.state_dict())
        functions["old_zoo_seconds"] = lambda: base.compose.compose_module(old, theirs, CLASSES)
        summaries["old_summary_seconds"] = lambda: base.summary.module_summary(old, theirs)
        row["old_zoo_kept"] = parameter_count(base.compose.compose_module(old, theirs, CLASSES)) / row["params"]
    if theirs is not None:
        x = torch.zeros(2, 1, 28, 28)
        functions["old_graph_seconds"] = lambda: base.graph_compose.compose_graph(old, theirs, CLASSES, x)
    return {**row, **side_by_side(functions, repeats), **side_by_side(summaries, repeats)}


def main() -> None:
    parser = BenchParser(__doc__, quick={"zoo": ["lenet5", "vit"], "outside": False, "repeats": 2},
                         out="write the Markdown table here")
    parser.add_argument("--baseline", help="a git revision whose composers to measure beside this one's")
    parser.add_argument("--density", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--zoo", nargs="+", default=ZOO, choices=ZOO, help="the zoo models to measure")
    parser.add_argument("--no-outside", dest="outside", action="store_false", help="leave out the outside models")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="moda-baseline-") as folder:
        base = baseline_package(args.baseline, Path(folder)) if args.baseline else None
        rows = []
        for name in args.zoo:
            torch.manual_seed(0)
            model = build_model(name, 1, 28, 10).eval()
            rows.append({"model": f"zoo {name}", **measure(model, args.density, args.repeats, base, name)})
            log(f"zoo {name}: {rows[-1]['seconds']:.4f} s")
        for name, model in (outside_models() if args.outside else {}).items():
            model = prepare_model(model.eval(), torch.zeros(2, 1, 28, 28))
            rows.append({"model": name, **measure(model, args.density, args.repeats, base)})
            log(f"{name}: {rows[-1]['seconds']:.4f} s")
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    lines = [f"Composing classes {CLASSES} from random masks of density {args.density} (median of {args.repeats}; "
             f"{torch.get_num_threads()} CPU threads; load average {load})"
             + (f"; the old composers and summary from revision {args.baseline}, imported beside this one and run "
                "interleaved with it in the same process" if args.baseline else ""), "",
             "| model | parameters | one graph s (first call) | old zoo composer s | old graph composer s | "
             "one graph / zoo | one graph keeps | zoo kept | ops kept whole | summary s | old summary s | ratio |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    cell = lambda v, f: "—" if v is None else format(v, f)  # noqa: E731
    for row in rows:
        zoo, old_summary = row.get("old_zoo_seconds"), row.get("old_summary_seconds")
        ratio = row["seconds"] / zoo if zoo else None
        summary = row["summary_seconds"] / old_summary if old_summary else None
        lines.append(f"| {row['model']} | {row['params']:,} | {row['seconds']:.4f} ({row['first_seconds']:.2f}) | "
                     f"{cell(zoo, '.4f')} | {cell(row.get('old_graph_seconds'), '.4f')} | "
                     f"{cell(ratio, '.2f')}{'×' if ratio else ''} | {row['kept']:.1%} | "
                     f"{cell(row.get('old_zoo_kept'), '.1%')} | {row['kept_whole']} | {row['summary_seconds']:.4f} | "
                     f"{cell(old_summary, '.4f')} | {cell(summary, '.2f')}{'×' if summary else ''} |")
    text = "\n".join(lines) + "\n"
    if args.out:
        write_result(args.out, text)
    show(args, rows, text)


if __name__ == "__main__":
    main()
