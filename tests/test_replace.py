"""Module replacement: the three strategies on small real runs, frozen parts, report arithmetic (the paper's
measure), the experiment's run configs, bad input, CLI and export."""
import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import assert_runs_without_moda_core

from moda_core.cli import main
from moda_core.compose import compose_module
from moda_core.data import Split
from moda_core.decompose import RATES_FILE, decompose, decomposition_dir, masks_file
from moda_core.errors import ModaError
from moda_core.evaluate import per_class_accuracy, predict_logits
from moda_core.export import export_module
from moda_core.methods import method_of
from moda_core.models import build_model
from moda_core.replace import (
    STRATEGIES,
    AffineModel,
    CalibratedModel,
    NormalizedModel,
    affine,
    calibrate,
    check_replacement,
    class_index,
    normalize,
    repair,
    replacement_report,
    run_classes,
    strong_config,
    weak_config,
    with_shifts,
)
from moda_core.runs import load_run, run_dataset
from moda_core.train import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent
WEAK_CLASSES = [2, 5, 6, 7, 8, 9]  # class 2 is weak index 0 and strong index 2


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A strong MODA VGG11 (width 0.25) on classes 0–4 and a weak LeNet-5 on 2, 5–9 with 10% of the data."""
    runs_dir = tmp_path_factory.mktemp("replace-runs")
    strong = train(TrainConfig(model="vgg11", width=0.25, epochs=2, batch_size=32, classes=[0, 1, 2, 3, 4],
                               train_fraction=0.25), runs_dir, "strong")
    weak = train(TrainConfig(model="lenet5", epochs=6, batch_size=32, classes=WEAK_CLASSES, train_fraction=0.1,
                             augment=False, checkpoint_every=1, alpha=0, beta=0, gamma=0,
                             track_modular_terms=False), runs_dir, "weak")
    return weak, strong


@pytest.fixture(scope="module")
def masks(pair):
    return decompose(pair[1]).masks


def test_report_arithmetic_on_hand_made_logits():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2, 2])
    before = torch.tensor([[0, 1, 0], [0, 1, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1], [0, 0, 1], [1, 0, 0]])
    after = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1], [1, 0, 0]])
    report = replacement_report(before.float(), after.float(), labels, target=0, classes=[3, 5, 8])
    assert report["target_class"] == 3
    assert report["before"] == {"3": 0.0, "5": 0.5, "8": 0.75}
    assert report["after"] == {"3": 1.0, "5": 1.0, "8": 0.5}
    assert report["target_gain"] == 1.0
    assert report["other_max_change"] == 0.5  # class 5: +0.5 beats class 8: −0.25, in absolute value
    assert report["other_max_drop"] == 0.25
    assert report["accuracy_before"] == 4 / 8 and report["accuracy_after"] == 6 / 8
    assert report["accuracy_change"] == 2 / 8
    # the paper's measure: target before/after and the unweighted mean of the other classes (5: ½ → 1, 8: ¾ → ½)
    assert report["target_before"] == 0.0 and report["target_after"] == 1.0
    assert report["other_mean_before"] == 0.625 and report["other_mean_after"] == 0.75
    assert report["other_mean_change"] == 0.125  # signed: the mean went up although class 8 dropped
    down = replacement_report(after.float(), before.float(), labels, target=0, classes=[3, 5, 8])
    assert down["other_mean_change"] == -0.125 and down["target_gain"] == -1.0 and down["other_max_drop"] == 0.5
    single = replacement_report(before[:2, :1].float(), after[:2, :1].float(), labels[:2], target=0, classes=[4])
    assert single["other_max_change"] == single["other_max_drop"] == single["target_gain"] == 0.0
    assert single["other_mean_before"] == single["other_mean_after"] == single["other_mean_change"] == 0.0


def test_class_ids_map_to_logit_positions(pair):
    weak, strong = pair
    assert run_classes(weak) == WEAK_CLASSES and run_classes(strong) == [0, 1, 2, 3, 4]
    assert class_index(weak, 2) == 0 and class_index(weak, 7) == 3 and class_index(strong, 2) == 2
    with pytest.raises(ModaError, match=r"did not learn class 7: its classes are \[0, 1, 2, 3, 4\]"):
        class_index(strong, 7)


def test_calibrated_model_starts_as_the_swap(pair, masks):
    weak, strong = pair
    module = compose_module(strong.model, masks, [2])
    repaired = CalibratedModel(weak.model, module, target=0).eval()
    x = torch.randn(7, 1, 28, 28)
    with torch.no_grad():
        expected = weak.model(x)
        expected[:, 0] = module(x)[:, 0]
        assert torch.equal(repaired(x), expected)
        assert repaired.features(x).shape == (7, 6)


def _broken(weak):
    """A copy of the weak model that never predicts its class 0 (original class 2)."""
    broken = copy.deepcopy(weak.model)
    with torch.no_grad():
        broken.classifier[-1].weight[0] = 0.0
        broken.classifier[-1].bias[0] = -1e4
    return broken


def test_calibrate_repairs_a_target_the_weak_model_never_predicts(pair, masks):
    weak, strong = pair
    broken = _broken(weak)
    data = run_dataset(weak)
    repaired = calibrate(broken, strong.model, masks, 0, 2, data.train, classes=WEAK_CLASSES)
    before = per_class_accuracy(predict_logits(broken, data.test), data.test.labels, 6)
    after = per_class_accuracy(predict_logits(repaired, data.test), data.test.labels, 6)
    assert before[0] == 0.0
    assert after[0] > 0.8  # the strong module knows class 2 well


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_repair_report_on_an_early_checkpoint(pair, strategy):
    weak, strong = pair
    early = load_run(f"{weak.path}@1")
    result = repair(early, strong, 0, 2, strategy)
    report = result.report
    assert list(report["before"]) == list(report["after"]) == [str(c) for c in WEAK_CLASSES]
    assert report["target_class"] == 2 and report["strong_class_id"] == 2 and report["weak"] == f"{weak.path}@1"
    assert report["after"]["2"] > 0.8 and report["after"]["2"] >= report["before"]["2"]
    assert report["target_gain"] == pytest.approx(report["after"]["2"] - report["before"]["2"])
    others = [report["after"][c] - report["before"][c] for c in report["before"] if c != "2"]
    assert report["other_max_change"] == pytest.approx(max(map(abs, others)))
    assert report["other_max_drop"] == pytest.approx(max(0.0, *(-d for d in others)))
    assert 0 < report["module_params_fraction"] <= 1 and report["epochs"] == (5 if strategy == "calibrate" else 0)


def test_frozen_parts_stay_unchanged(pair, masks):
    weak, strong = pair
    snapshot = {name: {k: v.clone() for k, v in run.model.state_dict().items()}
                for name, run in (("weak", weak), ("strong", strong))}
    data = run_dataset(weak)
    calibrated = calibrate(weak.model, strong.model, masks, 0, 2, data.train, epochs=3)
    normalized = normalize(weak.model, strong.model, masks, 0, 2, data.train)
    fresh_module = compose_module(strong.model, masks, [2]).state_dict()
    for repaired in (calibrated, normalized):
        repaired.train()  # must not put the frozen parts in training mode (batch-norm statistics)
        assert not repaired.weak.training and not repaired.module.training
        with torch.no_grad():
            repaired(data.train.batch(slice(0, 64))[0])
        assert all(not p.requires_grad for p in [*repaired.weak.parameters(), *repaired.module.parameters()])
        for part, reference in ((repaired.weak, snapshot["weak"]), (repaired.module, fresh_module)):
            state = part.state_dict()
            assert state.keys() == reference.keys()
            assert all(torch.equal(state[k], reference[k]) for k in reference)
    trainable = [n for n, p in calibrated.named_parameters() if p.requires_grad]
    assert trainable == ["calibration.weight", "calibration.bias"]
    for name, run in (("weak", weak), ("strong", strong)):
        state = run.model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in snapshot[name].items())
        assert all(p.requires_grad for p in run.model.parameters())  # the caller's models are not touched


def test_calibration_is_seeded(pair, masks):
    weak, strong = pair
    train_split = run_dataset(weak).train
    a, b = (calibrate(weak.model, strong.model, masks, 0, 2, train_split, epochs=2, seed=3) for _ in range(2))
    assert torch.equal(a.calibration.weight, b.calibration.weight)
    assert not torch.equal(a.calibration.weight, CalibratedModel(weak.model, a.module, 0).calibration.weight)


def test_calibration_that_diverges_is_a_clear_error(pair, masks):
    weak, strong = pair
    train_split = run_dataset(weak).train
    # a zero std makes every normalised image non-finite, so the loss is NaN from the first step
    broken = dataclasses.replace(train_split, std=torch.zeros_like(train_split.std))
    with pytest.raises(ModaError, match=r"calibration diverged .* epoch 1 of 2 ") as diverged:
        calibrate(weak.model, strong.model, masks, 0, 2, broken, epochs=2)
    assert diverged.value.hint == "try a smaller --lr"


def test_normalize_replaces_the_target_probability(pair, masks):
    weak, strong = pair
    data = run_dataset(weak)
    repaired = normalize(weak.model, strong.model, masks, 0, 2, data.train)
    module = compose_module(strong.model, masks, [2])
    outputs = predict_logits(module, data.train)
    assert repaired.low.item() == outputs.min().item() and repaired.high.item() == outputs.max().item()
    x = data.test.batch(slice(0, 50))[0]
    with torch.no_grad():
        scores = repaired(x)
        expected = torch.softmax(weak.model(x), 1)
        expected[:, 0] = ((module(x)[:, 0] - outputs.min()) / (outputs.max() - outputs.min())).clamp(0, 1)
    torch.testing.assert_close(scores, expected)
    assert scores.min() >= 0 and scores.max() <= 1
    with pytest.raises(ModaError, match="cannot normalise"):
        NormalizedModel(weak.model, module, 0, 1.5, 1.5)


def test_strong_run_without_decomposition_is_decomposed_with_progress(pair):
    weak, strong = pair
    folder = decomposition_dir(strong)
    for name in (RATES_FILE, masks_file(0.9)):
        (folder / name).unlink(missing_ok=True)
    calls = []
    repair(weak, strong, 0, 2, "normalize", progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1][0] == calls[-1][1]
    assert (folder / RATES_FILE).exists() and (folder / masks_file(0.9)).exists()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_repair_reports_its_stages_by_strategy(pair, strategy):
    """``stage(text, done)`` hears of every stage, prefixed with the strategy, with ``done`` rising to 1; the
    decomposition's own ``progress`` still sees its batches when both are given."""
    weak, strong = pair
    folder = decomposition_dir(strong)
    (folder / RATES_FILE).unlink(missing_ok=True)  # the first stage decomposes the strong run again
    (folder / masks_file(0.9)).unlink(missing_ok=True)
    stages, batches = [], []
    report = repair(weak, strong, 0, 2, strategy, epochs=3, progress=lambda done, total: batches.append(done),
                    stage=lambda text, done: stages.append((text, done))).report
    texts, done = [t for t, _ in stages], [d for _, d in stages]
    assert done == sorted(done) and done[0] == 0.0 and done[-1] == 1.0, stages
    assert batches and any(t.startswith("decomposing the strong run: batch ") for t in texts)
    strategy_texts = [t for t in texts if t.startswith(f"{strategy}: ")]
    assert strategy_texts[-2:] == [f"{strategy}: evaluating on {len(run_dataset(weak).test):,} test images",
                                   f"{strategy}: done"]
    if strategy == "calibrate":
        assert [t for t in texts if "epoch" in t] == [f"calibrate: training the remix layer, epoch {e}/3"
                                                      for e in (1, 2, 3)]
    if strategy == "affine":
        assert "affine: fitting a, c and b" in texts
    # the report does not depend on being watched
    assert report == {**repair(weak, strong, 0, 2, strategy, epochs=3).report, "seconds": report["seconds"]}


def test_bad_input_is_a_clear_error(pair, masks):
    weak, strong = pair
    small, rgb = build_model("lenet5", 1, 28, 6), build_model("lenet5", 3, 32, 5)
    with pytest.raises(ModaError, match=r"\(1, 28, 28\).*\(3, 32, 32\)"):
        check_replacement(small, rgb, 0, 0)
    with pytest.raises(ModaError, match=r"\(1, 28, 28\).*\(3, 32, 32\)"):
        calibrate(small, rgb, {}, 0, 0, run_dataset(weak).train)
    with pytest.raises(ModaError, match=r"class index\(es\) \[6\] out of range for the weak model.*0\.\.5"):
        repair(weak, strong, 6, 2)
    with pytest.raises(ModaError, match=r"class index\(es\) \[5\] out of range for the strong model.*0\.\.4"):
        repair(weak, strong, 0, 5)
    with pytest.raises(ModaError, match="unknown replacement strategy 'swap'"):
        repair(weak, strong, 0, 2, "swap")
    with pytest.raises(ModaError, match="no checkpoint for epoch 99"):
        load_run(f"{weak.path}@99")
    fashion = dataclasses.replace(strong, config={**strong.config, "train": {**strong.config["train"],
                                                                            "dataset": "fashion_mnist"}})
    with pytest.raises(ModaError, match="different mean/std"):
        repair(weak, fashion, 0, 2)


@pytest.mark.parametrize("argv,message", [
    (["--weak", "{weak}@99", "--strong", "{strong}", "--class-id", "2"], "no checkpoint for epoch 99"),
    (["--weak", "{weak}", "--strong", "{strong}", "--class-id", "7"], "did not learn class 7"),
    (["--weak", "{weak}", "--strong", "{strong}", "--weak-class", "0"], "say which class to repair"),
    (["--weak", "{weak}", "--strong", "{strong}", "--class-id", "2", "--weak-class", "0"], "not both"),
    (["--weak", "{weak}", "--strong", "{strong}", "--weak-class", "9", "--strong-class", "2"], "out of range"),
])
def test_cli_errors_are_one_line(pair, capsys, argv, message):
    weak, strong = pair
    code = main(["replace", *(a.format(weak=weak.path, strong=strong.path) for a in argv)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and message in err and "\n" not in err


def test_cli_json_round_trip_and_export(pair, tmp_path):
    weak, strong = pair
    out = tmp_path / "repaired.pt2"
    result = subprocess.run([sys.executable, "-m", "moda_core", "replace", "--weak", f"{weak.path}@2", "--strong",
                             str(strong.path), "--class-id", "2", "--strategy", "calibrate", "--epochs", "3",
                             "--out", str(out), "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["weak_class"] == 0 and report["strong_class"] == 2 and report["epochs"] == 3
    assert set(report["before"]) == set(report["after"]) == {str(c) for c in WEAK_CLASSES}
    assert all(0 <= v <= 1 for v in [*report["before"].values(), *report["after"].values()])
    assert report["target_gain"] == pytest.approx(report["after"]["2"] - report["before"]["2"])
    assert report["out"] == str(out)
    program = torch.export.load(str(out)).module()
    repaired = repair(load_run(f"{weak.path}@2"), strong, 0, 2, "calibrate", epochs=3).model
    x = run_dataset(weak).test.batch(slice(0, 9))[0]
    with torch.no_grad():
        torch.testing.assert_close(program(x), repaired(x))


def test_normalized_model_exports(pair, masks, tmp_path):
    weak, strong = pair
    repaired = normalize(weak.model, strong.model, masks, 0, 2, run_dataset(weak).train)
    path = export_module(repaired, tmp_path / "normalized.pt2")
    x = torch.randn(5, *repaired.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(torch.export.load(str(path)).module()(x), repaired(x))


def test_affine_keeps_every_other_logit_bit_identical(pair, masks):
    weak, strong = pair
    data = run_dataset(weak)
    repaired = affine(weak.model, strong.model, masks, 0, 2, data.train, classes=WEAK_CLASSES)
    assert isinstance(repaired, AffineModel)
    assert [n for n, p in repaired.named_parameters() if p.requires_grad] == ["scale", "weak_scale", "bias"]
    module = compose_module(strong.model, masks, [2])
    for x in (data.test.batch(slice(0, 100))[0], torch.randn(7, 1, 28, 28) * 3):
        with torch.no_grad():
            out, weak_out = repaired(x), weak.model(x)
            expected = repaired.scale * module(x)[:, 0] + repaired.weak_scale * weak_out[:, 0] + repaired.bias
        assert torch.equal(out[:, 1:], weak_out[:, 1:])  # bit for bit, not approximately
        torch.testing.assert_close(out[:, 0], expected)
        assert not torch.equal(out[:, 0], weak_out[:, 0])


def test_affine_lifts_a_target_the_weak_model_never_predicts(pair, masks):
    weak, strong = pair
    broken = _broken(weak)
    data = run_dataset(weak)
    repaired = affine(broken, strong.model, masks, 0, 2, data.train, classes=WEAK_CLASSES)
    assert repaired.weak_scale.item() == 0.0  # a constant weak target logit carries nothing: weight 0
    report = replacement_report(predict_logits(broken, data.test), predict_logits(repaired, data.test),
                                data.test.labels, 0, WEAK_CLASSES)
    assert report["target_before"] == 0.0
    assert report["target_after"] > 0.6  # the strong module knows class 2
    assert abs(report["other_mean_change"]) < 0.05 and report["other_max_drop"] < 0.1


def test_affine_bias_bound_limits_false_positives(pair, masks):
    """With a zero bound no other-class sample of the fitting data may be out-ranked by the target."""
    weak, strong = pair
    train_split = run_dataset(weak).train
    strict = affine(weak.model, strong.model, masks, 0, 2, train_split, max_false_positives=0.0, shift=0)
    loose = affine(weak.model, strong.model, masks, 0, 2, train_split, max_false_positives=1.0, shift=0)
    assert strict.bias.item() <= loose.bias.item()
    logits = predict_logits(strict, train_split)
    others = train_split.labels != 0
    assert not (logits[others].argmax(1) == 0).any()
    with pytest.raises(ModaError, match="false-positive bound"):
        affine(weak.model, strong.model, masks, 0, 2, train_split, max_false_positives=1.5)
    # a training set larger than shifted_samples has only a seeded subset shifted: same fit for the same seed
    a, b = (affine(weak.model, strong.model, masks, 0, 2, train_split, shifted_samples=16, seed=1) for _ in range(2))
    assert (a.scale.item(), a.bias.item()) == (b.scale.item(), b.bias.item())
    with pytest.raises(ModaError, match="shifted samples at least 1"):
        affine(weak.model, strong.model, masks, 0, 2, train_split, shifted_samples=0)


def test_with_shifts_moves_images_by_whole_pixels():
    images = torch.zeros(1, 1, 4, 4, dtype=torch.uint8)
    images[0, 0, 1, 2] = 200
    split = Split(images, torch.tensor([1]), torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1))
    assert with_shifts(split, 0) is split
    shifted = with_shifts(split, 1)
    assert len(shifted) == 9 and shifted.labels.tolist() == [1] * 9
    where = {tuple(torch.nonzero(image[0]).flatten().tolist()) for image in shifted.images}
    assert where == {(1 + dy, 2 + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}


@pytest.mark.slow
def test_affine_model_exports_and_runs_without_moda_core(pair, masks, tmp_path):
    weak, strong = pair
    repaired = affine(weak.model, strong.model, masks, 0, 2, run_dataset(weak).train, classes=WEAK_CLASSES)
    path = export_module(repaired, tmp_path / "affine.pt2")
    x = torch.randn(5, *repaired.input_shape)
    with torch.no_grad():
        y = repaired(x)
    assert_runs_without_moda_core(path, x, y, tmp_path)


def test_weak_configs_of_both_settings():
    paper, scarce = weak_config("paper", 3, 12, checkpoint_every=4), weak_config("scarce", 3, 12, checkpoint_every=4)
    for config in (paper, scarce):
        assert config.model == "lenet5" and config.classes == [3, 5, 6, 7, 8, 9]
        assert method_of(config).name == "standard"
        assert config.train_fraction == 0.1 and config.augment is False and config.checkpoint_every == 4
    assert paper.class_fractions is None and scarce.class_fractions == {3: 0.02}
    assert strong_config(5).classes == [0, 1, 2, 3, 4] and method_of(strong_config(5)).name == "moda"
    with pytest.raises(ModaError, match="unknown repair setting 'easy'"):
        weak_config("easy", 3, 12)
    with pytest.raises(ModaError, match="mixed class must be one of"):
        weak_config("scarce", 7, 12)


@pytest.mark.slow
def test_scarce_weak_run_keeps_few_target_samples(tmp_path):
    config = weak_config("scarce", 1, 1)
    run = train(config, tmp_path, "weak")
    counts = torch.bincount(run_dataset(run).train.labels, minlength=6).tolist()
    assert counts == [8, 40, 40, 40, 40, 40]  # 2% of class 1's 400 training digits, 10% of the others'
    assert run.config["data"]["class_fractions"] == {"1": 0.02}  # JSON keys are strings; run_dataset reads them
    assert run.config["train"]["class_fractions"] == {"1": 0.02}
