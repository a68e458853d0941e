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


def _recorded_copy(run_path, target, keep_checkpoint_weights=False):
    """A copy of the run whose folder records every state's rates, then (unless told) loses the weights of
    its periodic checkpoints, as the demo ships."""
    import shutil

    from moda_core.studies import checkpoint_record, evolution_states, save_evolution_rates

    shutil.copytree(run_path, target)
    records = {epoch: checkpoint_record(runs.load_run(spec)) for epoch, spec in evolution_states(target)}
    save_evolution_rates(target, records)
    if not keep_checkpoint_weights:
        shutil.rmtree(target / runs.CHECKPOINTS)
    return target


@pytest.mark.parametrize("tau", [0.5, 0.73, 0.9, 1.0])
def test_recorded_rates_give_every_checkpoint_at_any_tau_without_the_weights(lenet_moda_run, tmp_path, tau):
    from moda_core.studies import evolution_is_recorded

    measured = training_evolution(lenet_moda_run.path, tau=tau)
    assert not evolution_is_recorded(lenet_moda_run.path)
    copy = _recorded_copy(lenet_moda_run.path, tmp_path / "recorded")
    assert runs.list_checkpoints(copy) == [] and evolution_is_recorded(copy)
    assert evolution_is_recorded(copy, most=3) and not evolution_is_recorded(copy, most=2)  # a bound on the work
    calls = []
    recorded = training_evolution(copy, tau=tau, progress=lambda d, t: calls.append((d, t)))
    assert recorded["epoch"].tolist() == [1, 2, 3] and calls[-1] == (3, 3)
    for column in EVOLUTION_COLUMNS:
        assert recorded[column].tolist() == pytest.approx(measured[column].tolist(), abs=1e-12), column


def test_recorded_rates_are_used_instead_of_measuring_again(lenet_moda_run, tmp_path, monkeypatch):
    copy = _recorded_copy(lenet_moda_run.path, tmp_path / "recorded", keep_checkpoint_weights=True)
    monkeypatch.setattr("moda_core.studies.run_rates", lambda *a, **k: pytest.fail("measured again"))
    assert training_evolution(copy, tau=0.8)["epoch"].tolist() == [1, 2, 3]


def test_a_checkpoint_newer_than_the_record_is_measured(lenet_moda_run, tmp_path):
    import shutil

    from moda_core.studies import EVOLUTION_RATES, evolution_is_recorded, load_evolution_rates

    copy = _recorded_copy(lenet_moda_run.path, tmp_path / "recorded", keep_checkpoint_weights=True)
    records = load_evolution_rates(runs.load_run(copy))
    from moda_core.studies import save_evolution_rates

    save_evolution_rates(copy, {epoch: records[epoch] for epoch in (1, 3)})  # epoch 2 not recorded
    assert not evolution_is_recorded(copy)
    frame = training_evolution(copy, tau=0.9)
    assert frame["epoch"].tolist() == [1, 2, 3]
    assert frame.iloc[1]["mean_module_size"] == pytest.approx(
        training_evolution(lenet_moda_run.path, tau=0.9).iloc[1]["mean_module_size"], abs=1e-12)
    shutil.copyfile(copy / EVOLUTION_RATES, tmp_path / "kept")  # the file is only read
    assert (tmp_path / "kept").read_bytes() == (copy / EVOLUTION_RATES).read_bytes()


def _rewrite(path, change):
    from moda_core.io import load_tensors, save_tensors

    tensors, meta = load_tensors(path)
    change(tensors, meta)
    save_tensors(path, tensors, meta)


@pytest.mark.parametrize("change, words", [
    (lambda t, m: m.update(epochs="[1, 2, 9]"), "epochs must be distinct whole numbers in 1..3"),
    (lambda t, m: m.update(epochs="[1, 1, 3]"), "epochs must be distinct"),
    (lambda t, m: m.pop("points"), "lacks readable epochs, points and test_accuracy"),
    (lambda t, m: m.update(test_accuracy="[0.5, 2.0, 0.9]"), "one fraction in [0, 1] per epoch"),
    (lambda t, m: m.update(points='["features.0.relu"]'), "but the model's are"),
    (lambda t, m: t.update({k: v[:, :-1] for k, v in t.items() if k.startswith("000002/")}), "do not match the model"),
    (lambda t, m: t.update({k: v + 1.5 for k, v in t.items() if k.startswith("000003/")}),
     "epoch 3 are not all in [0, 1]"),
    (lambda t, m: t.update({k: v * float("nan") for k, v in t.items() if k.startswith("000001/")}), "epoch 1 are not"),
])
def test_a_bad_evolution_file_is_named_with_what_is_wrong(lenet_moda_run, tmp_path, change, words):
    from moda_core.studies import EVOLUTION_RATES, evolution_is_recorded

    copy = _recorded_copy(lenet_moda_run.path, tmp_path / "recorded", keep_checkpoint_weights=True)
    _rewrite(copy / EVOLUTION_RATES, change)
    assert isinstance(evolution_is_recorded(copy), bool)  # reads the header only; never raises
    with pytest.raises(ModaError, match=r"evolution-rates\.safetensors") as error:
        training_evolution(copy, tau=0.9)
    assert words in str(error.value)


def test_an_evolution_file_that_is_not_a_tensor_file_is_an_error(lenet_moda_run, tmp_path):
    import shutil

    from moda_core.studies import EVOLUTION_RATES, evolution_is_recorded

    copy = tmp_path / "copy"
    shutil.copytree(lenet_moda_run.path, copy)
    (copy / EVOLUTION_RATES).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    assert not evolution_is_recorded(copy)
    with pytest.raises(ModaError, match=EVOLUTION_RATES):
        training_evolution(copy, tau=0.9)


def test_save_evolution_rates_refuses_nothing_and_mixed_points(tmp_path):
    import torch

    from moda_core.studies import save_evolution_rates

    with pytest.raises(ModaError, match="no checkpoint"):
        save_evolution_rates(tmp_path, {})
    with pytest.raises(ModaError, match="epoch 2 has points"):
        save_evolution_rates(tmp_path, {1: ({"a": torch.zeros(2, 3)}, 0.5), 2: ({"b": torch.zeros(2, 3)}, 0.5)})
