"""Outside model definitions for the graph tests: torchvision models adapted to 1×28×28 inputs and 10 classes
(a 1-channel stem, as a user would), and hand-written CNNs that call their activations in every usual way."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from moda_core._tv import import_torchvision

CLASSES = 10


def calibrated(model: nn.Module, size: int = 28, seed: int = 0) -> nn.Module:
    """``model`` with random batch-norm affine terms and running statistics from random data, in eval mode."""
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
            module.momentum = None
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.2, 0.4)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, 1, size, size))
    return model.eval()


def tv_resnet18() -> nn.Module:
    model = import_torchvision().models.resnet18(num_classes=CLASSES)
    model.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    return model


def tv_vgg11_bn() -> nn.Module:
    """torchvision's VGG11-bn; the stem takes 1 channel and the head pools to 1×1 (the 7×7 head is 120M weights)."""
    model = import_torchvision().models.vgg11_bn(num_classes=CLASSES)
    model.features[0] = nn.Conv2d(1, 64, 3, padding=1)
    model.features = model.features[:-1]  # 28 → 1 after four poolings, no fifth
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier[0] = nn.Linear(512, 4096)
    return model


def tv_mobilenet_v2() -> nn.Module:
    model = import_torchvision().models.mobilenet_v2(num_classes=CLASSES, width_mult=0.25)
    model.features[0][0] = nn.Conv2d(1, model.features[0][0].out_channels, 3, 2, 1, bias=False)
    return model


def tv_vit() -> nn.Module:
    """A small torchvision VisionTransformer with ReLU in its MLPs (units: the last dim of the tokens)."""
    tv = import_torchvision()
    model = tv.models.VisionTransformer(image_size=28, patch_size=7, num_layers=2, num_heads=2, hidden_dim=32,
                                        mlp_dim=64, num_classes=CLASSES)
    model.conv_proj = nn.Conv2d(1, 32, 7, 7)
    for layer in model.encoder.layers:
        layer.mlp[1] = nn.ReLU()
    nn.init.normal_(model.heads.head.weight, std=0.1)  # torchvision starts it at zero: every logit would be 0
    return model


class FunctionalNet(nn.Module):
    """Activations as ``F.relu``, ``torch.relu`` and ``Tensor.relu``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 12, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(12, 16), nn.Linear(16, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = torch.relu(self.conv2(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc2(self.fc1(x).relu())


class SharedReLUNet(nn.Module):
    """One ``nn.ReLU`` module called at two places."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv2(self.relu(self.conv1(x))))
        return self.fc(self.pool(x).flatten(1))


class ReLU6Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
                                      nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU6(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class SkipNet(nn.Module):
    """A residual add of two differently masked branches."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn0, self.relu0 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(8, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu0(self.bn0(self.stem(x)))
        x = self.relu2(x + self.relu1(self.bn1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


class CatNet(nn.Module):
    """A ``torch.cat`` of two branches along the channels."""

    def __init__(self) -> None:
        super().__init__()
        self.left, self.right = nn.Conv2d(1, 6, 3, padding=1), nn.Conv2d(1, 4, 5, padding=2)
        self.relu_l, self.relu_r = nn.ReLU(), nn.ReLU()
        self.mix, self.relu = nn.Conv2d(10, 8, 1), nn.ReLU()
        self.fc = nn.Linear(8 + 10, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        both = torch.cat([self.relu_l(self.left(x)), self.relu_r(self.right(x))], 1)
        mixed = self.relu(self.mix(both))
        return self.fc(torch.cat([mixed, both], dim=1).amax((2, 3)))


class GeluSiluNet(nn.Module):
    """GELU and SiLU activations: sites only when asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.act1 = nn.Conv2d(1, 8, 3, padding=1), nn.GELU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.conv2(self.act1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


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
