"""The bundled demo runs (assets/demo/, made by assets/make_demo.py) are what they claim to be:
their stored metrics and decompositions match a fresh evaluation of the stored weights."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from moda_core import runs
from moda_core.decompose import DEFAULT_TAU, decompose, load_decomposition
from moda_core.metrics import accuracy, predict_logits

DEMO = Path(__file__).resolve().parent.parent / "assets" / "demo"
DEMO_RUNS = ["vgg11-moda", "vgg11-standard", "swap-strong", "swap-weak"]
DECOMPOSED = ["vgg11-moda", "vgg11-standard", "swap-strong"]


def test_bundle_is_complete_and_small():
    summaries = {s["name"]: s for s in runs.list_runs(DEMO)}
    assert sorted(summaries) == sorted(DEMO_RUNS)
    assert all(s["error"] is None and s["status"] == "complete" for s in summaries.values())
    assert summaries["vgg11-moda"]["alpha"] > 0 and summaries["vgg11-standard"]["alpha"] == 0
    assert len(summaries["swap-weak"]["checkpoints"]) >= 2  # an early and a late checkpoint
    assert not list(DEMO.rglob(runs.OPTIMIZER))  # demo runs are not resumable: no optimizer state
    assert sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file()) < 15e6


@pytest.mark.parametrize("name", DEMO_RUNS)
def test_bundled_metrics_match_fresh_evaluation(name):
    run = runs.load_run(DEMO / name)
    test = runs.run_dataset(run).test
    assert accuracy(predict_logits(run.model, test), test.labels) == pytest.approx(run.metrics["test_accuracy"],
                                                                                  abs=1e-6)
    assert run.history[-1]["test_accuracy"] == pytest.approx(run.metrics["test_accuracy"], abs=1e-6)


@pytest.mark.parametrize("name", DECOMPOSED)
def test_bundled_decomposition_matches_recomputation(name):
    run = runs.load_run(DEMO / name)
    stored = load_decomposition(run, DEFAULT_TAU)
    assert stored is not None, "the bundle must carry a current decomposition at the default tau"
    fresh = decompose(run, DEFAULT_TAU, recompute=True, save=False)
    assert stored.points == fresh.points and stored.class_counts == fresh.class_counts
    for point in fresh.points:
        torch.testing.assert_close(stored.rates[point], fresh.rates[point])
        assert torch.equal(stored.masks[point], fresh.masks[point]), point
