"""Activation call sites on the traced graph: feature-extraction names, unit dimensions, zoo names unchanged."""
from __future__ import annotations

import pytest
import torch
from graph_models import FunctionalNet, GeluSiluNet, SharedReLUNet, Untraceable, tv_resnet18, tv_vit

from moda_core._tv import import_torchvision
from moda_core.activations import modular_points
from moda_core.errors import ModaError
from moda_core.graph import Site, activation_sites, masked_graph
from moda_core.models import build_model

X = torch.zeros(1, 1, 28, 28)


@pytest.mark.parametrize("name", ["mlp", "lenet5", "vgg11", "resnet18", "mobilenet", "vit"])
def test_zoo_sites_are_the_zoo_points(name):
    model = build_model(name, 1, 28, 10, width=0.25)
    sites = activation_sites(model, example_input=X)
    assert list(sites) == modular_points(model)
    assert all(site.kind == "relu" and site.dim == 1 for site in sites.values())  # the zoo ViT is channels-first


def test_functional_calls_are_sites():
    sites = activation_sites(FunctionalNet(), example_input=X)
    assert list(sites) == ["relu", "relu_1", "relu_2"]  # F.relu, torch.relu, Tensor.relu at top level
    assert [s.target for s in sites.values()] == ["relu", "relu", "relu"]
    assert [(s.dim, s.units) for s in sites.values()] == [(1, 8), (1, 12), (1, 16)]


def test_a_module_called_twice_is_two_sites():
    assert list(activation_sites(SharedReLUNet())) == ["relu", "relu_1"]


def test_torchvision_resnet18_sites_are_feature_extraction_names():
    import_torchvision()
    from torchvision.models.feature_extraction import get_graph_node_names

    model = tv_resnet18()
    sites = activation_sites(model)
    assert len(sites) == 17 and list(sites)[:3] == ["relu", "layer1.0.relu", "layer1.0.relu_1"]
    _, eval_names = get_graph_node_names(model)
    assert [n for n in eval_names if n in sites] == list(sites)
    assert model.training  # the model's mode is restored


def test_token_units_are_the_last_dim():
    sites = activation_sites(tv_vit(), example_input=X)
    assert list(sites) == ["encoder.layers.encoder_layer_0.mlp.1", "encoder.layers.encoder_layer_1.mlp.1"]
    assert all(site.shape == (1, 17, 64) and site.dim == 2 and site.units == 64 for site in sites.values())


def test_gelu_and_silu_only_when_asked_for():
    assert activation_sites(GeluSiluNet()) == {}
    sites = activation_sites(GeluSiluNet(), ["gelu", "silu"])
    assert [(name, s.kind) for name, s in sites.items()] == [("act1", "gelu"), ("silu", "silu")]
    with pytest.raises(ModaError, match="unknown activation kind"):
        activation_sites(GeluSiluNet(), "tanh")


def test_unit_dim_rule():
    assert [Site.unit_dim_for(n) for n in (2, 3, 4)] == [1, 2, 1]
    with pytest.raises(ModaError, match="5-D"):
        Site.unit_dim_for(5)


def test_untraceable_model_is_one_clear_error():
    with pytest.raises(ModaError, match="cannot trace Untraceable: .*composition needs a traceable forward"):
        activation_sites(Untraceable())


def test_masked_graph_zeroes_the_units_of_every_call():
    model = SharedReLUNet().eval()
    masks = {"relu": torch.zeros(8, dtype=torch.bool), "relu_1": torch.ones(8, dtype=torch.bool)}
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        expected = model.fc(torch.relu(model.conv2.bias).view(1, 8).expand(2, 8))
        assert torch.allclose(masked_graph(model, masks, x)(x), expected, atol=1e-6)
