"""Models of your own (not the zoo): builders by import path, activation points on the graph, composition, overlap,
export and the checks on bad builders. Nothing here trains (test_e2e_any_model_training.py does)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import graph_models
import pytest
import torch
import torch.nn.functional as F
from helpers import brute_force_overlap, masked_logits, random_masks
from torch import nn

from moda_core import ModaError, ModularLoss
from moda_core.activations import masked_model, modular_points, run_with_cache
from moda_core.cli import main
from moda_core.compose import check_masks, compose_module, parameter_count
from moda_core.export import export_module
from moda_core.graph import graph_of
from moda_core.import_policy import allow_models
from moda_core.losses import modular_losses
from moda_core.models import build_model
from moda_core.models.user import build_user_model, load_builder
from moda_core.overlap import overlap_counts
from moda_core.run_config import check_config
from moda_core.train import TrainConfig, train

SMALL = [path for path, _ in graph_models.BUILDERS if "vgg" not in path and "resnet" not in path]
# the full-size torchvision-style models: seconds each to compose and export, so the fast lane (``-m "not slow"``)
# checks the small builders and CI's lane all of them
HEAVY = {"graph_models:make_resnet18", "graph_models:make_vgg11_bn", "graph_models:make_mobilenet_v2"}
EVERY_BUILDER = [pytest.param(path, points, marks=pytest.mark.slow) if path in HEAVY else (path, points)
                 for path, points in graph_models.BUILDERS]


def built(path: str, points: str = "relu") -> nn.Module:
    torch.manual_seed(0)
    model = build_model(path, 1, 28, 10, points=points)
    return graph_models.calibrated(model)


@pytest.mark.parametrize("path,points", EVERY_BUILDER)
def test_a_built_model_is_the_builders_model_untouched(path, points):
    torch.manual_seed(0)
    original = getattr(graph_models, path.partition(":")[2])(num_classes=10, in_channels=1, image_size=28)
    model = build_user_model(path, 1, 28, 10, points)
    assert model.arch["name"] == path and model.input_shape == (1, 28, 28) and model.training
    assert type(model) is type(original) and list(model.state_dict()) == list(original.state_dict())
    model.load_state_dict(original.state_dict())
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), original.eval()(x))
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())  # reading it hooks nothing


def test_points_are_call_sites_named_as_feature_extraction_names_them():
    resnet = build_model("graph_models:make_resnet18", 1, 28, 10)
    points = modular_points(resnet)
    assert len(points) == 17 and points[:3] == ["relu", "layer1.0.relu", "layer1.0.relu_1"]
    assert modular_points(build_model("graph_models:make_functionalnet", 1, 28, 10)) == ["relu", "relu_1", "relu_2"]
    assert modular_points(build_model("graph_models:make_relu6net", 1, 28, 10)) == ["features.2", "features.5"]
    mobilenet = build_model("graph_models:make_mobilenet_v2", 1, 28, 10)
    assert modular_points(mobilenet)[0] == "features.0.2"  # the ReLU6 inside Conv2dNormActivation


def test_token_models_record_features_as_units():
    vit = build_model("graph_models:make_vit", 1, 28, 10)
    _, cache = run_with_cache(vit, torch.randn(2, 1, 28, 28))
    for activation in cache.values():  # B×T×64 tokens, recorded with the 64 features as units (dim 1)
        assert activation.shape == (2, 64, 17)
    masks = random_masks(vit, 0.5, seed=1)
    assert all(mask.shape == (10, 64) for mask in masks.values())
    assert check_masks(vit, masks) == 10


@pytest.mark.parametrize("path,points", EVERY_BUILDER)
def test_composed_module_is_the_masked_model_smaller_and_exports(path, points, tmp_path):
    model = built(path, points)
    masks = random_masks(model, 0.4, seed=3)
    classes = [2, 7]
    composed = compose_module(model, masks, classes)
    x = torch.randn(5, 1, 28, 28)
    expected = masked_logits(model, masks, classes, x)
    with torch.no_grad():
        got = composed(x)
    assert composed.classes == classes
    assert (got - expected).abs().max() <= 1e-5 * max(1.0, expected.abs().max())
    assert parameter_count(composed) < parameter_count(model)
    program = torch.export.load(export_module(composed, tmp_path / "module.pt2"))
    for batch in (1, 7):
        x = torch.randn(batch, 1, 28, 28)
        with torch.no_grad():
            assert torch.allclose(program.module()(x), composed(x), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("path,points", [pytest.param(p, k, marks=pytest.mark.slow) if p in HEAVY else (p, k)
                                         for p, k in graph_models.BUILDERS if p in SMALL])
def test_analytic_overlap_equals_a_brute_force_count(path, points):
    model = built(path, points)
    masks = random_masks(model, 0.4, seed=5)
    analytic = overlap_counts(model, masks)
    assert torch.equal(analytic, brute_force_overlap(model, masks))
    by_layer = overlap_counts(model, masks, by_layer=True)
    assert torch.equal(sum(by_layer.values()), analytic)


def test_vit_reports_what_it_keeps_whole():
    model = built("graph_models:make_vit")
    composed = compose_module(model, random_masks(model, 0.3, seed=0), [0, 1])
    reasons = " ".join(reason for _, reason in composed.kept_whole)
    assert "MultiheadAttention" in reasons and "layer norm" in reasons


def test_untraceable_model_with_relu_modules_trains_through_hooks_and_composition_says_why():
    model = build_model("graph_models:make_hookednet", 1, 28, 10)
    assert model.arch["traced"] is False
    assert modular_points(model) == ["relu1", "relu2"]
    masks = random_masks(model, 0.5, seed=0)
    with pytest.raises(ModaError, match="cannot trace HookedNet: .*traceable forward"):
        compose_module(model, masks, [0, 1])


def test_gelu_and_silu_points_fire_above_the_threshold_and_the_loss_takes_magnitudes():
    model = built("graph_models:make_gelusilunet", "gelu,silu")
    assert [p.kind for p in graph_of(model).points.values()] == ["gelu", "silu"]
    moda = ModularLoss(model, torch.zeros(2, 1, 28, 28), points="gelu,silu")
    assert moda.nonnegative is False
    x, y = torch.randn(6, 1, 28, 28), torch.tensor([0, 0, 1, 1, 2, 2])
    moda.model.eval()(x)
    _, cache = run_with_cache(model, x)
    expected = modular_losses(list(cache.values()), y, nonnegative=False)
    total = moda(y)
    assert torch.allclose(total, expected[0] + expected[1] + 0.3 * expected[2])
    with pytest.raises(ModaError, match="no activation point"):
        build_model("graph_models:make_gelusilunet", 1, 28, 10)  # relu only: none


def test_modular_loss_in_your_own_loop_equals_the_objectives_by_hand():
    torch.manual_seed(0)
    model = graph_models.FunctionalNet().eval()
    moda = ModularLoss(model, torch.zeros(2, 1, 28, 28), alpha=0.5, beta=2.0, gamma=0.1)
    assert list(moda.model.state_dict()) == list(model.state_dict()) and not moda.model.training
    x, y = torch.randn(8, 1, 28, 28), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    logits = moda.model(x)
    # the model's activations computed by hand, in its own forward's order
    a1 = F.relu(model.bn1(model.conv1(x)))
    a2 = torch.relu(model.conv2(F.max_pool2d(a1, 2)))
    a3 = model.fc1(torch.flatten(F.adaptive_avg_pool2d(a2, 1), 1)).relu()
    affinity, dispersion, compactness = modular_losses([a1, a2, a3], y, nonnegative=True)
    assert torch.allclose(moda(y), 0.5 * affinity + 2.0 * dispersion + 0.1 * compactness)
    assert torch.allclose(logits, model.fc2(a3))
    loss = F.cross_entropy(logits, y) + moda(y)
    loss.backward()
    assert model.conv1.weight.grad is not None  # moda.model trains the user's parameters
    moda.close()
    moda.model(x)
    with pytest.raises(ModaError, match="no activations recorded"):
        ModularLoss(model, torch.zeros(2, 1, 28, 28))(y)


BAD_BUILDERS = [
    ("nosuchpackage.nets:make", "no module named 'nosuchpackage'"),
    ("graph_models:no_such_function", "AttributeError"),
    ("graph_models:make_raises", "raised ValueError: no such width"),
    ("graph_models:make_not_a_module", "returned a dict, not a torch.nn.Module"),
    ("graph_models:make_wrong_classes", r"returns shape \[2, 3\].*\[2, 10\]"),
    ("graph_models:make_tuple_output", "returns a tuple"),
    ("graph_models:make_no_points", "no activation point"),
    ("graph_models:make_untraceable", "cannot trace Untraceable.*has none"),
    ("graph_models:make_relu_twice", "ReLU module 'relu1' ran twice"),
    ("graph_models:make_unnamed_units", r"cannot tell the units of point '0'.*points=\{'0': -1\}"),
    ("graph_models:make_old_signature", "raised TypeError"),
    ("graph_models:CLASSES", "is a int, not a function"),
]


@pytest.mark.parametrize("path,message", BAD_BUILDERS)
def test_a_bad_builder_is_one_error_before_anything_is_written(path, message, tmp_path):
    runs_dir = tmp_path / "runs"
    with pytest.raises(ModaError, match=message):
        train(TrainConfig(model=path, epochs=1), runs_dir=runs_dir)
    assert not runs_dir.exists()


def test_the_cli_says_error_in_one_line_and_writes_nothing(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    code = main(["train", "--model", "graph_models:make_wrong_classes", "--epochs", "1", "--runs-dir", str(runs_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and err[0].startswith("error: model graph_models:make_wrong_classes returns")
    assert not runs_dir.exists()
    code = main(["train", "--model", "not a path", "--runs-dir", str(runs_dir)])
    assert code != 0 and "or an import path package.module:function" in capsys.readouterr().err


def test_config_takes_import_paths_and_their_points():
    arch = {"name": "mypkg.nets:make_net", "in_channels": 1, "image_size": 28, "num_classes": 10, "width": 1.0,
            "points": "relu,gelu", "threshold": 0.0}
    check_config({"arch": arch})
    for bad, message in ((dict(arch, name="os.system"), "import path"), (dict(arch, points="tanh"), "tanh"),
                         (dict(arch, width=2.0), "arch.width"), (dict(arch, name="a:b; rm -rf"), "import path"),
                         (dict(arch, threshold=float("nan")), "arch.threshold")):
        with pytest.raises(ModaError, match=message):
            check_config(json.loads(json.dumps({"arch": bad})) if bad.get("threshold") == bad.get("threshold")
                         else {"arch": bad})


def test_zoo_options_do_not_mix_with_your_own():
    with pytest.raises(ModaError, match="zoo models only"):
        TrainConfig(model="graph_models:make_skipnet", width=0.5).validate()
    with pytest.raises(ModaError, match="ReLU points only"):
        TrainConfig(model="lenet5", points="gelu").validate()
    with pytest.raises(ModaError, match="MwT trains zoo models only"):
        TrainConfig(model="graph_models:make_skipnet", method="mwt", alpha=0.5, beta=1.5, gamma=0.0).validate()
    assert TrainConfig(model=graph_models.make_skipnet).model == "graph_models:make_skipnet"
    with pytest.raises(ModaError, match="cannot be found again"):
        TrainConfig(model=lambda **_: graph_models.SkipNet())


def test_imports_are_refused_from_namespace_folders_and_outside_an_allowed_list(tmp_path, monkeypatch):
    folder = tmp_path / "runs" / "evil"
    folder.mkdir(parents=True)
    (folder / "payload.py").write_text("import pathlib\npathlib.Path(__file__).with_name('ran').touch()\n"
                                       "def make(**kw):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    allow_models(["runs", "mypkg"])
    with pytest.raises(ModaError, match="namespace package"):
        load_builder("runs.evil.payload:make")
    assert not (folder / "ran").exists()
    with pytest.raises(ModaError, match="not imported: needs --models graph_models"):
        load_builder("graph_models:make_skipnet")
    allow_models(["graph_models"])
    assert load_builder("graph_models:make_skipnet") is graph_models.make_skipnet


def test_a_builder_is_a_function_defined_where_its_path_says():
    with pytest.raises(ModaError, match="neither a zoo model nor an import path"):
        load_builder("graph_models:torch.nn.Linear")  # no attribute paths: nothing the module imported
    with pytest.raises(ModaError, match=r"not a function defined in graph_models \(it comes from bench.graph_models\)"):
        load_builder("graph_models:calibrated")  # imported into the module, not defined there
    allow_models(["os"])
    with pytest.raises(ModaError, match=r"not a function defined in os \(it comes from posix\)"):
        load_builder("os:system")


def test_masks_of_another_model_are_refused():
    model = built("graph_models:make_skipnet")
    other = random_masks(built("graph_models:make_catnet"), 0.5, seed=0)
    with pytest.raises(ModaError, match="masks do not belong to this model"):
        compose_module(model, other, [0, 1])
    masks = random_masks(model, 0.5, seed=0)
    masks["relu1"] = masks["relu1"][:, :4]
    with pytest.raises(ModaError, match="expected \\(10, 8\\)"):
        overlap_counts(model, masks)
    with pytest.raises(ModaError, match="out of range|classes"):
        compose_module(model, random_masks(model, 0.5, seed=0), [3, 12])


def test_the_masked_model_zeroes_units_along_the_token_features():
    vit = built("graph_models:make_vit")
    site = modular_points(vit)[0]  # the first encoder layer's MLP activation, 64 token features
    masked = masked_model(vit, {site: torch.zeros(64, dtype=torch.bool)})
    silenced = graph_models.calibrated(build_model("graph_models:make_vit", 1, 28, 10))
    silenced.load_state_dict(vit.state_dict())
    with torch.no_grad():  # every unit zeroed is an fc1 that gives zero: weights and bias 0
        silenced.encoder.layers[0].mlp[0].weight.zero_()
        silenced.encoder.layers[0].mlp[0].bias.zero_()
        x = torch.randn(2, 1, 28, 28)
        torch.testing.assert_close(masked(x), silenced.eval()(x), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(masked(x), vit(x))
    assert sys.modules["graph_models"] is graph_models
    assert Path(graph_models.__file__).parent.name == "tests"


def test_a_run_whose_builder_is_not_allowed_or_does_not_import_says_so_in_one_line(tmp_path, capsys):
    import shutil

    from helpers import DEMO

    from moda_core.runs import list_runs, load_run

    run = tmp_path / "runs" / "gone"
    shutil.copytree(DEMO / "swap-weak", run, ignore=shutil.ignore_patterns("checkpoints", "*tau*", "rates*"))
    config = json.loads((run / "config.json").read_text())
    config["arch"]["name"] = "nosuchpkg.nets:make_net"
    (run / "config.json").write_text(json.dumps(config))
    (summary,) = list_runs(tmp_path / "runs")
    assert (summary.status, summary.needs, summary.loadable) == ("needs-models", "nosuchpkg", False)
    assert summary.error.startswith("needs --models nosuchpkg") and "\n" not in summary.error
    with pytest.raises(ModaError, match="not imported: needs --models nosuchpkg"):
        load_run(run)
    allow_models(["nosuchpkg"])
    assert list_runs(tmp_path / "runs")[0].status == "complete"  # allowed: listed as usual, still not imported
    with pytest.raises(ModaError, match="no module named 'nosuchpkg'"):
        load_run(run)
    for command in (["decompose", str(run)], ["decompose", str(run), "--models", "nosuchpkg"]):
        assert main(command) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and "nosuchpkg" in err[0]
