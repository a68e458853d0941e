"""The outside models and their table. The models: families no zoo model and no other test model has, for 1×28×28
inputs and 10 classes (``MODELS``: name → (constructor, points); ``tests/outside_models.py`` adds the point sets and
units a reader works out by hand, and the builders MODA Studio calls). The table: every model of the graph suite
(these and ``bench/graph_models.py``'s) read, masked and composed as the tests do: its points and units, the largest
relative difference between the composed module and the independent masked model
(``bench.graph_models.independent_masked_model``) over mask densities 0.5, 0.2 and 1 (classes 2 and 7), the share of
the parameters the density-0.5 module keeps, and what the graph keeps whole and why.

    python -m bench.outside_models [--quick] [--json] [--out bench/results/outside_models.md]

``--quick``: the hand-written models only (no torchvision model).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench import graph_models
from bench.common import BenchParser, log, show, write_result
from moda_core._tv import import_torchvision
from moda_core.compose import compose_module, parameter_count
from moda_core.graph import graph_of
from moda_core.loop import prepare_model

CLASSES = 10


class DenseConcat(nn.Module):
    """DenseNet-style growth: each layer (BN → ReLU → conv) sees the concatenation of all earlier features."""

    def __init__(self, growth: int = 6, layers: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.norms = nn.ModuleList([nn.BatchNorm2d(8 + growth * i) for i in range(layers)])
        self.convs = nn.ModuleList([nn.Conv2d(8 + growth * i, growth, 3, padding=1) for i in range(layers)])
        self.relus = nn.ModuleList([nn.ReLU() for _ in range(layers)])
        self.head_norm, self.head_relu = nn.BatchNorm2d(8 + growth * layers), nn.ReLU()
        self.fc = nn.Linear(8 + growth * layers, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [self.stem(x)]
        for norm, relu, conv in zip(self.norms, self.relus, self.convs, strict=True):
            features.append(conv(relu(norm(torch.cat(features, 1)))))
        x = self.head_relu(self.head_norm(torch.cat(features, 1)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class ConvNeXtBlock(nn.Module):
    """Depthwise 7×7 → channels last → [LayerNorm] → Linear(4C) → act → Linear(C) → channels first, layer scale,
    residual add. The activation's units are the last dim (64 channels), not image rows."""

    def __init__(self, dim: int, act: nn.Module, norm: bool) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim) if norm else nn.Identity()
        self.pwconv1, self.act, self.pwconv2 = nn.Linear(dim, 4 * dim), act, nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class ConvNeXtLike(nn.Module):
    def __init__(self, act: type[nn.Module] = nn.GELU, norm: bool = True) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 2, stride=2)  # 28 → 14: image rows (14) differ from channels (16)
        self.block = ConvNeXtBlock(16, act(), norm)
        self.head = nn.Linear(16 * 14 * 14, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(self.stem(x))
        return self.head(x.permute(0, 2, 3, 1).flatten(1))  # channels last, flattened: features interleave


class MixerBlock(nn.Module):
    def __init__(self, tokens: int, dim: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.token1, self.token_act = nn.Linear(tokens, 2 * tokens), nn.ReLU()
        self.token2 = nn.Linear(2 * tokens, tokens)
        self.channel1, self.channel_act, self.channel2 = nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B × tokens × dim
        y = self.norm1(x).transpose(1, 2)  # B × dim × tokens: token mixing along the last dim
        x = x + self.token2(self.token_act(self.token1(y))).transpose(1, 2)
        return x + self.channel2(self.channel_act(self.channel1(self.norm2(x))))


class Mixer(nn.Module):
    """MLP-Mixer: 7×7 patches (16 tokens of 24 features), token and channel mixing MLPs with ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, 24, 7, stride=7)
        self.blocks = nn.Sequential(MixerBlock(16, 24), MixerBlock(16, 24))
        self.norm, self.head = nn.LayerNorm(24), nn.Linear(24, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.blocks(x)).mean(1))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, gate: nn.Module) -> None:
        super().__init__()
        self.fc1, self.relu, self.fc2, self.gate = nn.Conv2d(channels, 4, 1), nn.ReLU(), nn.Conv2d(4, channels, 1), gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.size(0), x.size(1)
        s = self.gate(self.fc2(self.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return x * s.view(b, c, 1, 1)


class SENet(nn.Module):
    """Squeeze-and-excitation gates, sigmoid and hard-sigmoid (gates that turn zero into a half)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(1, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU()
        self.se1 = SqueezeExcite(12, nn.Sigmoid())
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(12, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU()
        self.se2 = SqueezeExcite(16, nn.Hardsigmoid())
        self.fc = nn.Linear(16, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se1(self.relu1(self.bn1(self.conv1(x))))
        x = self.se2(self.relu2(self.bn2(self.conv2(x))))
        return self.fc(x.mean((2, 3)))


class ShuffleUnit(nn.Module):
    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.groups = groups
        self.g1, self.bn1, self.relu1 = nn.Conv2d(channels, channels, 1, groups=groups), nn.BatchNorm2d(channels), \
            nn.ReLU()
        self.dw, self.bn2 = nn.Conv2d(channels, channels, 3, padding=1, groups=channels), nn.BatchNorm2d(channels)
        self.g2, self.bn3, self.relu2 = nn.Conv2d(channels, channels, 1, groups=groups), nn.BatchNorm2d(channels), \
            nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.g1(x)))
        b, c, h, w = y.shape
        y = y.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(b, c, h, w)  # channel shuffle
        y = self.bn3(self.g2(self.bn2(self.dw(y))))
        return self.relu2(x + y)


class ShuffleNetLike(nn.Module):
    """Grouped 1×1 convolutions and a channel shuffle (ShuffleNet)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn, self.relu = nn.Conv2d(1, 12, 3, stride=2, padding=1), nn.BatchNorm2d(12), nn.ReLU()
        self.unit = ShuffleUnit(12, 3)
        self.fc = nn.Linear(12, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.unit(self.relu(self.bn(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class InPlace(nn.Module):
    """In-place ops in every form: an in-place ReLU module and ``relu_`` whose results are dropped (the network goes
    on with the rectified input), ``F.relu(inplace=True)``, ``+=`` and ``add_``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 10, 3, padding=1)
        self.fc = nn.Linear(10, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn1(self.conv1(x))
        self.relu(h)  # result dropped: h itself is rectified
        g = self.bn2(self.conv2(h))
        g.relu_()  # the same, as a method
        g += h  # an in-place residual add
        g = F.relu(g, inplace=True)
        out = self.conv3(g)
        out.add_(1.0)
        return self.fc(F.relu(out).amax((2, 3)))


class Pieces(nn.Module):
    """``chunk``, ``split``, slices and ``narrow`` of the units: a GLU, a split into two paths, a slice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2, self.conv3 = nn.Conv2d(8, 6, 3, padding=1), nn.Conv2d(6, 10, 3, padding=1)
        self.fc = nn.Linear(4 + 6 + 2, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.relu(self.conv1(x)).chunk(2, dim=1)  # 8 + 8
        glu = a * torch.sigmoid(b)
        left, right = torch.split(F.relu(self.conv3(F.relu(self.conv2(glu)))), [4, 6], dim=1)
        head = right.narrow(1, 2, 4)[:, 1:3]  # units 3 and 4 of the right part
        pooled = torch.cat([left, right, head], 1).mean((2, 3))
        return self.fc(pooled[:, :12])


class Clamps(nn.Module):
    """ReLUs followed by ops whose value at zero depends on their arguments: Hardtanh(0.1, 4) and clamp(min=0.05)
    turn a dropped unit into a positive number; Hardtanh() and ReLU6 keep it zero."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.relu1, self.shift = nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Hardtanh(0.1, 4)
        self.conv2, self.relu2 = nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        self.conv3, self.relu3, self.keep = nn.Conv2d(8, 8, 3, padding=1), nn.ReLU6(), nn.Hardtanh()
        self.fc = nn.Linear(8, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.shift(self.relu1(self.conv1(x))))
        x = self.conv3(torch.clamp(self.relu2(x), min=0.05))
        return self.fc(self.keep(self.relu3(x)).mean((2, 3)))


class Sequence1d(nn.Module):
    """A Conv1d network over the image's rows as channels: the units are the conv's channels, not positions."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu1 = nn.Conv1d(28, 12, 3, padding=1), nn.BatchNorm1d(12), nn.ReLU()
        self.conv2, self.relu2 = nn.Conv1d(12, 20, 5, padding=2), nn.ReLU()
        self.pool, self.fc = nn.AdaptiveAvgPool1d(1), nn.Linear(20, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.squeeze(1)  # B × 28 rows × 28 positions
        x = self.relu2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.fc(self.pool(x).flatten(1))


class Stochastic(nn.Module):
    """Dropout in its three spellings (``nn.Dropout``, ``F.dropout(training=self.training)``) and torchvision's
    stochastic depth on a residual branch."""

    def __init__(self) -> None:
        super().__init__()
        tv = import_torchvision()
        self.conv1, self.relu1 = nn.Conv2d(1, 8, 3, padding=1), nn.ReLU()
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.depth = tv.ops.StochasticDepth(0.5, "row")
        self.relu2, self.drop = nn.ReLU(), nn.Dropout(0.3)
        self.fc1, self.relu3, self.fc2 = nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.conv1(x))
        x = self.relu2(x + self.depth(self.bn2(self.conv2(x))))
        x = self.drop(F.adaptive_avg_pool2d(x, 1).flatten(1))
        x = F.dropout(self.relu3(self.fc1(x)), 0.4, training=self.training)
        return self.fc2(x)


def tv_mobilenet_v3_small() -> nn.Module:
    """torchvision's MobileNetV3-small ×0.25: hard-swish, squeeze-excitation with hard-sigmoid gates."""
    model = import_torchvision().models.mobilenet_v3_small(num_classes=CLASSES, width_mult=0.25)
    model.features[0][0] = nn.Conv2d(1, model.features[0][0].out_channels, 3, 2, 1, bias=False)
    return model


def tv_efficientnet_b0() -> nn.Module:
    """torchvision's EfficientNet-B0: SiLU (points only when asked for), sigmoid SE gates, stochastic depth."""
    model = import_torchvision().models.efficientnet_b0(num_classes=CLASSES)
    model.features[0][0] = nn.Conv2d(1, 32, 3, 2, 1, bias=False)
    return model


def _convnext_relu() -> nn.Module:
    return ConvNeXtLike(nn.ReLU, norm=False)


# model name → (constructor, points)
MODELS = {
    "dense_concat": (DenseConcat, "relu"), "convnext_gelu": (ConvNeXtLike, "gelu"),
    "convnext_relu": (_convnext_relu, "relu"), "mixer": (Mixer, "relu"), "se": (SENet, "relu"),
    "shuffle": (ShuffleNetLike, "relu"), "in_place": (InPlace, "relu"), "pieces": (Pieces, "relu"),
    "clamps": (Clamps, "relu"), "conv1d": (Sequence1d, "relu"), "stochastic": (Stochastic, "relu"),
    "mobilenet_v3": (tv_mobilenet_v3_small, "relu"), "efficientnet_b0": (tv_efficientnet_b0, "silu"),
}
SLOW = {"efficientnet_b0"}


# ----------------------------------------------------------------------------------------------
# the table

TABLE_CLASSES = [2, 7]
GRAPH_MODELS = {"FunctionalNet": (graph_models.FunctionalNet, "relu"),
                "SharedReLUNet": (graph_models.SharedReLUNet, "relu"), "ReLU6Net": (graph_models.ReLU6Net, "relu"),
                "SkipNet": (graph_models.SkipNet, "relu"), "CatNet": (graph_models.CatNet, "relu"),
                "GeluSiluNet": (graph_models.GeluSiluNet, "gelu,silu"),
                "torchvision resnet18": (graph_models.tv_resnet18, "relu"),
                "torchvision vgg11_bn": (graph_models.tv_vgg11_bn, "relu"),
                "torchvision mobilenet_v2 ×0.25": (graph_models.tv_mobilenet_v2, "relu"),
                "torchvision ViT (2 layers)": (graph_models.tv_vit, "relu")}
TORCHVISION = {"mobilenet_v3", "efficientnet_b0", *(name for name in GRAPH_MODELS if name.startswith("torchvision"))}


def units(model: torch.nn.Module) -> str:
    """Points as ``name: units (axis)``, runs of equal entries folded."""
    points = list(graph_of(model).points.values())
    shown = ", ".join(f"{p.name}: {p.units} (dim {p.axis})" for p in points[:4])
    return shown + (f", … ({len(points)} points)" if len(points) > 4 else "")


def row(name: str, make, points: str) -> dict:
    torch.manual_seed(0)
    model = prepare_model(graph_models.calibrated(make()), torch.zeros(2, 1, 28, 28), points)
    graph = graph_of(model)
    axes = {p.name: p.axis for p in graph.points.values()}
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    worst, kept = 0.0, None
    for density in (0.5, 0.2, 1.0):
        generator = torch.Generator().manual_seed(1)
        masks = {}
        for point in graph.points.values():
            mask = (torch.rand(10, point.units, generator=generator) < density) | (density >= 1)
            mask[torch.arange(10), torch.randint(0, point.units, (10,), generator=generator)] = True
            masks[point.name] = mask
        composed = compose_module(model, masks, TABLE_CLASSES)
        with torch.no_grad():
            union = {p: m[TABLE_CLASSES].any(0) for p, m in masks.items()}
            expected = graph_models.independent_masked_model(model, union, axes)(x)
            got = composed(x)
        expected = expected[:, TABLE_CLASSES]
        worst = max(worst, ((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item())
        kept = parameter_count(composed) / parameter_count(model) if density == 0.5 else kept
    reasons: dict[str, int] = {}
    for _, reason in graph.kept_whole():
        reasons[reason] = reasons.get(reason, 0) + 1
    whole = "; ".join(f"{count} × {reason}" for reason, count in reasons.items()) or "nothing"
    return {"model": name, "points": units(model), "error": worst, "kept": kept, "whole": whole}


def main() -> None:
    parser = BenchParser(__doc__, quick={"torchvision": False}, out="write the Markdown table here")
    parser.add_argument("--no-torchvision", dest="torchvision", action="store_false",
                        help="leave out torchvision's models (the slow rows)")
    args = parser.parse_args()
    models = {**MODELS, **GRAPH_MODELS}
    if not args.torchvision:
        models = {name: entry for name, entry in models.items() if name not in TORCHVISION}
    lines = [f"Composed (classes {TABLE_CLASSES}) vs an independent masked model, mask densities 0.5, 0.2 and 1; "
             "parameters kept at density 0.5", "",
             "| model | points: units (unit axis) | largest relative error | parameters kept | kept whole |",
             "|---|---|---:|---:|---|"]
    rows = []
    for name, (make, points) in models.items():
        rows.append(row(name, make, points))
        r = rows[-1]
        lines.append(f"| {r['model']} | {r['points']} | {r['error']:.1e} | {r['kept']:.1%} | {r['whole']} |")
        log(lines[-1])
    text = "\n".join(lines) + "\n"
    if args.out:
        write_result(args.out, text)
    show(args, rows, text)


if __name__ == "__main__":
    main()
