"""moda_core.summary (the one module summary), checked against numbers computed independently here (the compare
table's and the overhead JSON's format, moda_core.comparison: test_comparison.py)."""
import json
import math

import pytest
import torch
from helpers import NUM_CLASSES, brute_force_overlap, random_masks, randomised

from moda_core.compose import compose_module, parameter_count
from moda_core.summary import fully_connected_share, mean_off_diagonal, module_summary


@pytest.mark.parametrize("name,channels,size", [("lenet5", 1, 28), ("resnet18", 3, 32),
                                                  pytest.param("mobilenet", 3, 32, marks=pytest.mark.slow)])
def test_summary_against_composed_modules_and_brute_force(name, channels, size):
    model = randomised(name, channels, size, dtype=torch.float64)
    masks = random_masks(model, 0.4, seed=2)
    summary = module_summary(model, masks)
    total = parameter_count(model)
    sizes = [parameter_count(compose_module(model, masks, [c])) / total for c in range(NUM_CLASSES)]
    assert summary.sizes == pytest.approx(sizes, rel=1e-12)
    assert summary.mean_size == pytest.approx(sum(sizes) / NUM_CLASSES, rel=1e-12)
    shared = brute_force_overlap(model, masks) / total
    torch.testing.assert_close(summary.overlap, shared)
    pairs = [shared[i, j].item() for i in range(NUM_CLASSES) for j in range(i + 1, NUM_CLASSES)]
    assert summary.mean_overlap == pytest.approx(sum(pairs) / len(pairs), rel=1e-12)
    assert summary.params == total


def test_overlap_by_layer_adds_up():
    model = randomised("vgg11", 3, 32, dtype=torch.float64)
    summary = module_summary(model, random_masks(model, 0.5, seed=1))
    assert list(summary.overlap_by_layer)[0] == "features.0" and "classifier.1" in summary.overlap_by_layer
    torch.testing.assert_close(sum(summary.overlap_by_layer.values()), summary.overlap)
    assert sum(summary.mean_overlap_by_layer.values()) == pytest.approx(summary.mean_overlap, rel=1e-9)
    assert all(m.shape == (NUM_CLASSES, NUM_CLASSES) for m in summary.overlap_by_layer.values())
    as_json = json.loads(json.dumps(summary.to_dict()))
    assert as_json["mean_module_size"] == summary.mean_size and len(as_json["module_size"]) == NUM_CLASSES


def test_mean_off_diagonal_by_hand():
    matrix = torch.tensor([[9.0, 1.0, 2.0], [1.0, 9.0, 6.0], [2.0, 6.0, 9.0]])
    assert mean_off_diagonal(matrix) == pytest.approx(3.0)
    assert math.isnan(mean_off_diagonal(torch.ones(1, 1)))


def test_the_fully_connected_share_counts_the_linear_layers_weights():
    linear, total = fully_connected_share("lenet5", 1.0)  # conv 6 and 16 channels of 5×5, then 400 → 120 → 84 → 10
    assert linear == 120 * 400 + 120 + 84 * 120 + 84 + 10 * 84 + 10
    assert total == linear + (6 * 25 + 6) + (16 * 6 * 25 + 16)
    mlp, mlp_total = fully_connected_share("mlp", 0.5)
    assert mlp == mlp_total  # nothing but fully connected layers
    assert fully_connected_share("my.package:builder", 1.0) is None  # a model of one's own is not built
