"""Composition on the one graph, next to the composers it replaced, side by side in one script.

For every zoo model the graph composer (``moda_core.compose.compose_module``) builds the module of two classes from
the same random masks: its time (median of ``--repeats``, the model's graph already read, as a served dashboard
has it) and the first call's (which reads the graph), and the share of the parameters it keeps; and the module
summary of all ten classes (``moda_core.summary.module_summary``: sizes and the overlap of every pair, what a τ
step on the Activations and Modules pages computes). With
``--baseline REF`` (a git revision from before the one graph, e.g. ``d59e959``) the script checks that revision out
into a temporary worktree and runs its own ``bench.compose_any --json`` there, in a subprocess, before and after
this one's measurements: that gives the zoo composer (block rules) and the old graph composer on the same models,
masks and machine, and the ratio new / old. Then outside models (torchvision ResNet-18, VGG11-bn, MobileNetV2 ×0.25,
a small ViT, adapted to 1×28×28): time, kept share and ops kept whole.

    python -m bench.compose_any [--baseline REF] [--density 0.5] [--repeats 5] [--json] [--out FILE]

Writes the table to ``--out`` only when given (the committed table is bench/results/compose_any.md).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from moda_core.activations import point_units
from moda_core.compose import compose_module, parameter_count
from moda_core.graph import graph_of
from moda_core.loop import prepare_model
from moda_core.models import build_model
from moda_core.summary import module_summary

ROOT = Path(__file__).resolve().parents[1]
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


def timed(function, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def outside_models() -> dict[str, torch.nn.Module]:
    sys.path.insert(0, str(ROOT / "tests"))  # the test suite's adapted models
    import graph_models

    return {"torchvision resnet18": graph_models.tv_resnet18(), "torchvision vgg11_bn": graph_models.tv_vgg11_bn(),
            "torchvision mobilenet_v2 ×0.25": graph_models.tv_mobilenet_v2(),
            "torchvision ViT (2 layers)": graph_models.tv_vit()}


def measure(model: torch.nn.Module, density: float, repeats: int) -> dict:
    masks = random_masks(model, density)
    start = time.perf_counter()
    compose_module(model, masks, CLASSES)  # the first call reads the graph
    first = time.perf_counter() - start
    seconds, composed = timed(lambda: compose_module(model, masks, CLASSES), repeats)
    summary_seconds, _ = timed(lambda: module_summary(model, masks), repeats)
    return {"params": parameter_count(model), "first_seconds": first, "seconds": seconds,
            "summary_seconds": summary_seconds, "kept": parameter_count(composed) / parameter_count(model),
            "kept_whole": len(graph_of(model).kept_whole())}


# the module summary of the zoo models as the baseline revision computes it (APIs both revisions have)
SUMMARY_SNIPPET = """
import json, statistics, sys, time, torch
from moda_core.activations import run_with_cache
from moda_core.models import build_model
from moda_core.summary import module_summary
from moda_core.summary import module_summary
density, repeats, rows = float(sys.argv[1]), int(sys.argv[2]), {}
for name in %r:
    model = build_model(name, 1, 28, 10).eval()
    _, cache = run_with_cache(model, torch.zeros(1, 1, 28, 28))
    generator, masks = torch.Generator().manual_seed(0), {}
    for point, activation in cache.items():
        masks[point] = torch.rand(10, activation.shape[1], generator=generator) < density
        masks[point][:, 0] = True
    module_summary(model, masks)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        module_summary(model, masks)
        times.append(time.perf_counter() - start)
    rows["zoo " + name] = statistics.median(times)
print(json.dumps(rows))
""" % (ZOO,)


def baseline(ref: str, density: float, repeats: int) -> dict[str, dict]:
    """The old script's rows (zoo and graph composers), run from a worktree of ``ref``."""
    with tempfile.TemporaryDirectory(prefix="moda-baseline-") as folder:
        tree = Path(folder) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref], check=True,
                       capture_output=True)
        try:
            env = {**os.environ, "PYTHONPATH": str(tree)}
            done = subprocess.run([sys.executable, "-m", "bench.compose_any", "--json", "--density", str(density),
                                   "--repeats", str(repeats)], cwd=tree, env=env, capture_output=True, text=True,
                                  check=True)
            summaries = subprocess.run([sys.executable, "-c", SUMMARY_SNIPPET, str(density), str(repeats)], cwd=tree,
                                       env=env, capture_output=True, text=True, check=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)
    rows = {row["model"]: row for row in json.loads(done.stdout)}
    for name, seconds in json.loads(summaries.stdout).items():
        rows[name]["summary_seconds"] = seconds
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="a git revision whose composers to measure beside this one's")
    parser.add_argument("--density", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    before = baseline(args.baseline, args.density, args.repeats) if args.baseline else {}
    rows = []
    for name in ZOO:
        torch.manual_seed(0)
        rows.append({"model": f"zoo {name}", **measure(build_model(name, 1, 28, 10).eval(), args.density,
                                                        args.repeats)})
    for name, model in outside_models().items():
        rows.append({"model": name, **measure(prepare_model(model.eval(), torch.zeros(2, 1, 28, 28)), args.density,
                                              args.repeats)})
    after = baseline(args.baseline, args.density, args.repeats) if args.baseline else {}
    for row in rows:  # the baseline's two runs, one before and one after this one's: their mean
        old = [run[row["model"]] for run in (before, after) if row["model"] in run]
        for key in ("zoo_seconds", "graph_seconds", "zoo_kept", "graph_kept", "summary_seconds"):
            values = [o[key] for o in old if o.get(key) is not None]
            row[f"old_{key}"] = sum(values) / len(values) if values else None
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    lines = [f"Composing classes {CLASSES} from random masks of density {args.density} (median of {args.repeats}; "
             f"{torch.get_num_threads()} CPU threads; load average {load})"
             + (f"; the old composers from revision {args.baseline}, run by this script in a worktree, before and "
                "after these measurements (their mean)" if args.baseline else ""), "",
             "| model | parameters | one graph s (first call) | old zoo composer s | old graph composer s | "
             "one graph / zoo | one graph keeps | zoo kept | ops kept whole | summary s | old summary s | ratio |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    cell = lambda v, f: "—" if v is None else format(v, f)  # noqa: E731
    for row in rows:
        ratio = row["seconds"] / row["old_zoo_seconds"] if row["old_zoo_seconds"] else None
        summary = row["summary_seconds"] / row["old_summary_seconds"] if row["old_summary_seconds"] else None
        lines.append(f"| {row['model']} | {row['params']:,} | {row['seconds']:.3f} ({row['first_seconds']:.2f}) | "
                     f"{cell(row['old_zoo_seconds'], '.3f')} | {cell(row['old_graph_seconds'], '.3f')} | "
                     f"{cell(ratio, '.2f')}{'×' if ratio else ''} | {row['kept']:.1%} | "
                     f"{cell(row['old_zoo_kept'], '.1%')} | {row['kept_whole']} | {row['summary_seconds']:.4f} | "
                     f"{cell(row['old_summary_seconds'], '.4f')} | {cell(summary, '.2f')}{'×' if summary else ''} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
