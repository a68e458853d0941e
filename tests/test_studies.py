"""moda_core.studies: modules over training (one row per checkpoint) and the τ trade-off."""
from __future__ import annotations

import pytest

from moda_core import decompose as decompose_module
from moda_core import runs
from moda_core.compose import compose_module, parameter_count
from moda_core.decompose import decompose, masks_from_rates
from moda_core.errors import ModaError
from moda_core.metrics import composed_accuracy
from moda_core.studies import EVOLUTION_COLUMNS, TAU_COLUMNS, default_pairs, tau_sweep, training_evolution
from moda_core.summary import module_summary


def _files(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file())


def test_evolution_has_one_row_per_checkpoint_and_ends_at_the_final_weights(lenet_moda_run):
    before = _files(lenet_moda_run.path)
    calls = []
    frame = training_evolution(lenet_moda_run.path, tau=0.9, progress=lambda d, t: calls.append((d, t)))
    assert list(frame.columns) == EVOLUTION_COLUMNS
    assert frame["epoch"].tolist() == [1, 2, 3]  # checkpoints 1, 2, 3; epoch 3 is also the final weights
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert _files(lenet_moda_run.path) == before, "the study must not write into the run folder"
    final = runs.load_run(lenet_moda_run.path)
    summary = module_summary(final.model, decompose(final, 0.9, save=False, recompute=True).masks)
    last = frame.iloc[-1]
    assert last["mean_module_size"] == pytest.approx(summary.mean_size, abs=1e-12)
    assert last["mean_overlap"] == pytest.approx(summary.mean_overlap, abs=1e-12)
    assert last["test_accuracy"] == pytest.approx(final.metrics["test_accuracy"], abs=1e-6)
    first = runs.load_run(f"{lenet_moda_run.path}@1")
    early = module_summary(first.model, decompose(first, 0.9, save=False, recompute=True).masks)
    assert frame.iloc[0]["mean_module_size"] == pytest.approx(early.mean_size, abs=1e-12)
    assert frame.iloc[0]["test_accuracy"] == pytest.approx(first.history[0]["test_accuracy"], abs=1e-6)
    # a spec RUN@E names the same run: the whole run is studied
    assert training_evolution(f"{lenet_moda_run.path}@2")["epoch"].tolist() == [1, 2, 3]


def test_tau_sweep_matches_module_summary_and_composition_at_each_tau(lenet_moda_run, monkeypatch):
    run = runs.load_run(lenet_moda_run.path)
    rates = decompose(run, 0.9, save=False, recompute=True).rates
    measured = []
    original = decompose_module.activation_rates
    monkeypatch.setattr("moda_core.decompose.activation_rates",
                        lambda *a, **k: measured.append(1) or original(*a, **k))
    monkeypatch.setattr("moda_core.decompose._load_stored", lambda *a, **k: None)  # force a measurement
    taus, pairs = (0.5, 0.8, 0.9, 1.0), [[0, 1], [3, 7]]
    calls = []
    frame = tau_sweep(run, taus, pairs, progress=lambda d, t: calls.append((d, t)))
    assert measured == [1], "rates must be measured once for all τ"
    assert list(frame.columns) == TAU_COLUMNS and frame["tau"].tolist() == list(taus)
    assert calls == [(i, len(taus)) for i in range(1, len(taus) + 1)]
    test = runs.run_dataset(run).test
    for tau, row in zip(taus, frame.itertuples(), strict=True):
        masks = masks_from_rates(rates, tau)
        summary = module_summary(run.model, masks)
        assert row.mean_module_size == pytest.approx(summary.mean_size, abs=1e-12)
        assert row.mean_overlap == pytest.approx(summary.mean_overlap, abs=1e-12)
        composed = [compose_module(run.model, masks, p) for p in pairs]
        assert row.pair_accuracy == pytest.approx(
            sum(composed_accuracy(c, test, p) for c, p in zip(composed, pairs, strict=True)) / len(pairs), abs=1e-12)
        assert row.pair_params_fraction == pytest.approx(
            sum(parameter_count(c) for c in composed) / len(pairs) / parameter_count(run.model), abs=1e-12)
    # a higher τ keeps fewer units, so modules shrink (the floor does not bind on this model)
    sizes = frame["mean_module_size"].tolist()
    assert all(a >= b for a, b in zip(sizes, sizes[1:], strict=False)) and sizes[0] > sizes[-1]


def test_tau_sweep_rejects_bad_input(lenet_moda_run):
    with pytest.raises(ModaError, match="tau"):
        tau_sweep(lenet_moda_run, taus=(0.5, 1.5), pairs=[[0, 1]])
    with pytest.raises(ModaError, match="pairs"):
        tau_sweep(lenet_moda_run, taus=(0.9,), pairs=[[0, 0]])
    with pytest.raises(ModaError, match="pairs"):
        tau_sweep(lenet_moda_run, taus=(0.9,), pairs=[[0, 10]])


def test_default_pairs_are_a_seeded_sample():
    assert default_pairs(10) == default_pairs(10) and len(default_pairs(10)) == 6
    assert all(len(p) == 2 and p[0] < p[1] for p in default_pairs(10))
    assert default_pairs(3) == [[0, 1], [0, 2], [1, 2]]
    with pytest.raises(ModaError):
        default_pairs(1)
