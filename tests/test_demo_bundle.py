"""The bundled demo runs (assets/demo/, made by assets/make_demo.py) are what they claim to be:
their stored metrics, decompositions and recorded evolutions match a fresh evaluation of the stored
weights, and the converged MODA run shows what the method promises."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from moda_core import runs
from moda_core.decompose import DEFAULT_TAU, decompose, load_decomposition
from moda_core.evaluate import accuracy, predict_logits
from moda_core.io import read_tensor_header
from moda_core.studies import (
    DEFAULT_TAUS,
    EVOLUTION_COLUMNS,
    EVOLUTION_RATES,
    TAU_COLUMNS,
    load_evolution_rates,
    tau_sweep,
    training_evolution,
)
from moda_core.summary import module_summary

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEMO = ASSETS / "demo"
VGG_RUNS = ["vgg11-moda", "vgg11-standard", "vgg11-mwt"]
VIT_RUNS = ["vit-moda", "vit-standard"]  # H14B's pair: final weights only
DEMO_RUNS = [*VGG_RUNS, "swap-strong", "swap-weak", *VIT_RUNS]
DECOMPOSED = [*VGG_RUNS, "swap-strong", *VIT_RUNS]
TAU_SWEEP = "tau_sweep.csv"
ASSETS_BUDGET_MB = 25  # the whole assets/ folder: demo runs, mnist5k.npz (0.8 MB), scripts


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def test_bundle_is_complete_and_small():
    summaries = {s.name: s for s in runs.list_runs(DEMO)}
    assert sorted(summaries) == sorted(DEMO_RUNS)
    assert all(s.error is None and s.status == "complete" for s in summaries.values())
    assert summaries["vgg11-moda"].alpha > 0 and summaries["vgg11-standard"].alpha == 0
    assert summaries["vgg11-mwt"].method == "mwt"
    assert all(summaries[name].epochs_done == 100 for name in [*VGG_RUNS, "swap-strong"])  # converged budget
    assert all(summaries[name].epochs_done == 50 for name in VIT_RUNS)
    weak = summaries["swap-weak"]
    assert weak.checkpoints and max(weak.checkpoints) < weak.epochs_done  # under-fit early, over-fit last
    assert len(summaries["vgg11-moda"].checkpoints) >= 2 and summaries["vgg11-standard"].checkpoints
    assert not list(DEMO.rglob(runs.OPTIMIZER))  # demo runs are not resumable: no optimizer state
    assert _size_mb(ASSETS) < ASSETS_BUDGET_MB


def test_half_precision_checkpoints_load_as_float32():
    spec = f"{DEMO / 'vgg11-moda'}@{runs.list_checkpoints(DEMO / 'vgg11-moda')[0]}"
    header = read_tensor_header(runs.load_run(spec).weights_path)
    assert {info["dtype"] for name, info in header.items() if name != "__metadata__" and "weight" in name} == {"F16"}
    run = runs.load_run(spec)
    assert all(p.dtype == torch.float32 for p in run.model.parameters())


@pytest.mark.parametrize("name", DEMO_RUNS)
def test_bundled_metrics_match_fresh_evaluation(name):
    run = runs.load_run(DEMO / name)
    test = runs.run_dataset(run).test
    assert accuracy(predict_logits(run.model, test), test.labels) == pytest.approx(run.metrics["test_accuracy"],
                                                                                  abs=1e-6)
    assert run.history[-1]["test_accuracy"] == pytest.approx(run.metrics["test_accuracy"], abs=1e-6)


# the three fresh recomputations below go over the data set for every bundled run and checkpoint (about two
# minutes together on 2 cores): end to end, so they run in the slow lane
@pytest.mark.slow
@pytest.mark.parametrize("name", DECOMPOSED)
def test_bundled_decomposition_matches_recomputation(name):
    run = runs.load_run(DEMO / name)
    stored = load_decomposition(run, DEFAULT_TAU, save=False)
    assert stored is not None, "the bundle must carry a current decomposition at the default tau"
    fresh = decompose(run, DEFAULT_TAU, recompute=True, save=False)
    assert stored.points == fresh.points and stored.class_counts == fresh.class_counts
    # The bundle was decomposed on another CPU. Where an activation lies within rounding of zero, that CPU's
    # vector code may call the unit fired where this one does not, so one sample's unit may flip: a rate may
    # differ by one sample of its class (1/class count), and a mask only at a unit whose rate is within one
    # sample of τ (the flip moved it across). Anything more is a real mismatch.
    one_sample = 1 / torch.tensor(fresh.class_counts, dtype=torch.float32)[:, None]
    for point in fresh.points:
        difference = (stored.rates[point] - fresh.rates[point]).abs()
        assert (difference <= one_sample + 1e-6).all(), (point, difference.max().item())
        flipped = stored.masks[point] != fresh.masks[point]
        near_tau = (fresh.rates[point] - DEFAULT_TAU).abs() <= one_sample + 1e-6
        assert not (flipped & ~near_tau).any(), point
    for epoch in runs.list_checkpoints(DEMO / name):  # kept checkpoints open without computing too
        assert load_decomposition(runs.load_run(f"{DEMO / name}@{epoch}"), DEFAULT_TAU, save=False) is not None


@pytest.mark.parametrize("name", VGG_RUNS)
def test_recorded_evolution_covers_every_checkpoint_and_agrees_with_the_run(name):
    run = runs.load_run(DEMO / name)
    recorded = load_evolution_rates(run)
    assert sorted(recorded) == list(range(5, 101, 5))  # every 5-epoch checkpoint, the last = final weights
    for epoch, (_, acc) in recorded.items():  # the accuracy training logged at that epoch
        assert acc == pytest.approx(run.history[epoch - 1]["test_accuracy"], abs=1e-6), epoch
    assert recorded[100][1] == pytest.approx(run.metrics["test_accuracy"], abs=1e-6)
    stored = load_decomposition(run, DEFAULT_TAU, save=False)  # the final weights' rates, measured twice
    for point, rates in stored.rates.items():
        assert torch.equal(recorded[100][0][point], rates), point
    frame = training_evolution(run, DEFAULT_TAU)
    assert list(frame.columns) == EVOLUTION_COLUMNS and frame["epoch"].tolist() == sorted(recorded)
    summary = module_summary(run.model, stored.masks)
    assert frame.iloc[-1]["mean_module_size"] == pytest.approx(summary.mean_size, abs=1e-12)
    assert frame.iloc[-1]["mean_overlap"] == pytest.approx(summary.mean_overlap, abs=1e-12)
    assert (DEMO / name / EVOLUTION_RATES).stat().st_size < 1.5e6


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg11-moda", "vgg11-standard"])
def test_recorded_rates_of_the_kept_checkpoints_match_their_weights(name):
    """The kept checkpoints ship in float16; their rates were recorded from the float32 weights."""
    recorded = load_evolution_rates(runs.load_run(DEMO / name))
    for epoch in runs.list_checkpoints(DEMO / name):
        checkpoint = runs.load_run(f"{DEMO / name}@{epoch}")
        fresh = decompose(checkpoint, DEFAULT_TAU, recompute=True, save=False)
        for point, rates in fresh.rates.items():
            assert (recorded[epoch][0][point] - rates).abs().max() <= 0.02, (epoch, point)
        early = module_summary(checkpoint.model, fresh.masks)
        row = training_evolution(DEMO / name, DEFAULT_TAU).set_index("epoch").loc[epoch]
        assert early.mean_size == pytest.approx(row["mean_module_size"], abs=0.01)
        test = runs.run_dataset(checkpoint).test
        assert accuracy(predict_logits(checkpoint.model, test), test.labels) == pytest.approx(row["test_accuracy"],
                                                                                             abs=0.005)


@pytest.mark.slow
@pytest.mark.parametrize("name", [*VGG_RUNS, *VIT_RUNS])
def test_tau_sweep_table_matches_a_fresh_sweep(name):
    table = pd.read_csv(DEMO / name / TAU_SWEEP)
    assert list(table.columns) == TAU_COLUMNS and table["tau"].tolist() == pytest.approx(list(DEFAULT_TAUS))
    assert table["mean_module_size"].is_monotonic_decreasing  # a higher τ never keeps more units
    fresh = tau_sweep(runs.load_run(DEMO / name), taus=[0.7, DEFAULT_TAU])
    for _, row in fresh.iterrows():
        shipped = table[table["tau"].round(6) == round(row["tau"], 6)].iloc[0]
        for column in TAU_COLUMNS[1:]:
            assert shipped[column] == pytest.approx(row[column], abs=1e-5), (row["tau"], column)


def test_converged_moda_demo_keeps_the_papers_promise():
    """The converged MODA demo: its modules ≤ 12% of the weights, mean overlap ≤ 5%, accuracy within
    1.5 points of standard training, whose modules stay large."""
    evolutions = {name: training_evolution(DEMO / name, DEFAULT_TAU) for name in VGG_RUNS}  # recorded rates
    final = {name: frame.iloc[-1] for name, frame in evolutions.items()}
    moda, standard = final["vgg11-moda"], final["vgg11-standard"]
    assert moda["mean_module_size"] <= 0.12 and moda["mean_overlap"] <= 0.05
    assert abs(moda["test_accuracy"] - standard["test_accuracy"]) <= 0.015
    assert standard["mean_module_size"] >= 0.5
    evolution = evolutions["vgg11-moda"]
    assert evolution["mean_module_size"].iloc[0] > 2 * moda["mean_module_size"]  # modules form over training
    sweep = {name: pd.read_csv(DEMO / name / TAU_SWEEP).set_index("tau") for name in ("vgg11-moda", "vgg11-standard")}
    assert sweep["vgg11-moda"].loc[0.9, "mean_module_size"] == pytest.approx(moda["mean_module_size"], abs=1e-5)
    # at every τ of the trade-off MODA's modules stay far smaller than standard training's
    assert (sweep["vgg11-moda"]["mean_module_size"] < 0.5 * sweep["vgg11-standard"]["mean_module_size"]).all()


def _make_demo_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_demo", ASSETS / "make_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bundling_a_run_keeps_chosen_checkpoints_in_half_precision(lenet_moda_run, tmp_path):
    make_demo = _make_demo_module()
    target = tmp_path / "bundled"
    make_demo.bundle_run(lenet_moda_run.path, target, (1, 2))
    assert runs.list_checkpoints(target) == [1, 2] and not (target / runs.OPTIMIZER).exists()
    header = read_tensor_header(runs.checkpoint_path(target, 1))
    assert {info["dtype"] for name, info in header.items() if name != "__metadata__"} <= {"F16", "I64"}
    original, bundled = runs.load_run(f"{lenet_moda_run.path}@1"), runs.load_run(f"{target}@1")
    for (name, a), b in zip(original.model.state_dict().items(), bundled.model.state_dict().values(), strict=True):
        assert b.dtype == a.dtype and torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-3), name
    assert runs.load_run(target).metrics == lenet_moda_run.metrics  # final weights: copied as they are
    with pytest.raises(Exception, match="no checkpoint for epoch"):
        make_demo.bundle_run(lenet_moda_run.path, tmp_path / "other", (7,))


def test_reuse_refuses_a_run_trained_with_other_settings(lenet_moda_run):
    make_demo = _make_demo_module()
    from moda_core.train import TrainConfig

    same = TrainConfig(model="lenet5", epochs=3, seed=0, checkpoint_every=1)
    assert make_demo.reusable(lenet_moda_run.path, same)
    assert not make_demo.reusable(lenet_moda_run.path.parent / "absent", same)
    with pytest.raises(Exception, match="other settings"):
        make_demo.reusable(lenet_moda_run.path, TrainConfig(model="lenet5", epochs=4, seed=0, checkpoint_every=1))


def test_evolution_records_measure_every_state_and_need_every_checkpoint(lenet_moda_run, tmp_path):
    import shutil

    make_demo = _make_demo_module()
    records = make_demo.evolution_records(lenet_moda_run.path, every=1)
    assert sorted(records) == [1, 2, 3]
    measured = training_evolution(lenet_moda_run.path, DEFAULT_TAU)
    assert [acc for _, acc in records.values()] == pytest.approx(measured["test_accuracy"].tolist(), abs=1e-12)
    copy = tmp_path / "gap"
    shutil.copytree(lenet_moda_run.path, copy)
    runs.checkpoint_path(copy, 2).unlink()
    with pytest.raises(Exception, match=r"needs a checkpoint every 1 epochs, \[1, 2\]; it has \[1, 3\]"):
        make_demo.evolution_records(copy, every=1)
