"""The MwT baseline: masks in [0,1), its loss by hand, kernel-level composition exactness, overlap,
and an end-to-end run measured with our own metrics."""
import math

import pytest
import torch
from helpers import brute_force_overlap, masked_logits, random_masks, randomised

from moda_core import io
from moda_core.compose import compose_module, parameter_count
from moda_core.decompose import decompose
from moda_core.errors import ModaError
from moda_core.evaluate import accuracy, predict_logits
from moda_core.methods.mwt import GatedConvUnit, MaskGenerator, gated_points, mwt_loss, to_mwt
from moda_core.models.blocks import ConvUnit
from moda_core.overlap import overlap_counts
from moda_core.runs import list_runs, load_run, run_dataset
from moda_core.train import TrainConfig, train

GATED = ["lenet5", "vgg11", "resnet18", pytest.param("mobilenet", marks=pytest.mark.slow)]  # (seconds: CI's lane)


def test_masks_are_in_zero_one():
    torch.manual_seed(0)
    generator = MaskGenerator(3, 40)
    with torch.no_grad():
        generator.fc2.weight.mul_(4)  # spread the pre-activations over both signs
    masks = generator(torch.randn(64, 3, 5, 5) * 3)
    assert masks.shape == (64, 40)
    # relu(tanh(.)) is in [0, 1); float32 tanh only rounds to 1.0 past |z| ≈ 9, far beyond these
    assert masks.min() >= 0 and masks.max() < 1
    assert (masks == 0).any() and (masks > 0.9).any()


def test_gates_sit_after_the_first_conv_and_are_not_points():
    model = to_mwt(randomised("vgg11", 3, 32))
    points = gated_points(model)
    assert "features.0.relu" not in points and "features.2.relu" in points
    assert "classifier.0.relu" not in points  # fully-connected layers stay whole
    assert "mwt" not in model.arch  # the method is recorded in the run's config, not patched into arch
    assert isinstance(model.features[2], GatedConvUnit) and type(model.features[0]) is ConvUnit
    resnet = to_mwt(randomised("resnet18", 3, 32))
    assert {"layer1.0.relu1", "layer1.0.relu2"} <= set(gated_points(resnet)) and "stem.relu" not in gated_points(resnet)
    with pytest.raises(ModaError, match="no conv layer"):
        to_mwt(randomised("mlp", 1, 28))


def test_mwt_loss_by_hand():
    r = 1 / math.sqrt(2)
    masks = [torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.5]])]
    total, affinity, dispersion = mwt_loss(masks, torch.tensor([0, 0, 1]))
    assert affinity.item() == pytest.approx(1 - r)  # same-label pair (0,1)
    assert dispersion.item() == pytest.approx((0 + r) / 2)  # pairs (0,2) and (1,2)
    assert total.item() == pytest.approx(0.5 * (1 - r) + 1.5 * (r / 2))
    two_layers = masks + [torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])]
    _, affinity, dispersion = mwt_loss(two_layers, torch.tensor([0, 0, 1]))
    assert affinity.item() == pytest.approx(((1 - r) + (1 - 0)) / 2)  # averaged over layers
    assert dispersion.item() == pytest.approx((r / 2 + (1 + 0) / 2) / 2)


@pytest.mark.parametrize("name", GATED)
def test_kernel_level_composition_is_exact(name):
    channels, size = (1, 28) if name == "lenet5" else (3, 32)
    model = randomised(name, channels, size, transform=to_mwt)
    for trial, classes in enumerate([[0], [1, 4], [0, 2, 5]]):
        masks = random_masks(model, density=[0.6, 0.7, 0.9][trial], seed=trial)
        composed = compose_module(model, masks, classes)
        x = torch.randn(4, channels, size, size)
        expected = masked_logits(model, masks, classes, x)
        with torch.no_grad():
            got = composed(x)
        assert (expected.std(0) > 0).any()
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
        gates = [m for m in composed.modules() if isinstance(m, MaskGenerator)]
        assert len(gates) == len(gated_points(model))  # the gates came along, sliced
        assert parameter_count(composed) < parameter_count(model)


@pytest.mark.parametrize("name", GATED)
def test_overlap_with_gates_equals_brute_force(name):
    channels, size = (1, 28) if name == "lenet5" else (3, 32)
    model = randomised(name, channels, size, dtype=torch.float64, transform=to_mwt)
    masks = random_masks(model, 0.4, seed=5)
    assert torch.equal(overlap_counts(model, masks), brute_force_overlap(model, masks))


@pytest.mark.slow
def test_mwt_run_end_to_end(tmp_path):
    run = train(TrainConfig(model="lenet5", method="mwt", epochs=2), tmp_path, "mwt")
    assert run.config["train"]["method"] == "mwt" and run.config["train"]["alpha"] == 0.5
    assert run.config["train"]["beta"] == 1.5 and run.config["train"]["gamma"] == 0.0
    assert run.metrics["test_accuracy"] > 0.5
    reloaded = load_run(run.path)
    assert [s.method for s in list_runs(tmp_path)] == ["mwt"]
    assert gated_points(reloaded.model)  # the gates are rebuilt from the config
    # the trainer measured test accuracy on its in-memory model; the weights on disk must give the same
    test = run_dataset(reloaded).test
    assert accuracy(predict_logits(reloaded.model, test), test.labels) == run.history[-1]["test_accuracy"]
    x = torch.randn(3, 1, 28, 28)
    decomposition = decompose(reloaded)
    # fully-connected layers and the first conv stay whole; gated channels follow the mask rates
    assert decomposition.masks["classifier.0.relu"].all() and decomposition.masks["features.0.relu"].all()
    # the gated point's rates, counted here by hand: per class, the share of samples whose mask is > 0
    train_split = run_dataset(reloaded).train
    gate = reloaded.model.get_submodule(gated_points(reloaded.model)["features.2.relu"])
    with torch.no_grad():  # the gate reads the input of the block it gates (the pool after features.0)
        block_input = reloaded.model.features[1](reloaded.model.features[0](train_split.batch(slice(None))[0]))
        fired = (gate(block_input) > 0).float()
    by_hand = torch.stack([fired[train_split.labels == c].mean(0) for c in range(10)])
    torch.testing.assert_close(decomposition.rates["features.2.relu"], by_hand)
    # a run written before config["train"]["method"] existed says MwT only through arch["mwt"]
    config = io.read_json(run.path / "config.json")
    del config["train"]["method"]
    config["arch"]["mwt"] = True
    io.write_json(run.path / "config.json", config)
    old = load_run(run.path)
    assert gated_points(old.model) and [s.method for s in list_runs(tmp_path)] == ["mwt"]
    torch.testing.assert_close(decompose(old, recompute=True, save=False).rates["features.2.relu"], by_hand)
    assert set(gated_points(reloaded.model)) == {"features.2.relu"}
    assert reloaded.model(x).shape == (3, 10)
    with pytest.raises(ModaError, match=r"MwT takes alpha \(α, weight of same-label mask dissimilarity\), beta .*: "
                                         r"gamma must be 0, got 0.3"):
        train(TrainConfig(model="lenet5", method="mwt", gamma=0.3, epochs=1), tmp_path, "bad")
    with pytest.raises(ModaError, match="unknown training method"):
        train(TrainConfig(model="lenet5", method="magic", epochs=1), tmp_path, "bad")
