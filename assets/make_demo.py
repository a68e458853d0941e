"""Regenerate the dashboard's demo runs under ``assets/demo/`` (run once; the output is committed).

What it makes, all on the embedded ``mnist5k`` data with fixed seeds, on the CPU:

- ``vgg11-moda``      VGG11 (width 0.25) with MODA training (α=1, β=1, γ=0.3)
- ``vgg11-standard``  the same model with standard training (α=β=γ=0)
- ``swap-strong``     VGG11 (width 0.25) with MODA on classes 0–4: the module donor for swaps
- ``swap-weak``       LeNet-5 on classes 3, 5–9 (class 3 is the "mixed" class) with 10% of the data
                      and no augmentation, with checkpoints every few epochs (early = under-fit,
                      last = over-fit), as in the paper's repair setup (DESIGN.md §1.6); batch 32, since
                      10% of the data gives only 2 steps per epoch at batch 128

The VGG runs and the strong run are decomposed at τ = 0.9, so their rates and masks ship in the
run folders and the dashboard opens without computing anything. ``optimizer.safetensors`` is
deleted to keep the bundle small: demo runs cannot be resumed (train a copy instead).

Usage: ``.venv/bin/python assets/make_demo.py [--out assets/demo] [--epochs 12]``
(about two minutes on two CPU cores). Training is deterministic on the CPU for a fixed torch
version, so a rerun reproduces the same weights; ``tests/test_demo_bundle.py`` checks that the
stored metrics and masks match a fresh evaluation of the stored weights.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from moda_core import runs  # noqa: E402
from moda_core.decompose import DEFAULT_TAU, decompose  # noqa: E402
from moda_core.train import TrainConfig, train  # noqa: E402

MIXED_CLASS = 3  # the clearest repair in bench/results/repair.csv: 0.59 → 0.95 at epoch 8


def demo_configs(epochs: int) -> dict[str, tuple[TrainConfig, bool]]:
    """Run name → (training config, decompose it?)."""
    vgg = dict(model="vgg11", dataset="mnist5k", width=0.25, epochs=epochs, seed=0, device="cpu")
    return {
        "vgg11-moda": (TrainConfig(**vgg, alpha=1.0, beta=1.0, gamma=0.3), True),
        "vgg11-standard": (TrainConfig(**vgg, alpha=0.0, beta=0.0, gamma=0.0), True),
        "swap-strong": (TrainConfig(**vgg, alpha=1.0, beta=1.0, gamma=0.3, classes=[0, 1, 2, 3, 4]), True),
        "swap-weak": (TrainConfig(model="lenet5", dataset="mnist5k", epochs=40, alpha=0.0, beta=0.0, gamma=0.0,
                                  seed=0, classes=[MIXED_CLASS, 5, 6, 7, 8, 9], train_fraction=0.1,
                                  augment=False, checkpoint_every=8, batch_size=32, device="cpu"), False),
    }


def make_demo(out: Path, epochs: int) -> None:
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    torch.use_deterministic_algorithms(True)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name, (config, decomposed) in demo_configs(epochs).items():
        started = time.perf_counter()
        run = train(config, out, name)
        (run.path / runs.OPTIMIZER).unlink(missing_ok=True)
        if decomposed:
            decompose(run, DEFAULT_TAU)
        print(f"{name}: test accuracy {run.metrics['test_accuracy']:.4f} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"demo bundle in {out}: {size / 1e6:.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "assets" / "demo")
    parser.add_argument("--epochs", type=int, default=15, help="epochs of the VGG runs")
    args = parser.parse_args()
    make_demo(args.out, args.epochs)


if __name__ == "__main__":
    main()
