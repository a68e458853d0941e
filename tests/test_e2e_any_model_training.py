"""Models of your own, trained end to end: torchvision's ResNet-18, VGG11-bn, MobileNetV2 and a small ViT
(adapted to 1×28×28 as a user would: a 1-channel stem) and hand-written CNNs (F.relu, a shared nn.ReLU,
ReLU6, a skip connection, a torch.cat of two branches, GELU/SiLU opted in), each trained with MODA for one
epoch on a slice of mnist5k, then decomposed, composed, exported and their overlap counted."""
from __future__ import annotations

import copy

import graph_models
import pytest
import torch
from helpers import brute_force_overlap, masked_logits

from moda_core.compose import compose_module, parameter_count
from moda_core.decompose import decompose
from moda_core.export import export_module
from moda_core.graph import graph_of
from moda_core.overlap import overlap_counts
from moda_core.runs import load_run, run_dataset
from moda_core.train import TrainConfig, train

pytestmark = pytest.mark.slow
BIG = ("resnet18", "vgg11")


@pytest.mark.parametrize("path,points", [pytest.param(path, points, marks=[pytest.mark.long] if
                                                       any(big in path for big in BIG) else [])
                                          for path, points in graph_models.BUILDERS],
                         ids=[path.partition(":")[2] for path, _ in graph_models.BUILDERS])
def test_train_decompose_compose_export_and_count(path, points, tmp_path):
    fraction = 0.02 if any(big in path for big in BIG) else 0.06
    config = TrainConfig(model=path, points=points, epochs=1, train_fraction=fraction, batch_size=50, lr=0.02)
    run = train(config, runs_dir=tmp_path / "runs", name="own")
    assert run.config["arch"]["name"] == path and run.config["arch"]["points"] == points
    run = load_run(tmp_path / "runs" / "own")  # rebuilt from the import path, the weights under its own keys
    assert not any(m._forward_hooks for m in run.model.modules())
    decomposition = decompose(run, 0.9)
    units = {name: point.units for name, point in graph_of(run.model).points.items()}
    assert {p: tuple(r.shape) for p, r in decomposition.rates.items()} == {p: (10, u) for p, u in units.items()}
    assert all(0 <= float(r.min()) and float(r.max()) <= 1 for r in decomposition.rates.values())
    masks = decomposition.masks
    classes = [1, 7]
    composed = compose_module(run.model, masks, classes)
    x = run_dataset(run).test.batch(torch.arange(40))[0]
    expected = masked_logits(run.model, masks, classes, x)
    with torch.no_grad():
        got = composed(x)
    assert (got - expected).abs().max() <= 1e-5 * max(1.0, float(expected.abs().max()))
    assert parameter_count(composed) < parameter_count(run.model)
    program = torch.export.load(export_module(composed, tmp_path / "module.pt2"))
    for batch in (1, 7):
        with torch.no_grad():
            assert torch.allclose(program.module()(x[:batch]), composed(x[:batch]), atol=1e-5, rtol=1e-4)
    analytic = overlap_counts(run.model, masks)
    assert torch.equal(analytic, brute_force_overlap(copy.deepcopy(run.model), masks))


def test_an_untraceable_model_trains_and_decomposes_and_composition_says_why(tmp_path, capsys):
    from moda_core.cli import main

    runs_dir = tmp_path / "runs"
    assert main(["train", "--model", "graph_models:make_hookednet", "--epochs", "1", "--train-fraction", "0.05",
                 "--runs-dir", str(runs_dir), "--name", "hooked"]) == 0
    assert "note: cannot trace HookedNet" in capsys.readouterr().out
    assert main(["decompose", str(runs_dir / "hooked"), "--models", "graph_models"]) == 0
    out = capsys.readouterr().out
    assert "relu1: units kept per class" in out
    assert "rates and masks work, module size, overlap and composition do not" in out
    assert main(["compose", str(runs_dir / "hooked"), "--classes", "1", "2", "--models", "graph_models"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot trace HookedNet" in err[0] and "traceable forward" in err[0]
