"""Every zoo model: both input shapes, any class count, one ReLU module per point, gradients everywhere."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from moda_core.activations import masked_model, modular_points, recorder, run_with_cache
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
    logits, activations, _ = recorder(model, training=True)(x)
    assert logits.shape == (4, 7)
    labels = torch.tensor([0, 0, 1, 2])
    aff, dis, com = modular_losses(list(activations), labels)
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


def test_a_relu_module_called_twice_is_two_points():
    relu = nn.ReLU()
    model = nn.Sequential(nn.Linear(3, 3), relu, nn.Linear(3, 3), relu, nn.Linear(3, 2))
    model.input_shape = (3,)
    assert modular_points(model) == ["1", "1_1"]  # two calls of one module: two call sites (feature-extraction names)


def test_an_untraceable_model_whose_relu_runs_twice_is_an_error():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.relu, self.out = nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2)
            self.input_shape, self.arch = (3,), {"traced": False, "num_classes": 2}

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.relu(self.fc(self.relu(x))))

    with pytest.raises(ModaError, match="ran twice"):
        run_with_cache(Twice(), torch.randn(2, 3))


def test_record_unknown_point_names_the_available_ones():
    with pytest.raises(ModaError, match="unknown activation point"):
        run_with_cache(build_model("mlp"), torch.zeros(1, 1, 28, 28), ["nope"])


def test_the_masked_model_zeroes_units():
    model = build_model("lenet5").eval()
    mask = torch.zeros(6, dtype=torch.bool)
    mask[2] = True
    masked = masked_model(model, {"features.0.relu": mask})
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        kept = F.relu(model.features[0].conv(x)) * mask.view(1, 6, 1, 1).float()
        rest = model.classifier(model.flatten(model.features[3](model.features[2](model.features[1](kept)))))
        torch.testing.assert_close(masked(x), rest)


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
