"""The one reading of a network: points named as feature extraction names them, unit axes read from the graph
(never guessed from a tensor's rank), in-place ops, a graph built once per structure and shared, and calls that
never touch the model."""
from __future__ import annotations

import pytest
import torch
from graph_models import FunctionalNet, GeluSiluNet, SharedReLUNet, Untraceable, calibrated, tv_resnet18, tv_vit
from torch import nn

from moda_core._tv import import_torchvision
from moda_core.activations import masked_model, modular_points, recorder, run_with_cache
from moda_core.errors import ModaError
from moda_core.graph import GraphError, TraceError, graph_of, module_view
from moda_core.loop import prepare_model
from moda_core.models import build_model

X = torch.zeros(2, 1, 28, 28)


def points(model: nn.Module, kinds="relu") -> list[tuple[str, int, int]]:
    return [(p.name, p.axis, p.units) for p in graph_of(model, kinds, example_input=X).points.values()]


@pytest.mark.parametrize("name", ["mlp", "lenet5", "vgg11", "resnet18", "mobilenet", "vit"])
def test_zoo_points_are_its_relu_modules_with_their_channels(name):
    model = build_model(name, 1, 28, 10, width=0.25)
    found = graph_of(model).points.values()
    relus = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    assert [p.name for p in found] == relus == modular_points(model)
    assert all(p.kind == "relu" and p.axis == 1 for p in found)  # the zoo ViT lays its MLP out channels-first


def test_functional_calls_are_points():
    assert points(FunctionalNet()) == [("relu", 1, 8), ("relu_1", 1, 12), ("relu_2", 1, 16)]


def test_a_module_called_twice_is_two_points():
    assert [name for name, _, _ in points(SharedReLUNet())] == ["relu", "relu_1"]


def test_torchvision_resnet18_points_are_feature_extraction_names_and_the_model_is_not_touched():
    import_torchvision()
    from torchvision.models.feature_extraction import get_graph_node_names

    model = tv_resnet18()
    found = [name for name, _, _ in points(model)]
    assert len(found) == 17 and found[:3] == ["relu", "layer1.0.relu", "layer1.0.relu_1"]
    _, eval_names = get_graph_node_names(model)
    assert [n for n in eval_names if n in found] == found
    assert all(m.training for m in model.modules())  # read on a view: the model's mode never changed


def test_token_units_are_the_last_dim():
    found = points(tv_vit())
    assert [name for name, _, _ in found] == ["encoder.layers.encoder_layer_0.mlp.1",
                                              "encoder.layers.encoder_layer_1.mlp.1"]
    assert all(axis == 2 and units == 64 for _, axis, units in found)


def test_gelu_and_silu_only_when_asked_for():
    assert points(GeluSiluNet()) == []
    assert points(GeluSiluNet(), ["gelu", "silu"]) == [("act1", 1, 8), ("silu", 1, 8)]
    with pytest.raises(ModaError, match="unknown activation kind"):
        graph_of(GeluSiluNet(), "tanh", example_input=X)


class OnTheInput(nn.Module):
    """A point whose tensor no layer produced: nothing says which dim holds the features."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(28, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(x.squeeze(1)).mean(1))


def test_a_point_whose_units_cannot_be_told_is_an_error_unless_declared():
    with pytest.raises(GraphError, match=r"cannot tell the units of point 'relu'.*points=\{'relu': -1\}"):
        graph_of(OnTheInput(), example_input=X)
    declared = graph_of(OnTheInput(), {"relu": -1}, example_input=X)
    assert [(p.name, p.axis, p.units) for p in declared.points.values()] == [("relu", 2, 28)]
    with pytest.raises(GraphError, match="unknown activation point"):
        graph_of(OnTheInput(), {"nope": 1}, example_input=X)


def test_declared_axes_compose_exactly():
    from moda_core.compose import compose_module

    model = prepare_model(OnTheInput().eval(), X, {"relu": -1})
    masks = {"relu": torch.rand(10, 28, generator=torch.Generator().manual_seed(0)) < 0.5}
    composed = compose_module(model, masks, [3, 5])
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        expected = masked_model(model, {"relu": masks["relu"][[3, 5]].any(0)})(x)[:, [3, 5]]
        torch.testing.assert_close(composed(x), expected)


def test_untraceable_model_is_one_clear_error():
    with pytest.raises(TraceError, match="cannot trace Untraceable: .*traceable forward"):
        graph_of(Untraceable(), example_input=X)


def test_in_place_activations_act_on_the_tensor_the_network_goes_on_using():
    class Dropped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.relu, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Linear(4, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.conv(x)
            self.relu(h)  # the result is dropped: h is rectified in place
            return self.fc(h.mean((2, 3)))

    model = Dropped().eval()
    model.input_shape = (1, 28, 28)
    mask = torch.tensor([True, False, True, False])
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        expected = model.fc((torch.relu(model.conv(x)) * mask.view(1, 4, 1, 1)).mean((2, 3)))
        torch.testing.assert_close(masked_model(model, {"relu": mask})(x), expected)
        logits, cache = run_with_cache(model, x)
        torch.testing.assert_close(logits, model(x))
        assert (cache["relu"] >= 0).all()


def test_masked_model_zeroes_the_units_of_every_call():
    model = calibrated(SharedReLUNet())
    model.input_shape = (1, 28, 28)
    masks = {"relu": torch.zeros(8, dtype=torch.bool), "relu_1": torch.ones(8, dtype=torch.bool)}
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        expected = model.fc(torch.relu(model.conv2.bias).view(1, 8).expand(2, 8))
        assert torch.allclose(masked_model(model, masks)(x), expected, atol=1e-6)


def test_reading_and_recording_leave_the_model_as_it_was():
    model = build_model("resnet18", 1, 28, 10, width=0.25).train()
    before = {name: (m.training, dict(m._forward_hooks), dict(m._forward_pre_hooks)) for name, m in
              model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 1, 28, 28)
    run_with_cache(model, x)
    masked_model(model, {"stem.relu": torch.ones(16, dtype=torch.bool)})(x)
    recorder(model)(x)
    assert before == {name: (m.training, dict(m._forward_hooks), dict(m._forward_pre_hooks)) for name, m in
                      model.named_modules()}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # no running stats moved


def test_a_view_shares_the_tensors_and_has_a_mode_and_hooks_of_its_own():
    model = build_model("lenet5").train()
    view = module_view(model, training=False)
    assert not any(m.training for m in view.modules()) and all(m.training for m in model.modules())
    assert [id(p) for p in view.parameters()] == [id(p) for p in model.parameters()]
    view.features[0].relu.register_forward_hook(lambda *_: None)
    assert not model.features[0].relu._forward_hooks


def test_the_recorder_is_built_once_per_model_and_again_when_its_tensors_change():
    model = build_model("lenet5").eval()
    first = recorder(model)
    assert recorder(model) is first
    model.features[0].conv.weight = nn.Parameter(model.features[0].conv.weight.detach().clone())
    assert recorder(model) is not first  # a new tensor: a new binding


def test_the_dashboard_says_in_one_sentence_what_composition_keeps_whole():
    from dashboard.ui import limits_sentence

    assert limits_sentence({"kept_whole": [], "logit_points": []}) == ""
    sentence = limits_sentence({"kept_whole": [("a.norm", "layer norm normalises over the units"),
                                               ("b.norm", "layer norm normalises over the units"),
                                               ("g", "grouped convolution (groups=3)")], "logit_points": ["relu_4"]})
    assert r"2 × layer norm normalises over the units; 1 × grouped convolution \(groups=3\)" in sentence  # escaped
    assert "relu_4" in sentence and "its own class's logit" in sentence


def test_a_point_on_the_logits_is_named_in_the_limits():
    class OnLogits(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.relu, self.fc = nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Linear(4, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.fc(self.relu(self.conv(x)).mean((2, 3))))  # a ReLU on the logits

    graph = graph_of(OnLogits(), example_input=X)
    assert graph.logit_points() == ["relu_1"]
    assert graph.limits() == ["point 'relu_1' reaches the logits without a weight layer between: a class's module "
                              "can drop that class's own logit"]
