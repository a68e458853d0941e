"""The graph composer on outside models: composed == masked full model (target logits, ≤ 1e-5 relative) at
mask densities 0.5 and 0.2, fewer parameters, and a ``torch.export`` with a dynamic batch size that matches."""
from __future__ import annotations

import functools

import pytest
import torch
from graph_models import (
    CatNet,
    FunctionalNet,
    GeluSiluNet,
    ReLU6Net,
    SharedReLUNet,
    SkipNet,
    calibrated,
    tv_mobilenet_v2,
    tv_resnet18,
    tv_vgg11_bn,
    tv_vit,
)
from torch import nn

from moda_core.errors import ModaError
from moda_core.graph import activation_sites, masked_graph
from moda_core.graph_compose import compose_graph, zero_fill_gather

CLASSES = [7, 2]
FAST = {"functional": FunctionalNet, "shared_relu": SharedReLUNet, "relu6": ReLU6Net, "skip": SkipNet,
        "cat": CatNet}
SLOW = {"resnet18": tv_resnet18, "vgg11_bn": tv_vgg11_bn, "mobilenet_v2": tv_mobilenet_v2, "vit": tv_vit}


@functools.cache
def model(name: str) -> nn.Module:
    """A calibrated model, built once per test session (composition never changes it)."""
    return calibrated({**FAST, **SLOW}[name]())


def random_masks(sites, density, seed):
    """Site → random bool units, at least one unit kept per site."""
    generator = torch.Generator().manual_seed(seed)
    masks = {}
    for name, site in sites.items():
        mask = torch.rand(site.units, generator=generator) < density
        mask[torch.randint(0, site.units, (1,), generator=generator)] = True
        masks[name] = mask
    return masks


def parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def check_model(net: nn.Module, density: float, seed: int = 0, points="relu", export: bool = False):
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(seed + 1))
    sites = activation_sites(net, points, example_input=x[:1])
    masks = random_masks(sites, density, seed)
    composition = compose_graph(net, masks, CLASSES, x[:1], points)
    with torch.no_grad():
        expected = masked_graph(net, masks, x[:1], points)(x)[:, sorted(CLASSES)]
        got = composition.module(x)
    assert got.shape == (5, len(CLASSES))
    assert relative(got, expected) <= 1e-5
    assert parameters(composition.module) < parameters(net)
    if export:
        batch = torch.export.Dim("batch", min=1, max=1024)
        program = torch.export.export(composition.module, (x[:2],), dynamic_shapes=({0: batch},))
        for size in (1, 7):
            sample = torch.randn(size, 1, 28, 28)
            with torch.no_grad():
                assert relative(program.module()(sample), composition.module(sample)) <= 1e-5
    return composition


@pytest.mark.parametrize("density", [0.5, 0.2])
@pytest.mark.parametrize("name", list(FAST))
def test_compose_is_the_masked_model(name, density):
    check_model(model(name), density, export=density == 0.5)


@pytest.mark.slow
@pytest.mark.parametrize("density", [0.5, 0.2])
@pytest.mark.parametrize("name", list(SLOW))
def test_compose_torchvision_models(name, density):
    composition = check_model(model(name), density, export=True)
    if name == "resnet18":
        assert composition.report == []  # every op of ResNet-18 is sliced through


def test_gelu_silu_sites_compose_when_asked_for():
    net = calibrated(GeluSiluNet())
    assert activation_sites(net) == {}
    check_model(net, 0.5, points=["gelu", "silu"], export=True)


@pytest.mark.slow
def test_vit_keeps_attention_and_norms_whole():
    composition = check_model(model("vit"), 0.5)
    reasons = " ".join(reason for _, reason in composition.report)
    assert "LayerNorm" in reasons and "MultiheadAttention" in reasons
    # the MLPs are sliced: their first linear has fewer rows than mlp_dim
    assert composition.module.get_submodule("encoder.layers.encoder_layer_0.mlp.0").out_features < 64


def test_skip_add_of_differently_masked_branches_zero_fills():
    composition = check_model(model("skip"), 0.5, seed=3)
    code = composition.module.code
    assert "zero_fill_gather" in code or "index_select" in code


def test_zero_fill_gather():
    x = torch.arange(6.0).view(1, 2, 3)
    assert zero_fill_gather(x, torch.tensor([1, 3, 0]), 2).tolist() == [[[1, 0, 0], [4, 0, 3]]]
    empty = torch.zeros(2, 0, 4)
    assert zero_fill_gather(empty, torch.tensor([0, 0]), 1).shape == (2, 2, 4)


def test_class_masks_are_or_ed_over_the_targets():
    net = model("skip")
    x = torch.randn(3, 1, 28, 28)
    sites = activation_sites(net, example_input=x[:1])
    generator = torch.Generator().manual_seed(0)
    class_masks = {name: torch.rand(10, site.units, generator=generator) < 0.5 for name, site in sites.items()}
    union = {name: mask[CLASSES].any(0) for name, mask in class_masks.items()}
    a = compose_graph(net, class_masks, CLASSES, x[:1]).module(x)
    b = compose_graph(net, union, CLASSES, x[:1]).module(x)
    assert torch.equal(a, b)


def test_bad_masks_and_classes():
    net = model("skip")
    x = torch.randn(1, 1, 28, 28)
    with pytest.raises(ModaError, match="unknown activation site"):
        compose_graph(net, {"nope": torch.ones(8, dtype=torch.bool)}, CLASSES, x)
    with pytest.raises(ModaError, match="units"):
        compose_graph(net, {"relu0": torch.ones(5, dtype=torch.bool)}, CLASSES, x)
    with pytest.raises(ModaError, match="out of range"):
        compose_graph(net, {}, [12], x)
