"""Composition exactness and analytic overlap, on every zoo architecture."""
import pytest
import torch
from helpers import (
    NUM_CLASSES,
    assert_runs_without_moda_core,
    brute_force_overlap,
    masked_logits,
    random_masks,
    randomised,
)

from moda_core.compose import compose_module, parameter_count
from moda_core.errors import ModaError
from moda_core.export import export_module
from moda_core.models import MODELS, build_model
from moda_core.overlap import overlap_counts

CASES = [(name, c, s) for name in MODELS for c, s in [(1, 28), (3, 32)]]


@pytest.mark.parametrize("name,channels,size", CASES)
def test_composed_equals_masked_full_model(name, channels, size):
    model = randomised(name, channels, size)
    generator = torch.Generator().manual_seed(1)
    for trial in range(3):
        classes = sorted(torch.randperm(NUM_CLASSES, generator=generator)[:1 + trial * 2].tolist())
        masks = random_masks(model, density=[0.5, 0.7, 0.9][trial], seed=trial)
        composed = compose_module(model, masks, classes)
        x = torch.randn(4, channels, size, size, generator=generator)
        expected = masked_logits(model, masks, classes, x)
        with torch.no_grad():
            got = composed(x)
        assert got.shape == (4, len(classes))
        assert (expected.std(0) > 0).any(), "degenerate test: output does not depend on the input"
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
        assert parameter_count(composed) < parameter_count(model)


def test_special_couplings_are_exercised():
    """The random masks above do reach identity shortcuts and depthwise convs with dropped inputs: the composed
    graph fills their missing channels with zeros."""
    resnet = randomised("resnet18", 3, 32)
    assert "zero_fill_gather" in compose_module(resnet, random_masks(resnet, 0.4, 0), [0]).code
    mobilenet = randomised("mobilenet", 3, 32)
    assert "zero_fill_gather" in compose_module(mobilenet, random_masks(mobilenet, 0.4, 0), [0]).code


def test_logits_come_in_sorted_class_order():
    model = randomised("lenet5", 1, 28)
    masks = random_masks(model, 0.5, 0)
    x = torch.randn(3, 1, 28, 28)
    a = compose_module(model, masks, [4, 1])
    assert a.classes == [1, 4]
    torch.testing.assert_close(a(x), masked_logits(model, masks, [1, 4], x))


def test_all_units_kept_gives_full_model_logits():
    model = randomised("vgg11", 3, 32)
    masks = {p: torch.ones_like(m) for p, m in random_masks(model, 1.0, 0).items()}
    composed = compose_module(model, masks, range(NUM_CLASSES))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(composed(x), model(x))
    assert parameter_count(composed) == parameter_count(model)


@pytest.mark.parametrize("name,channels,size", [(n, 3, 32) for n in MODELS] + [("lenet5", 1, 28), ("mlp", 1, 28)])
def test_analytic_overlap_equals_brute_force(name, channels, size):
    model = randomised(name, channels, size, dtype=torch.float64)
    masks = random_masks(model, 0.4, seed=3)
    analytic = overlap_counts(model, masks)
    assert torch.equal(analytic, brute_force_overlap(model, masks))
    assert analytic.diagonal().tolist() == [parameter_count(compose_module(model, masks, [c]))
                                            for c in range(NUM_CLASSES)]


def test_overlap_by_layer_sums_to_total():
    model = randomised("resnet18", 3, 32)
    masks = random_masks(model, 0.4, 0)
    layers = overlap_counts(model, masks, by_layer=True)
    assert "layer2.0" in layers and "fc" in layers
    torch.testing.assert_close(sum(layers.values()), overlap_counts(model, masks))


@pytest.mark.parametrize("classes,match", [([1, 1], "duplicated"), ([], "empty class list"),
                                           ([0, 6], "out of range"), ([-1], "out of range")])
def test_bad_classes(classes, match):
    model = randomised("lenet5", 1, 28)
    with pytest.raises(ModaError, match=match):
        compose_module(model, random_masks(model, 0.5, 0), classes)


def test_masks_from_another_model_are_rejected():
    lenet = randomised("lenet5", 1, 28)
    vgg = randomised("vgg11", 1, 28)
    with pytest.raises(ModaError, match="masks do not belong to this model"):
        compose_module(lenet, random_masks(vgg, 0.5, 0), [0])
    wide = build_model("lenet5", 1, 28, NUM_CLASSES, width=2.0).eval()
    with pytest.raises(ModaError, match="expected .* masks from another model"):
        compose_module(lenet, random_masks(wide, 0.5, 0), [0])


@pytest.mark.slow
def test_export_runs_without_moda_core(tmp_path):
    model = randomised("mobilenet", 3, 32)
    composed = compose_module(model, random_masks(model, 0.4, 0), [2, 5])
    path = export_module(composed, tmp_path / "m.pt2")
    x = torch.randn(3, 3, 32, 32)
    assert_runs_without_moda_core(path, x, composed(x).detach(), tmp_path)


def test_the_graph_is_read_once_per_model_structure_and_again_after_a_layer_changes(monkeypatch):
    from torch import nn

    from moda_core import graph as graph_module

    built = []
    original = graph_module._build
    monkeypatch.setattr(graph_module, "_BY_STRUCTURE", {})
    monkeypatch.setattr(graph_module, "_build", lambda *a: built.append(1) or original(*a))
    model = build_model("lenet5")
    first = graph_module.graph_of(model)
    assert graph_module.graph_of(model) is first and len(built) == 1
    assert graph_module.graph_of(build_model("lenet5")) is first and len(built) == 1  # same structure: shared
    model.features[1] = nn.AvgPool2d(2)  # another kind of layer, the same shapes
    graph_module.graph_of(model)
    assert len(built) == 2, "a replaced layer must be read again"
    conv = model.features[0].conv
    conv.weight = nn.Parameter(torch.zeros(conv.out_channels, conv.in_channels, 3, 3))
    graph_module.graph_of(model)
    assert len(built) == 3, "a layer whose parameters change shape must be read again"


# ----- property: any masks, any classes (hypothesis: reproducible; a failure shrinks to the smallest masks) --------

def _drawn_masks(draw, shapes: dict[str, tuple[int, int]]) -> dict[str, torch.Tensor]:
    """Class × unit masks of the given shapes from drawn bytes, one bit per cell, a set bit dropping the unit: a
    failure shrinks toward keeping every unit (the full model), so what remains dropped is what breaks it."""
    import numpy as np
    from hypothesis import strategies as st

    masks = {}
    for point, (rows, units) in shapes.items():
        cells = rows * units
        raw = draw(st.binary(min_size=(cells + 7) // 8, max_size=(cells + 7) // 8))
        bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[:cells]
        masks[point] = torch.from_numpy(bits.reshape(rows, units) == 0)
    return masks


PROPERTY_MODELS = {name: randomised(name, 1, 28) for name in ("lenet5", "resnet18", "mobilenet")}
PROPERTY_SHAPES = {name: {p: tuple(m.shape) for p, m in random_masks(model, 1.0, 0).items()}
                   for name, model in PROPERTY_MODELS.items()}


@pytest.mark.parametrize("name", ["lenet5", pytest.param("resnet18", marks=pytest.mark.slow),
                                  pytest.param("mobilenet", marks=pytest.mark.slow)])
def test_any_masks_compose_to_the_masked_full_model(name):
    """For any masks and any classes, the composed module's logits are the masked full model's and it never has
    more parameters than the full model; classes that keep no unit at some point are refused, naming it."""
    from hypothesis import HealthCheck, event, given, settings
    from hypothesis import strategies as st

    model = PROPERTY_MODELS[name]
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    outcomes = []

    @settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data())
    def check(data):
        masks = _drawn_masks(data.draw, PROPERTY_SHAPES[name])
        classes = data.draw(st.lists(st.integers(0, NUM_CLASSES - 1), min_size=1, max_size=4, unique=True))
        empty = [p for p, m in masks.items() if not m[classes].any()]
        event("refused: no unit at a point" if empty else "composed")
        outcomes.append(bool(empty))
        if empty:  # no unit of these classes at a point: refused with the point's name, not a crash later
            with pytest.raises(ModaError, match=f"keep no unit at point '{empty[0]}'"):
                compose_module(model, masks, classes)
            return
        composed = compose_module(model, masks, classes)
        expected = masked_logits(model, masks, sorted(classes), x)
        with torch.no_grad():
            got = composed(x)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * max(1.0, expected.abs().max().item()))
        assert parameter_count(composed) <= parameter_count(model)

    check()
    assert outcomes.count(False) >= 30, f"{outcomes.count(False)} of {len(outcomes)} cases composed: too few"


def test_classes_that_keep_no_unit_at_a_point_are_refused_by_name():
    model = PROPERTY_MODELS["lenet5"]
    masks = random_masks(model, 0.5, 0)
    point = next(iter(masks))
    masks[point][[2, 5]] = False
    with pytest.raises(ModaError, match=f"classes \\[2, 5\\] keep no unit at point '{point}'"):
        compose_module(model, masks, [5, 2])
    assert compose_module(model, masks, [2, 3]).classes == [2, 3]  # class 3 keeps units there
