"""Regenerate the dashboard's demo runs under ``assets/demo/`` (run once; the output is committed).

What it makes, all on the embedded ``mnist5k`` data with fixed seeds, on the CPU, at a converged
budget (100 epochs; at 15 epochs MODA's modules were still shrinking):

- ``vgg11-moda``      VGG11 (width 0.25), MODA training (α=1, β=1, γ=0.3), 100 epochs
- ``vgg11-standard``  the same model with standard training (α=β=γ=0), 100 epochs
- ``vgg11-mwt``       the same model with MwT (mask-based modular training, the baseline), 100 epochs
- ``swap-strong``     VGG11 (width 0.25), MODA on classes 0–4, 100 epochs: the module donor for swaps
- ``swap-weak``       LeNet-5 in the scarce-target repair setting (``moda_core.replace_experiment.weak_config``:
                      classes 3, 5–9, 10% of the data of 5–9 but only 2% of class 3, no augmentation,
                      batch 32), 40 epochs, with checkpoints at epochs 8 and 16 (under-fit; float32)
                      next to the last epoch (over-fit) — weak exactly at class 3 (0% of the test
                      3s at epoch 8, 81% at 40), where swap-strong's module helps
- ``vit-moda``        the small ViT (moda_core/models/vit.py, width 1), MODA training, 50 epochs
- ``vit-standard``    the same ViT with standard training, 50 epochs (both: final weights only, ~0.6 MB each;
                      ``bench/vit.py`` measures this pair)

The three ``vgg11-*`` runs train with a checkpoint every 5 epochs. The activation rates and test accuracy of every
one of those checkpoints ship in ``evolution-rates.safetensors`` (``moda_core.studies.save_evolution_rates``, about
0.7 MB a run), so "Modules over training" draws all twenty checkpoints at any τ without computing: a module at τ
follows from the rates alone. The VGG and ViT runs also ship ``tau_sweep.csv`` (``moda_core.studies.tau_sweep``:
mean module size, mean overlap and composed-pair accuracy for τ = 0.5 … 1.0), so the τ trade-off page draws at once;
``--tau-sweeps-only`` rewrites just those files in an existing bundle. Only a few checkpoints ship
(``KEPT_CHECKPOINTS``, MODA and standard), in half precision to keep ``assets/`` small (the dashboard upcasts them
to float32 when it loads them); the final weights stay in float32. The VGG runs, their kept checkpoints and the
strong run are decomposed at τ = 0.9, so their rates and masks ship in the run folders and the dashboard opens
without computing anything. ``optimizer.safetensors`` is deleted: demo runs cannot be resumed (train a copy
instead).

Usage::

    .venv/bin/python assets/make_demo.py                       # everything from scratch (see below)
    .venv/bin/python assets/make_demo.py --reuse RUNS_DIR      # take finished runs named as above from RUNS_DIR

From scratch, on 2 uncontended CPU cores, each 100-epoch VGG run takes 10–12 minutes and the ViT pair
about 55 (the weak LeNet-5 seconds). ``--reuse`` takes any of the runs found (complete, and trained with
exactly the settings above: the script checks the config and refuses a mismatch; a VGG run needs all
its periodic checkpoints, whose rates are recorded) and trains the others. The reused folders are only
read, so a bundled run can be reused for everything but the VGG runs (whose bundles keep two checkpoints).
Training is deterministic on the CPU for a fixed torch version and training code, so a rerun reproduces the
same weights; ``tests/test_demo_bundle.py`` checks that the stored metrics, masks and recorded evolution match
a fresh evaluation of the stored weights.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from moda_core import runs
from moda_core.decompose import DEFAULT_TAU, decompose
from moda_core.errors import ModaError
from moda_core.io import atomic_write_bytes, load_tensors, save_tensors
from moda_core.replace_experiment import strong_config, weak_config
from moda_core.studies import evolution_states, measure_states, save_evolution_rates, tau_sweep, training_evolution
from moda_core.train import TrainConfig, setting_differences, train

EPOCHS = 100  # the VGG runs' budget
CHECKPOINT_EVERY = 5
TAU_SWEEP_FILE = "tau_sweep.csv"  # moda_core.studies.tau_sweep over its default τ grid (the τ trade-off page)
SWEPT_PREFIXES = ("vgg11-", "vit-")  # the runs whose τ trade-off ships (each with its standard twin)
KEPT_CHECKPOINTS = {"vgg11-moda": (5, 20), "vgg11-standard": (5, 20)}  # shipped in float16
MIXED_CLASS = 3  # the weak model's scarce class, repaired with swap-strong's module
WEAK_EPOCHS, WEAK_CHECKPOINT_EVERY, WEAK_KEPT = 40, 8, (8, 16)
VIT_EPOCHS, VIT_CHECKPOINT_EVERY = 50, 10  # the ViT pair's budget (bench/vit.py --train trains the same runs)


def demo_configs(epochs: int = EPOCHS) -> dict[str, TrainConfig]:
    """Run name → its training config."""
    vgg = dict(model="vgg11", dataset="mnist5k", width=0.25, epochs=epochs, seed=0, device="cpu",
               checkpoint_every=CHECKPOINT_EVERY)
    return {
        "vgg11-moda": TrainConfig(**vgg, alpha=1.0, beta=1.0, gamma=0.3),
        "vgg11-standard": TrainConfig(**vgg, alpha=0.0, beta=0.0, gamma=0.0),
        "vgg11-mwt": TrainConfig(**vgg, method="mwt"),
        "swap-strong": strong_config(epochs),
        "swap-weak": weak_config("scarce", MIXED_CLASS, WEAK_EPOCHS, checkpoint_every=WEAK_CHECKPOINT_EVERY),
        **{f"vit-{method}": TrainConfig(model="vit", dataset="mnist5k", width=1.0, epochs=VIT_EPOCHS, seed=0,
                                      device="cpu", checkpoint_every=VIT_CHECKPOINT_EVERY, **weights)
           for method, weights in (("moda", dict(alpha=1.0, beta=1.0, gamma=0.3)),
                                 ("standard", dict(alpha=0.0, beta=0.0, gamma=0.0)))},
    }


def reusable(source: Path, config: TrainConfig) -> bool:
    """Whether ``source`` is a finished run trained with ``config``'s settings (a mismatch is an error)."""
    if not source.is_dir():
        return False
    summary = runs.summarize_run(source)
    if summary.status is not runs.RunStatus.COMPLETE:
        raise ModaError(f"--reuse: {source} is not a finished run (status {summary.status}: {summary.error})")
    stored = runs.read_config(source).get("train", {})
    differs = setting_differences(stored, config)  # a reused run's other settings (device, logging) may differ
    if config.checkpoint_every and stored.get("checkpoint_every") != config.checkpoint_every:
        differs["checkpoint_every"] = (stored.get("checkpoint_every"), config.checkpoint_every)  # evolution needs them
    if differs:
        raise ModaError(f"--reuse: {source} was trained with other settings (stored, wanted): {differs}")
    return True


def half_precision(path: Path) -> None:
    """Rewrite a weights file with its floating tensors in float16 (metadata kept)."""
    tensors, metadata = load_tensors(path)
    save_tensors(path, {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, metadata)


def bundle_run(source: Path, target: Path, kept: tuple[int, ...], half: bool = True) -> None:
    """Copy a finished run's readable files into ``target``: no optimizer state, only the ``kept``
    checkpoints (in float16 if ``half``), no decomposition files (made afresh)."""
    target.mkdir(parents=True)
    _, files = runs.resolve_files(source)
    for name in (runs.CONFIG, runs.MODEL, runs.HISTORY, runs.METRICS):
        shutil.copyfile(files.get(name, source / name), target / name)
    available = runs.list_checkpoints(source)
    missing = [e for e in kept if e not in available]
    if missing:
        raise ModaError(f"{source} has no checkpoint for epoch(s) {missing} (it has {available})")
    for epoch in kept:
        copy = runs.checkpoint_path(target, epoch)
        copy.parent.mkdir(exist_ok=True)
        shutil.copyfile(runs.checkpoint_path(source, epoch), copy)
        if half:
            half_precision(copy)


def evolution_records(source: Path, every: int = CHECKPOINT_EVERY) -> dict:
    """The rates and test accuracy of every state of a trained run (``studies.measure_states``), while all
    its checkpoints' weights are at hand (a run without all of them is refused)."""
    done = runs.summarize_run(source).epochs_done
    wanted = list(range(every, done, every))
    if [e for e in runs.list_checkpoints(source) if e < done] != wanted:
        raise ModaError(f"{source}: recording its evolution needs a checkpoint every {every} epochs, {wanted}; "
                        f"it has {runs.list_checkpoints(source)}")
    return {epoch: record for epoch, _, record in measure_states(evolution_states(source))}


def write_tau_sweep(run_dir: Path) -> None:
    """``tau_sweep.csv`` in a bundled run folder (its rates at the default τ are read, not measured again)."""
    table = tau_sweep(runs.load_run(run_dir))
    atomic_write_bytes(run_dir / TAU_SWEEP_FILE, table.to_csv(index=False, float_format="%.6f").encode())


def add_tau_sweeps(out: Path) -> None:
    """Write ``tau_sweep.csv`` into the existing bundle's swept runs, without training anything."""
    for run_dir in sorted(p for p in out.iterdir() if p.is_dir() and p.name.startswith(SWEPT_PREFIXES)):
        started = time.perf_counter()
        write_tau_sweep(run_dir)
        print(f"{run_dir.name}: {TAU_SWEEP_FILE} ({time.perf_counter() - started:.0f} s)", flush=True)


def make_demo(out: Path, reuse: Path | None = None, epochs: int = EPOCHS) -> None:
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    torch.use_deterministic_algorithms(True)
    configs = demo_configs(epochs)
    with tempfile.TemporaryDirectory(prefix="moda-demo-") as scratch:
        staging = Path(scratch) / "demo"  # build next to nothing we keep; replace ``out`` only at the end
        staging.mkdir()
        for name, config in configs.items():
            started = time.perf_counter()
            source = reuse / name if reuse is not None else None
            if source is not None and reusable(source, config):
                how = f"reused from {source}"
            else:
                source = train(config, Path(scratch) / "trained", name).path
                how = "trained"
            if name.startswith("vgg11-"):
                records = evolution_records(source)
            kept = WEAK_KEPT if name == "swap-weak" else KEPT_CHECKPOINTS.get(name, ())
            bundle_run(source, staging / name, kept, half=name != "swap-weak")  # LeNet-5 is small: float32
            if name.startswith("vgg11-"):
                save_evolution_rates(staging / name, records)
            if name != "swap-weak":
                bundled = staging / name
                for spec in [runs.RunRef(bundled), *(runs.RunRef(bundled, e) for e in kept)]:
                    decompose(runs.load_run(spec), DEFAULT_TAU)
            if name.startswith(SWEPT_PREFIXES):
                write_tau_sweep(staging / name)
            run = runs.load_run(staging / name)
            line = f"{name}: {how}, test accuracy {run.metrics['test_accuracy']:.4f}"
            if name.startswith("vgg11-"):
                evolution = training_evolution(staging / name, DEFAULT_TAU)  # from the recorded rates
                last = evolution.iloc[-1]
                line += (f", modules {last['mean_module_size']:.1%} of the weights, "
                         f"mean overlap {last['mean_overlap']:.1%} (τ={DEFAULT_TAU})")
            print(f"{line} ({time.perf_counter() - started:.0f} s)", flush=True)
        fresh, old = out.parent / f".{out.name}.new", out.parent / f".{out.name}.old"
        for leftover in (fresh, old):
            shutil.rmtree(leftover, ignore_errors=True)
        shutil.copytree(staging, fresh)
        if out.exists():
            out.rename(old)  # swap in the new bundle with two renames (readers never see a half-made one)
        fresh.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"demo bundle in {out}: {size / 1e6:.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "demo")
    parser.add_argument("--reuse", type=Path, help="take finished runs of the same names and settings from this "
                                                   "folder instead of training them (only read)")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="epochs of the VGG runs")
    parser.add_argument("--tau-sweeps-only", action="store_true",
                        help=f"only (re)write {TAU_SWEEP_FILE} in the existing bundle's VGG and ViT runs")
    args = parser.parse_args()
    if args.reuse is not None and not args.reuse.is_dir():
        parser.error(f"--reuse {args.reuse}: no such folder")
    if args.tau_sweeps_only and not args.out.is_dir():
        parser.error(f"--tau-sweeps-only: no bundle in {args.out}")
    try:
        if args.tau_sweeps_only:
            add_tau_sweeps(args.out)
        else:
            make_demo(args.out, args.reuse, args.epochs)
    except ModaError as error:
        sys.exit(f"make_demo: {error}")


if __name__ == "__main__":
    main()
