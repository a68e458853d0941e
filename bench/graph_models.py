"""Models from outside the zoo for the graph benches and the graph tests (``tests/graph_models.py`` adds builders
and test-only models around them): torchvision models adapted to 1×28×28 inputs and 10 classes (a 1-channel stem, as
a user would), hand-written CNNs that call their activations in every usual way, ``calibrated`` (random batch-norm
statistics), and ``independent_masked_model``, the masked full model built without moda_core's graph, which
composition is checked against."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import fx, nn

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


def independent_masked_model(model, masks, axes):
    """The masked full model built without moda_core's graph: the eval model traced afresh with torchvision's
    ``NodePathTracer`` and run by an fx ``Interpreter`` that multiplies each point's output (by its
    feature-extraction name) by its bool mask along the axis ``axes`` gives, in place, so an in-place activation's
    input, which the network goes on using, is masked too."""
    tv = import_torchvision()
    from torchvision.models.feature_extraction import NodePathTracer

    tracer = NodePathTracer(leaf_modules=[], autowrap_modules=(math, tv.ops))
    graph = tracer.trace(model.eval())
    module = fx.GraphModule(model, graph)
    names = {node: tracer.node_to_qualname[node] for node in graph.nodes if node in tracer.node_to_qualname}

    class Masking(fx.Interpreter):
        def run_node(self, node):
            out = super().run_node(node)
            name = names.get(node)
            if name in masks:
                shape = [1] * out.dim()
                shape[axes[name]] = -1
                out.mul_(masks[name].to(out.dtype).view(shape))
            return out

    return lambda x: Masking(module).run(x)
