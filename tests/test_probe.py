"""``moda_core.probe``: the live view's decomposition of one saved state on a fixed probe of its training images
gives the numbers a decomposition computed independently on the same images gives; a run or an epoch that is not
there is a clear ``ModaError``. (The dashboard's scheduling of it: test_training.py.)"""
from __future__ import annotations

import pytest
import torch
from helpers import DEMO

from moda_core.data import Split
from moda_core.decompose import activation_rates, masks_from_rates
from moda_core.errors import ModaError
from moda_core.methods import method_of
from moda_core.probe import PROBE_IMAGES, Probe, module_numbers, probe_rates, probe_split, spread, twin_states
from moda_core.runs import load_run, run_dataset
from moda_core.summary import module_summary


def test_the_probe_split_is_a_fixed_class_balanced_subset_of_at_most_500_images():
    labels = torch.tensor([k % 7 for k in range(3000)] + [7] * 3)  # class 7 has only 3 images
    split = Split(torch.arange(len(labels)).view(-1, 1, 1, 1), labels, torch.zeros(1), torch.ones(1))
    probe = probe_split(split, 8)
    assert len(probe) <= PROBE_IMAGES
    counts = torch.bincount(probe.labels, minlength=8).tolist()
    assert counts == [PROBE_IMAGES // 8] * 7 + [3]  # every class, none above its share
    assert probe.images.flatten().tolist() == sorted(probe.images.flatten().tolist())  # in the split's order
    assert torch.equal(probe_split(split, 8).images, probe.images)  # the same images every time
    assert torch.bincount(probe_split(split, 8, images=80).labels).tolist() == [10] * 7 + [3]


def first_of_each_class(split: Split, num_classes: int, per_class: int) -> Split:
    """The first ``per_class`` images of every class in the split's order, picked one by one (not by
    ``probe_split``)."""
    taken = [0] * num_classes
    index = []
    for i, label in enumerate(split.labels.tolist()):
        if taken[label] < per_class:
            taken[label] += 1
            index.append(i)
    return Split(split.images[index], split.labels[index], split.mean, split.std)


@pytest.mark.parametrize("spec", [f"{DEMO / 'swap-weak'}@16", str(DEMO / "vgg11-mwt")])
def test_the_probes_numbers_are_a_decomposition_of_the_same_images(spec):
    state = probe_rates(spec)
    run = load_run(spec)
    data = run_dataset(run)
    images = first_of_each_class(data.train, data.num_classes, PROBE_IMAGES // data.num_classes)
    assert torch.equal(state.probe.split.images, images.images) and state.probe.num_classes == data.num_classes
    # counted the way the run's method counts a firing unit (MwT: its ungated layers always fire)
    rates, _ = activation_rates(run.model, images, data.num_classes, firing=method_of(run.config).firing)
    assert rates.keys() == state.rates.keys()
    assert all(torch.equal(rates[p], state.rates[p]) for p in rates)
    for tau in (0.6, 0.9):
        summary = module_summary(run.model, masks_from_rates(rates, tau))
        size, overlap = module_numbers(state.model, state.rates, tau)
        assert size == pytest.approx(summary.mean_size) and overlap == pytest.approx(summary.mean_overlap)
    assert module_numbers(state.model, state.rates, 0.95)[0] < module_numbers(state.model, state.rates, 0.6)[0]


def test_a_later_state_reuses_the_probe_it_is_handed():
    first = probe_rates(f"{DEMO / 'swap-weak'}@8")
    again = probe_rates(str(DEMO / "swap-weak"), first.probe)
    assert again.probe is first.probe
    fresh = probe_rates(str(DEMO / "swap-weak"))
    assert all(torch.equal(fresh.rates[p], again.rates[p]) for p in fresh.rates)
    smaller = probe_rates(str(DEMO / "swap-weak"), images=60)
    counts = torch.bincount(smaller.probe.split.labels, minlength=6)  # six classes, at most ten images each
    assert isinstance(smaller.probe, Probe) and counts.max() == 10 and counts.min() > 0


def test_a_run_or_an_epoch_that_is_not_there_is_a_moda_error(tmp_path):
    with pytest.raises(ModaError, match="no run folder"):
        probe_rates(str(tmp_path / "gone"))
    with pytest.raises(ModaError, match="no checkpoint for epoch 3; available epochs: \\[8, 16\\]"):
        probe_rates(f"{DEMO / 'swap-weak'}@3")
    with pytest.raises(ModaError, match="cannot be loaded"):
        twin_states(tmp_path / "gone")


def test_a_twins_states_are_spread_with_its_first_and_final_kept():
    weak = DEMO / "swap-weak"  # checkpoints at epochs 8 and 16, final weights at 40
    assert twin_states(weak) == [(8, f"{weak}@8"), (16, f"{weak}@16"), (40, str(weak))]
    assert twin_states(weak, 2) == [(8, f"{weak}@8"), (40, str(weak))]


def test_spread_keeps_the_first_and_the_last():
    assert spread(list(range(5)), 11) == [0, 1, 2, 3, 4]
    assert spread(list(range(41)), 11) == list(range(0, 41, 4))
    assert spread(list(range(7)), 3) == [0, 3, 6] and spread([1, 2], 1) == [2] and spread([1, 2], 0) == []
