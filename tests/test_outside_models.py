"""Thirteen outside models (``outside_models.py``: concatenation growth, channels-last blocks, token mixing, SE
gates, grouped convolution and shuffle, in-place ops, chunk/split/slice, clamps, Conv1d, dropout and stochastic
depth, torchvision's MobileNetV3 and EfficientNet-B0) read, trained and composed as a researcher would:

- the points and their units equal what a reader works out by hand;
- the composed module equals an *independent* masked full model (the eval model traced afresh with torchvision's
  ``NodePathTracer`` and run by an fx ``Interpreter`` that multiplies each point's output by its mask in place, so
  an in-place activation's input, which the network goes on using, is masked too) at mask densities 0.5 and 0.2
  and with every unit kept, to 1e-5 relative;
- it exports with ``torch.export`` with a dynamic batch;
- training runs the graph traced in training mode: dropout and stochastic depth draw as the model itself does;
- in the slow lane, each family trains, decomposes and composes through the CLI.
"""
from __future__ import annotations

import functools
import json

import outside_models as om
import pytest
import torch
from graph_models import calibrated

from bench.graph_models import independent_masked_model as oracle
from moda_core.activations import recorder
from moda_core.compose import compose_module, parameter_count
from moda_core.graph import graph_of
from moda_core.loop import prepare_model

FAST = [name for name in om.MODELS if name not in om.SLOW]
# torchvision's own models take seconds to read and compose: the fast lane (-m "not slow") checks the hand-built
# families, CI's lane all of them
TORCHVISION = {"mobilenet_v3", "efficientnet_b0"}
FAST_LANE = [pytest.param(name, marks=pytest.mark.slow) if name in TORCHVISION else name for name in FAST]
CLASSES = [2, 7]


@functools.cache
def prepared(name: str) -> torch.nn.Module:
    make, points = om.MODELS[name]
    torch.manual_seed(0)
    return prepare_model(calibrated(make()), torch.zeros(2, 1, 28, 28), points)


def class_masks(model: torch.nn.Module, density: float, seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    masks = {}
    for point in graph_of(model).points.values():
        mask = (torch.rand(10, point.units, generator=generator) < density) | (density >= 1)
        mask[torch.arange(10), torch.randint(0, point.units, (10,), generator=generator)] = True
        masks[point.name] = mask
    return masks


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def check_composition(name: str, density: float) -> torch.nn.Module:
    model = prepared(name)
    masks = class_masks(model, density)
    composed = compose_module(model, masks, CLASSES)
    axes = {p.name: p.axis for p in graph_of(model).points.values()}
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = oracle(model, {p: m[CLASSES].any(0) for p, m in masks.items()}, axes)(x)[:, CLASSES]
        got = composed(x)
    assert expected.std(0).max() > 0, "degenerate: the output does not depend on the input"
    assert relative(got, expected) <= 1e-5, relative(got, expected)
    assert parameter_count(composed) < parameter_count(model)
    return composed


def check_export(composed: torch.nn.Module) -> None:
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(composed, (torch.randn(2, 1, 28, 28),), dynamic_shapes=({0: batch},))
    for size in (1, 7):
        sample = torch.randn(size, 1, 28, 28)
        with torch.no_grad():
            assert relative(program.module()(sample), composed(sample)) <= 1e-5


@pytest.mark.parametrize("name", FAST)
def test_points_and_their_units_are_what_a_reader_works_out(name):
    points = graph_of(prepared(name)).points.values()
    assert [(p.name, p.axis, p.units) for p in points] == om.EXPECTED[name]


@pytest.mark.parametrize("density", [0.5, 0.2, 1.0])
@pytest.mark.parametrize("name", FAST_LANE)
def test_composed_module_is_the_independent_masked_model(name, density):
    composed = check_composition(name, density)
    if density == 0.5:
        check_export(composed)


@pytest.mark.slow
@pytest.mark.parametrize("density", [0.5, 0.2, 1.0])
def test_efficientnet_b0_with_silu_points(density):
    points = list(graph_of(prepared("efficientnet_b0")).points.values())
    assert len(points) == 49 and all(p.kind == "silu" and p.axis == 1 for p in points)
    composed = check_composition("efficientnet_b0", density)
    if density == 0.5:
        check_export(composed)


def test_what_is_kept_whole_is_said_in_words():
    assert graph_of(prepared("shuffle")).limits() == [
        "kept whole (grouped convolution (groups=3)): unit.g1, unit.g2",
        "kept whole (reshape that splits the units (attention heads, a channel shuffle)): unit.view"]
    assert graph_of(prepared("convnext_gelu")).limits() == [
        "kept whole (layer norm normalises over the units): block.norm"]
    assert graph_of(prepared("in_place")).limits() == []


def test_values_at_zero_follow_the_arguments():
    ops = graph_of(prepared("clamps")).ops
    assert ops["shift"].data is False  # Hardtanh(0.1, 4): a dropped unit becomes 0.1
    assert ops["clamp"].data is False  # clamp(min=0.05)
    assert ops["keep"].data is True  # Hardtanh(): zero stays zero


@pytest.mark.parametrize("name", ["stochastic", pytest.param("efficientnet_b0", marks=pytest.mark.slow)])
def test_training_runs_the_graph_traced_in_training_mode(name):
    """Dropout and stochastic depth draw in training exactly as the model's own forward does, and are off in
    evaluation."""
    model = prepared(name)
    x = torch.randn(4, 1, 28, 28)
    train = recorder(model, training=True)
    model.train()
    try:
        torch.manual_seed(5)
        own = model(x)
        torch.manual_seed(5)
        traced = train(x)[0]
        torch.manual_seed(6)
        other = train(x)[0]
    finally:
        model.eval()
    assert torch.equal(own, traced)
    assert not torch.equal(traced, other), "training draws differ from step to step"
    with torch.no_grad():
        assert torch.allclose(recorder(model)(x)[0], model(x), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", FAST)
def test_each_family_trains_decomposes_and_composes_through_the_cli(name, tmp_path, monkeypatch, capsys):
    from moda_core.cli import main

    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    points = om.MODELS[name][1]
    main(["train", "--model", f"outside_models:make_{name}", "--points", points, "--epochs", "1",
          "--train-fraction", "0.1", "--runs-dir", str(tmp_path), "--name", "run", "--json"])
    trained = json.loads(capsys.readouterr().out)
    assert trained["epochs"] == 1
    main(["decompose", str(tmp_path / "run"), "--json", "--models", "outside_models"])
    decomposed = json.loads(capsys.readouterr().out)
    assert decomposed["points"] == [p for p, _, _ in om.EXPECTED[name]]
    assert 0 < decomposed["mean_module_size"] <= 1
    main(["compose", str(tmp_path / "run"), "--classes", "2", "7", "--out", str(tmp_path / "m.pt2"), "--json",
          "--models", "outside_models"])
    composed = json.loads(capsys.readouterr().out)
    assert composed["params"] < composed["full_params"] and (tmp_path / "m.pt2").stat().st_size > 0
    program = torch.export.load(str(tmp_path / "m.pt2"))
    assert program.module()(torch.randn(3, 1, 28, 28)).shape == (3, 2)
