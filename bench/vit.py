"""MODA vs standard training of the small ViT (moda_core/models/vit.py) on mnist5k, from two runs.

For each run: test accuracy, the share of MLP hidden units a class's mask keeps (mean over classes
and blocks), mean single-class module size and mean pairwise weight overlap (τ = 0.9 by default),
and over a sample of class pairs the composed two-class module's parameter and FLOPs fractions and
accuracy next to the STANDARD model's accuracy on the same pairs (restricted to the same two logits).
It also reports the floor every ViT module sits on: the parameters no mask can drop (patch and
position embeddings, attention, the norms, the MLP output biases: the residual stream is shared), as
a fraction of the model, for one class and for a pair (+ its head rows), and the FLOPs of a pair
module with no MLP hidden unit at all, and the full model's test accuracy with every MLP hidden unit
zeroed (what the floor alone does). ``--out FILE.csv`` writes the table with its Markdown next to it (``.md``;
the committed ones are bench/results/vit.csv and vit.md).

    python -m bench.vit --moda runs/vit-moda --standard runs/vit-standard     # measure two finished runs
    python -m bench.vit --train --epochs 50 --runs-dir runs                   # train them first (CPU: ~1 h)
    python -m bench.vit --moda runs/vit-moda@30 --standard runs/vit-standard@30 --out /tmp/vit-e30.csv
    python -m bench.vit --moda assets/demo/vit-moda --standard assets/demo/vit-standard --out bench/results/vit.csv

``--quick``: 5 class pairs (and 2 epochs with ``--train``).

Run specs take ``@EPOCH`` for a periodic checkpoint. Runs are only read: masks are decomposed in
memory and never written into the run folders.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import pandas as pd
import torch

from bench.common import METHODS, BenchParser, log, median_epoch_seconds, show, write_result
from moda_core.activations import masked_model, point_units
from moda_core.compose import parameter_count
from moda_core.decompose import decompose
from moda_core.errors import ModaError
from moda_core.evaluate import accuracy, predict_logits
from moda_core.methods import method_of
from moda_core.metrics import count_flops, subtask_sets, subtask_sweep
from moda_core.models.vit import ViTBlock
from moda_core.runs import load_run, run_dataset
from moda_core.summary import module_summary
from moda_core.train import TrainConfig, train

COLUMNS = ("method", "epoch", "test_accuracy", "seconds_per_epoch", "mlp_units_kept", "mean_module_size",
           "mean_overlap", "accuracy_without_mlp", "pairs",
           "pair_params_fraction", "pair_flops_fraction", "pair_composed_accuracy",
           "pair_standard_accuracy", "floor_module", "floor_pair", "floor_pair_flops")


def vit_floor(model) -> dict[str, float]:
    """What every module of ``model`` keeps whatever its masks: fractions of the full model.

    ``floor_module``: parameters outside the MLP hidden units and the head, plus one head row (a
    single-class module); ``floor_pair``: the same with two head rows; ``floor_pair_flops``: FLOPs of
    a two-class module that keeps no MLP hidden unit (attention, norms, embeddings, token mean, 2 logits).
    """
    blocks = [m for m in model.modules() if isinstance(m, ViTBlock)]
    if not blocks:
        raise ModaError(f"bench/vit.py measures ViT runs; this model ({model.arch.get('name')}) has no ViTBlock")
    sliced = sum(b.mlp.fc1.weight.numel() + b.mlp.fc1.bias.numel() + b.mlp.fc2.weight.numel() for b in blocks)
    head, total = model.head, parameter_count(model)
    whole = total - sliced - parameter_count(head)
    row = head.in_features + 1
    tokens = model.embed.tokens
    flops = count_flops(model, model.input_shape)
    mlp_flops = sum(2 * tokens * 2 * b.mlp.fc1.in_features * b.mlp.fc1.out_features for b in blocks)
    head_flops = 2 * head.in_features * (head.out_features - 2)
    return {"floor_module": (whole + row) / total, "floor_pair": (whole + 2 * row) / total,
            "floor_pair_flops": (flops - mlp_flops - head_flops) / flops}


def accuracy_without_mlp(model, test) -> float:
    """Test accuracy of the full model with EVERY MLP hidden unit zeroed: what attention, norms and
    embeddings (the floor) do on their own."""
    none = {point: torch.zeros(units, dtype=torch.bool) for point, units in point_units(model).items()}
    with torch.no_grad():
        return accuracy(predict_logits(masked_model(model, none), test), test.labels)


def measure(run, standard, pairs: list[list[int]], tau: float) -> dict:
    masks = decompose(run, tau, save=False).masks
    summary = module_summary(run.model, masks)
    test = run_dataset(run).test
    sweep = subtask_sweep(run.model, masks, test, pairs, reference=standard.model)
    return {"method": method_of(run.config).name, "epoch": run.epoch,
            "test_accuracy": run.history[run.epoch - 1]["test_accuracy"],
            "seconds_per_epoch": median_epoch_seconds(run),
            "mlp_units_kept": statistics.mean(m.float().mean().item() for m in masks.values()),
            "mean_module_size": summary.mean_size, "mean_overlap": summary.mean_overlap,
            "accuracy_without_mlp": accuracy_without_mlp(run.model, test), "pairs": len(pairs),
            "pair_params_fraction": statistics.mean(r["params_fraction"] for r in sweep),
            "pair_flops_fraction": statistics.mean(r["flops_fraction"] for r in sweep),
            "pair_composed_accuracy": statistics.mean(r["accuracy"] for r in sweep),
            "pair_standard_accuracy": statistics.mean(r["reference_accuracy"] for r in sweep),
            **vit_floor(run.model)}


def markdown(table: pd.DataFrame) -> str:
    lines = ["| method | epochs | test acc. | acc. without MLP units | MLP units per module | module size | overlap | "
             "pair model size | pair FLOPs | pair acc. (standard) | floor: module / pair / pair FLOPs |",
             "|" + "---|" * 11]
    for r in table.itertuples():
        lines.append(f"| {'MODA' if r.method == 'moda' else r.method} | {r.epoch} | {r.test_accuracy:.1%} | "
                     f"{r.accuracy_without_mlp:.1%} | {r.mlp_units_kept:.1%} | {r.mean_module_size:.1%} | "
                     f"{r.mean_overlap:.1%} | "
                     f"{r.pair_params_fraction:.1%} | "
                     f"{r.pair_flops_fraction:.1%} | {r.pair_composed_accuracy:.1%} ({r.pair_standard_accuracy:.1%}) | "
                     f"{r.floor_module:.1%} / {r.floor_pair:.1%} / {r.floor_pair_flops:.1%} |")
    return "\n".join(lines)


def main() -> None:
    parser = BenchParser(__doc__, quick={"pairs": 5, "epochs": 2},
                         out="write the table here as CSV, its Markdown next to it (.md)")
    parser.add_argument("--moda", default="runs/vit-moda", help="the MODA run (RUN or RUN@EPOCH)")
    parser.add_argument("--standard", default="runs/vit-standard", help="the standard run (RUN or RUN@EPOCH)")
    parser.add_argument("--train", action="store_true", help="train both runs first (into --runs-dir, named "
                                                             "vit-moda / vit-standard; an interrupted one resumes)")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tau", type=float, default=0.9)
    parser.add_argument("--pairs", type=int, default=45, help="class pairs to compose (45 = every pair of 10)")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.train:
        for method in ("moda", "standard"):
            name = f"vit-{method}"
            config = TrainConfig(model="vit", dataset="mnist5k", epochs=args.epochs, seed=args.seed,
                                 checkpoint_every=10, **METHODS[method])
            interrupted = (Path(args.runs_dir) / name).is_dir()
            train(config, args.runs_dir, name, resume=interrupted)
            log(f"[{time.perf_counter() - started:6.0f} s] trained {name}")
            setattr(args, method, str(Path(args.runs_dir) / name))
    moda, standard = load_run(args.moda), load_run(args.standard)
    for run in (moda, standard):
        if run.config["arch"]["name"] != "vit":
            raise ModaError(f"{run.path} is a {run.config['arch']['name']} run; bench/vit.py compares ViT runs")
    pairs = subtask_sets(moda.model.arch["num_classes"], [2], samples=args.pairs, seed=args.seed)
    rows = [measure(run, standard, pairs, args.tau) for run in (standard, moda)]
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    text = (f"ViT (width 1, mnist5k, seed {args.seed}, τ = {args.tau}, {len(pairs)} class pairs; "
            f"runs {moda.path.name}@{moda.epoch}, {standard.path.name}@{standard.epoch})\n\n" + markdown(table) + "\n")
    if args.out:
        write_result(args.out, table.to_csv(index=False))
        write_result(args.out.with_suffix(".md"), text)
    log(f"{time.perf_counter() - started:.0f} s in all")
    show(args, table.to_dict("records"), text)


if __name__ == "__main__":
    main()
