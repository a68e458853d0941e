"""The Runs page's lecture presets (``dashboard.training.PRESETS``), trained as the page trains them: each preset's
MODA run and then its standard-trained twin, one after the other, into a temporary folder. For each run: wall time
from the call to the saved run (data, model, epochs, checkpoints), test accuracy, and its modules at τ = 0.9 (mean
size and mean pairwise overlap, all training images), next to the time and accuracy the page announces.

    python -m bench.presets [--models vgg11 lenet5] [--quick] [--json] [--out FILE.md]

The page's figures (``Preset.seconds``, ``Preset.accuracy``) come from this script's committed table,
bench/results/presets.md, run on a quiet 2-core machine; the table is written only with ``--out``. ``--quick``: the
LeNet-5 preset only.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

from bench.common import BenchParser, log, show, write_result
from moda_core.decompose import decompose
from moda_core.runs import load_run
from moda_core.summary import module_summary
from moda_core.train import train


def main() -> None:
    from dashboard.training import PRESETS

    parser = BenchParser(__doc__, quick={"models": ["lenet5"]}, out="write the Markdown table here")
    models = [preset.model for preset in PRESETS]
    parser.add_argument("--models", nargs="+", choices=models, default=models, help="the presets, by model")
    args = parser.parse_args()
    rows, records = [], []
    with tempfile.TemporaryDirectory() as folder:
        for preset in (p for p in PRESETS if p.model in args.models):
            for config, announced in zip(preset.configs(), preset.seconds, strict=True):
                start = time.perf_counter()
                run = train(config, Path(folder) / preset.model)
                seconds = time.perf_counter() - start
                summary = module_summary(run.model, decompose(load_run(run.path), tau=0.9, save=False).masks)
                method = "MODA" if config.alpha else "standard"
                records.append({"preset": preset.title, "method": method, "seconds": seconds,
                                "announced_seconds": announced, "test_accuracy": run.metrics["test_accuracy"],
                                "announced_accuracy": preset.accuracy, "mean_module_size": summary.mean_size,
                                "mean_overlap": summary.mean_overlap})
                rows.append(f"| {preset.title} | {method} | {seconds:.1f} s (page: {announced} s) | "
                            f"{run.metrics['test_accuracy']:.1%} (page: ≥ {preset.accuracy:.0%}) | "
                            f"{summary.mean_size:.1%} | {summary.mean_overlap:.1%} |")
                log(rows[-1])
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    text = "\n".join([
        f"Lecture presets trained one after the other as the Runs page does (CPU, {torch.get_num_threads()} "
        f"threads, load average {load}); modules at τ = 0.9 on all training images.", "",
        "| preset | method | wall time | test accuracy | mean module size | mean overlap |",
        "|---|---|---:|---:|---:|---:|", *rows, ""])
    if args.out:
        write_result(args.out, text)
    show(args, records, text)


if __name__ == "__main__":
    main()
