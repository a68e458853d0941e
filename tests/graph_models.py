"""The graph tests' model builders, called as MODA Studio calls a model of your own (import paths
``graph_models:NAME`` with the tests folder on the path), around the models ``bench/graph_models.py`` defines
(torchvision models adapted to 1×28×28 inputs and 10 classes, hand-written CNNs that call their activations in
every usual way), plus the test-only models: one fx cannot trace, one with hooks only, and builders that go wrong."""
from __future__ import annotations

import torch
from torch import nn

from bench.graph_models import (
    CLASSES,
    CatNet,
    FunctionalNet,
    GeluSiluNet,
    ReLU6Net,
    SharedReLUNet,
    SkipNet,
    calibrated,  # noqa: F401 - the tests take it from here, with the builders
    tv_mobilenet_v2,
    tv_resnet18,
    tv_vgg11_bn,
    tv_vit,
)


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            x = x * 2
        return self.fc(torch.relu(x.flatten(1)))


# ----- builders, called as MODA Studio calls a model of your own: fn(num_classes=, in_channels=, image_size=)
# (import paths "graph_models:NAME" with the tests folder on the path)

def _adapted(make) -> object:
    def build(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        assert (num_classes, in_channels, image_size) == (CLASSES, 1, 28), "these test models are for mnist5k"
        return make()
    build.__name__ = build.__qualname__ = f"make_{make.__name__.removeprefix('tv_').lower()}"
    return build


make_resnet18 = _adapted(tv_resnet18)
make_vgg11_bn = _adapted(tv_vgg11_bn)
make_mobilenet_v2 = _adapted(tv_mobilenet_v2)
make_vit = _adapted(tv_vit)
make_functionalnet = _adapted(FunctionalNet)
make_sharedrelunet = _adapted(SharedReLUNet)
make_relu6net = _adapted(ReLU6Net)
make_skipnet = _adapted(SkipNet)
make_catnet = _adapted(CatNet)
make_gelusilunet = _adapted(GeluSiluNet)
# (import path, points): every model of the suite
BUILDERS = [("graph_models:make_resnet18", "relu"), ("graph_models:make_vgg11_bn", "relu"),
            ("graph_models:make_mobilenet_v2", "relu"), ("graph_models:make_vit", "relu"),
            ("graph_models:make_functionalnet", "relu"), ("graph_models:make_sharedrelunet", "relu"),
            ("graph_models:make_relu6net", "relu"), ("graph_models:make_skipnet", "relu"),
            ("graph_models:make_catnet", "relu"), ("graph_models:make_gelusilunet", "gelu,silu")]


class HookedNet(nn.Module):
    """fx cannot trace it (a branch on a tensor's value), but its points are nn.ReLU modules: hooks work."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.relu1 = nn.Conv2d(1, 8, 3, padding=1), nn.ReLU()
        self.fc1, self.relu2, self.fc2 = nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            x = x * 1.0
        x = self.relu1(self.conv(x)).mean((2, 3))
        return self.fc2(self.relu2(self.fc1(x)))


make_hookednet = _adapted(HookedNet)


# ----- builders that go wrong, each in its own way

def make_untraceable(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return Untraceable()


def make_raises(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    raise ValueError("no such width")


def make_not_a_module(num_classes: int, in_channels: int, image_size: int) -> object:
    return {"layers": 3}


def make_wrong_classes(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, 32), nn.ReLU(), nn.Linear(32, 3))


def make_tuple_output(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.relu = nn.Linear(in_channels * image_size ** 2, num_classes), nn.ReLU()

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.fc(self.relu(x.flatten(1)))
            return out, out

    return TwoHeads()


def make_no_points(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, 32), nn.Tanh(),
                         nn.Linear(32, num_classes))


def make_old_signature(classes: int) -> nn.Module:
    return nn.Linear(classes, classes)


def make_relu_twice(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """fx cannot trace it, and its one nn.ReLU module runs twice: no point to hook once per pass."""
    class Twice(HookedNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:
                x = x * 1.0
            x = self.relu1(self.conv(x)).mean((2, 3))
            return self.fc2(self.relu1(self.fc1(x)[:, :8]).repeat(1, 2))

    return Twice()


def make_unnamed_units(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """A ReLU on the raw input: nothing says which dim holds its units."""
    return nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(in_channels * image_size ** 2, num_classes))
