"""Composition on the graph of the hand-written and torchvision test models (``graph_models``): composed == the
independent masked full model (``bench.graph_models.independent_masked_model``, target logits, ≤ 1e-5 relative) at
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

from bench.graph_models import independent_masked_model
from moda_core.compose import compose_module, parameter_count, zero_fill_gather
from moda_core.errors import ModaError
from moda_core.graph import graph_of
from moda_core.loop import prepare_model

CLASSES = [7, 2]
FAST = {"functional": FunctionalNet, "shared_relu": SharedReLUNet, "relu6": ReLU6Net, "skip": SkipNet,
        "cat": CatNet}
SLOW = {"resnet18": tv_resnet18, "vgg11_bn": tv_vgg11_bn, "mobilenet_v2": tv_mobilenet_v2, "vit": tv_vit}


@functools.cache
def model(name: str, points: str = "relu") -> nn.Module:
    """A calibrated model, built once per test session (composition never changes it)."""
    make = {**FAST, **SLOW, "gelu_silu": GeluSiluNet}[name]
    return prepare_model(calibrated(make()), torch.zeros(2, 1, 28, 28), points)


def random_masks(net: nn.Module, density: float, seed: int) -> dict[str, torch.Tensor]:
    """Point → random class × unit masks, at least one unit kept per class and point."""
    generator = torch.Generator().manual_seed(seed)
    masks = {}
    for name, point in graph_of(net).points.items():
        mask = torch.rand(10, point.units, generator=generator) < density
        mask[torch.arange(10), torch.randint(0, point.units, (10,), generator=generator)] = True
        masks[name] = mask
    return masks


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def check_model(net: nn.Module, density: float, seed: int = 0, export: bool = False) -> nn.Module:
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(seed + 1))
    masks = random_masks(net, density, seed)
    composed = compose_module(net, masks, CLASSES)
    axes = {name: point.axis for name, point in graph_of(net).points.items()}
    with torch.no_grad():
        union = {p: m[sorted(CLASSES)].any(0) for p, m in masks.items()}
        expected = independent_masked_model(net, union, axes)(x)[:, sorted(CLASSES)]
        got = composed(x)
    assert got.shape == (5, len(CLASSES))
    assert expected.std(0).max() > 0, "degenerate: the output does not depend on the input"
    assert relative(got, expected) <= 1e-5
    assert parameter_count(composed) < parameter_count(net)
    if export:
        batch = torch.export.Dim("batch", min=1, max=1024)
        program = torch.export.export(composed, (x[:2],), dynamic_shapes=({0: batch},))
        for size in (1, 7):
            sample = torch.randn(size, 1, 28, 28)
            with torch.no_grad():
                assert relative(program.module()(sample), composed(sample)) <= 1e-5
    return composed


@pytest.mark.parametrize("density", [0.5, 0.2])
@pytest.mark.parametrize("name", list(FAST))
def test_compose_is_the_masked_model(name, density):
    check_model(model(name), density, export=density == 0.5)


@pytest.mark.slow
@pytest.mark.parametrize("density", [0.5, 0.2])
@pytest.mark.parametrize("name", list(SLOW))
def test_compose_torchvision_models(name, density):
    composed = check_model(model(name), density, export=True)
    if name == "resnet18":
        assert composed.kept_whole == []  # every op of ResNet-18 is sliced through


def test_gelu_silu_points_compose_when_asked_for():
    with pytest.raises(ModaError, match="no activation point"):
        prepare_model(calibrated(GeluSiluNet()), torch.zeros(2, 1, 28, 28))
    check_model(model("gelu_silu", "gelu,silu"), 0.5, export=True)


@pytest.mark.slow
def test_vit_keeps_attention_and_norms_whole():
    composed = check_model(model("vit"), 0.5)
    reasons = " ".join(reason for _, reason in composed.kept_whole)
    assert "layer norm" in reasons and "MultiheadAttention" in reasons
    # the MLPs are sliced: their first linear has fewer rows than mlp_dim
    first = next(m for name, m in composed.named_modules() if name.endswith("encoder_layer_0.mlp.0"))
    assert first.out_features < 64


def test_skip_add_of_differently_masked_branches_zero_fills():
    composed = check_model(model("skip"), 0.5, seed=3)
    assert "zero_fill_gather" in composed.code


def test_zero_fill_gather():
    x = torch.arange(6.0).view(1, 2, 3)
    assert zero_fill_gather(x, torch.tensor([1, 3, 0]), 2).tolist() == [[[1, 0, 0], [4, 0, 3]]]
    empty = torch.zeros(2, 0, 4)
    assert zero_fill_gather(empty, torch.tensor([0, 0]), 1).shape == (2, 2, 4)


def test_bad_masks_and_classes():
    net = model("skip")
    masks = random_masks(net, 0.5, 0)
    with pytest.raises(ModaError, match="masks do not belong to this model"):
        compose_module(net, {**masks, "nope": torch.ones(10, 8, dtype=torch.bool)}, CLASSES)
    with pytest.raises(ModaError, match=r"expected \(10, 8\)"):
        compose_module(net, {**masks, "relu0": torch.ones(10, 5, dtype=torch.bool)}, CLASSES)
    with pytest.raises(ModaError, match="out of range"):
        compose_module(net, masks, [12])


def test_compositions_share_generated_code_only_while_their_graphs_are_the_same():
    from moda_core.compose import _ComposedGraph

    net = model("skip")
    masks = random_masks(net, 0.5, seed=3)
    _ComposedGraph.codes.clear()
    first, again = compose_module(net, masks, CLASSES), compose_module(net, masks, CLASSES)
    assert len(_ComposedGraph.codes) == 1 and first.code == again.code  # the second reused the first's code
    other = compose_module(net, random_masks(net, 0.5, seed=4), [1, 4])  # other classes, still exact
    check_model(net, 0.5, seed=4)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        before = first(x)
        output = next(n for n in again.graph.nodes if n.op == "output")
        with again.graph.inserting_before(output):  # an edited graph gets code of its own
            doubled = again.graph.call_function(torch.mul, (output.args[0], 2.0))
        output.args = (doubled,)
        again.recompile()
        assert torch.equal(again(x), 2 * before) and torch.equal(first(x), before)
        assert other(x).shape == (3, 2)
