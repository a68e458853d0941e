"""Every zoo model: both input shapes, any class count, one ReLU module per point, gradients everywhere."""
import pytest
import torch
from torch import nn

from moda_core.activations import mask_points, modular_points, record_activations, run_with_cache
from moda_core.errors import ModaError
from moda_core.losses import modular_losses
from moda_core.models import MODELS, build_model

SHAPES = [(1, 28), (3, 32)]


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("channels,size", SHAPES)
def test_forward_backward_both_shapes(name, channels, size):
    torch.manual_seed(0)
    model = build_model(name, channels, size, num_classes=7, width=0.25)
    x = torch.randn(4, channels, size, size)
    with record_activations(model) as recorder:
        logits = model(x)
    assert logits.shape == (4, 7)
    labels = torch.tensor([0, 0, 1, 2])
    aff, dis, com = modular_losses(recorder.values(), labels)
    loss = nn.functional.cross_entropy(logits, labels) + aff + dis + com
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"parameters without gradient: {no_grad}"


@pytest.mark.parametrize("name", list(MODELS))
def test_points_are_distinct_relu_modules_named_by_path(name):
    model = build_model(name, 3, 32, num_classes=100, width=0.25)
    points = modular_points(model)
    modules = dict(model.named_modules())
    assert points and all(isinstance(modules[p], nn.ReLU) for p in points)
    assert len({id(modules[p]) for p in points}) == len(points)
    logits, cache = run_with_cache(model, torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 100)
    assert list(cache) == points  # every point ran once, in forward order
    assert all((cache[p] >= 0).all() for p in points)


def test_point_names_are_stable_paths():
    assert modular_points(build_model("lenet5"))[:2] == ["features.0.relu", "features.2.relu"]
    resnet = modular_points(build_model("resnet18", width=0.25))
    assert resnet[:3] == ["stem.relu", "layer1.0.relu1", "layer1.0.relu2"]
    assert "blocks.0.dw.relu" in modular_points(build_model("mobilenet", width=0.25))


def test_reused_relu_is_an_error():
    relu = nn.ReLU()
    model = nn.Sequential(nn.Linear(3, 3), relu, nn.Linear(3, 3), relu)
    with pytest.raises(ModaError, match="ran twice"):
        with record_activations(model):
            model(torch.randn(2, 3))


def test_record_unknown_point_names_the_available_ones():
    with pytest.raises(ModaError, match="unknown activation point"):
        with record_activations(build_model("mlp"), ["nope"]):
            pass


def test_mask_points_zeroes_units():
    model = build_model("lenet5").eval()
    mask = torch.zeros(6, dtype=torch.bool)
    mask[2] = True
    with mask_points(model, {"features.0.relu": mask}):
        _, cache = run_with_cache(model, torch.randn(3, 1, 28, 28))
    kept = cache["features.0.relu"]
    assert (kept[:, [0, 1, 3, 4, 5]] == 0).all() and kept[:, 2].abs().sum() > 0


@pytest.mark.parametrize("bad", [dict(name="alexnet"), dict(name="vgg11", num_classes=0),
                                 dict(name="vgg11", width=0.0)])
def test_bad_model_arguments(bad):
    with pytest.raises(ModaError):
        build_model(**bad)


def test_width_multiplier_shrinks_models():
    full = sum(p.numel() for p in build_model("vgg16", 3, 32, 10, width=1.0).parameters())
    quarter = sum(p.numel() for p in build_model("vgg16", 3, 32, 10, width=0.25).parameters())
    assert 14_000_000 < full < 16_000_000  # VGG16-BN conv stack (14.7M) plus one 512-wide hidden FC layer
    assert quarter < full / 10
