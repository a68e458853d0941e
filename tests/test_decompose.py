"""Decomposition (rates, masks, storage), module metrics and the module CLI on a trained run."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import moda_core.decompose as decompose_module
from moda_core.compose import compose_module, parameter_count
from moda_core.data import Split
from moda_core.decompose import activation_rates, decompose, masks_file, masks_from_rates
from moda_core.errors import ModaError
from moda_core.evaluate import predict_logits
from moda_core.metrics import compose_report, count_flops, subtask_sets, subtask_sweep
from moda_core.models import build_model
from moda_core.runs import load_run, run_dataset
from moda_core.summary import mean_off_diagonal, module_summary

ROOT = Path(__file__).resolve().parent.parent


def tiny_split(n=12, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % classes
    return Split(images, labels, torch.tensor(0.5).view(1, 1, 1, 1), torch.tensor(0.5).view(1, 1, 1, 1))


def lenet_activations_by_hand(model, x):
    """LeNet-5's ReLU outputs computed with plain functional ops from its weights (no hooks, no recorder)."""
    f, c = model.features, model.classifier
    a0 = F.relu(F.conv2d(x, f[0].conv.weight, f[0].conv.bias, padding=f[0].conv.padding))
    a1 = F.relu(F.conv2d(F.max_pool2d(a0, 2), f[2].conv.weight, f[2].conv.bias))
    a2 = F.relu(F.linear(F.max_pool2d(a1, 2).flatten(1), c[0].linear.weight, c[0].linear.bias))
    a3 = F.relu(F.linear(a2, c[1].linear.weight, c[1].linear.bias))
    return {"features.0.relu": a0, "features.2.relu": a1, "classifier.0.relu": a2, "classifier.1.relu": a3}


def test_rates_equal_per_sample_count():
    torch.manual_seed(0)
    model = build_model("lenet5", num_classes=3).eval()
    with torch.no_grad():
        model.classifier[0].linear.bias.sub_(0.05)  # some hidden units fire on some samples only
    split = tiny_split()
    rates, counts = activation_rates(model, split, 3, batch_size=5)
    assert counts == [4, 4, 4]
    expected = {}
    with torch.no_grad():
        for i in range(len(split)):
            x, y = split.batch(torch.tensor([i]))
            for point, act in lenet_activations_by_hand(model, x).items():
                fired = (act.abs().mean(dim=(2, 3)) if act.dim() == 4 else act)[0] != 0
                expected.setdefault(point, torch.zeros(3, fired.numel()))[y.item()] += fired.float() / 4
    assert set(rates) == set(expected)
    for point in expected:
        torch.testing.assert_close(rates[point], expected[point])
    assert any(((r > 0) & (r < 1)).any() for r in rates.values()), "degenerate: every unit always or never fires"


def test_empty_class_is_an_error():
    split = tiny_split(n=6, classes=2)
    with pytest.raises(ModaError, match="no training samples of class\\(es\\) \\[2\\]"):
        activation_rates(build_model("lenet5", num_classes=3), split, 3)


def test_masks_threshold_and_floor_by_hand():
    rates = {"p": torch.tensor([[0.95, 0.90, 0.10, 0.0],
                                [0.20, 0.50, 0.40, 0.1],
                                [1.00, 0.91, 0.92, 0.0]])}
    masks = masks_from_rates(rates, tau=0.9)["p"]
    assert masks[0].tolist() == [True, True, False, False]  # rate >= tau, tau itself included
    assert masks[2].tolist() == [True, True, True, False]
    # class 1 keeps nothing: floor max(1, floor(0.005*4)) = 1, so it gets its top-k with k = 3
    assert masks[1].tolist() == [True, True, True, False]  # rates 0.5, 0.4, 0.2 are its top 3
    assert masks_from_rates(rates, tau=0.0)["p"].all()
    wide = {"q": torch.zeros(2, 1000)}
    wide["q"][0, :7] = 1.0
    wide["q"][1, 10:12] = torch.tensor([0.5, 0.4])
    lifted = masks_from_rates(wide, 0.9)["q"]
    assert lifted[0].sum() == 7  # floor = 5 units at 1000 units; class 0 keeps 7 >= 5
    assert lifted[1].sum() == 7 and lifted[1, 10] and lifted[1, 11]


@pytest.mark.parametrize("tau", [-0.1, 1.01, float("nan")])
def test_tau_out_of_range(tau):
    with pytest.raises(ModaError, match="tau must be in \\[0, 1\\]"):
        masks_from_rates({"p": torch.zeros(1, 2)}, tau)


def test_decomposition_is_stored_and_reused(lenet_moda_run, monkeypatch):
    run = load_run(lenet_moda_run.path)
    first = decompose(run, 0.9)
    assert (run.path / "rates.safetensors").exists() and (run.path / masks_file(0.9)).exists()
    assert masks_file(0.9) == "masks-tau0.90.safetensors"
    assert set(first.rates) == set(first.masks) and first.rates["features.0.relu"].shape == (10, 6)
    assert first.masks["classifier.0.relu"].dtype == torch.bool

    def fail(*args, **kwargs):
        raise AssertionError("recomputed although a current decomposition was stored")

    monkeypatch.setattr(decompose_module, "activation_rates", fail)
    again = decompose(run, 0.9)
    assert all(torch.equal(again.masks[p], first.masks[p]) for p in first.masks)
    other_tau = decompose(run, 0.5)  # masks for a new tau come from the stored rates
    assert (run.path / masks_file(0.5)).exists()
    assert all(other_tau.masks[p].sum() >= first.masks[p].sum() for p in first.masks)


def test_save_false_writes_nothing(lenet_moda_run):
    run = load_run(lenet_moda_run.path)
    decompose(run, 0.9)  # rates stored
    before = sorted(p.name for p in run.path.iterdir())
    fresh_tau = decompose(run, 0.37, save=False)  # masks from the stored rates, not stored themselves
    assert sorted(p.name for p in run.path.iterdir()) == before
    assert not (run.path / masks_file(0.37)).exists()
    assert all(fresh_tau.masks[p].sum() >= 1 for p in fresh_tau.masks)


def test_checkpoint_decomposition_lives_beside_the_checkpoint(lenet_moda_run):
    early = load_run(f"{lenet_moda_run.path}@1")
    decomposition = decompose(early, 0.9)
    folder = lenet_moda_run.path / "checkpoints" / "epoch-0001"
    assert (folder / "rates.safetensors").exists()
    final = decompose(load_run(lenet_moda_run.path), 0.9)
    assert any(not torch.equal(decomposition.rates[p], final.rates[p]) for p in final.rates)


def test_module_metrics_on_a_trained_run(lenet_moda_run):
    run = load_run(lenet_moda_run.path)
    decomposition = decompose(run, 0.9)
    summary = module_summary(run.model, decomposition.masks)
    sizes = summary.sizes
    total = parameter_count(run.model)
    for c, size in enumerate(sizes):
        assert size == parameter_count(compose_module(run.model, decomposition.masks, [c])) / total
    overlap = summary.overlap
    assert torch.allclose(overlap, overlap.T) and (overlap <= overlap.diagonal()[:, None] + 1e-12).all()
    assert 0 < mean_off_diagonal(overlap) < max(sizes)

    test = run_dataset(run).test
    report = compose_report(run.model, decomposition.masks, [7, 1], test)
    assert report["classes"] == [1, 7] and report["params"] < report["full_params"]
    assert report["flops"] <= report["full_flops"] == count_flops(run.model, (1, 28, 28))
    logits = predict_logits(run.model, test)
    pick = (test.labels == 1) | (test.labels == 7)
    manual = ((logits[pick][:, [1, 7]].argmax(1) == (test.labels[pick] == 7).long()).float().mean().item())
    assert report["full_accuracy"] == pytest.approx(manual)
    assert report["accuracy"] > 0.9


def test_subtask_sets():
    assert len(subtask_sets(10, [2], 50)) == 45
    sampled = subtask_sets(10, [3], 20, seed=1)
    assert len(sampled) == 20 and len({tuple(s) for s in sampled}) == 20
    assert sampled == subtask_sets(10, [3], 20, seed=1)
    assert subtask_sets(4, [4], 5) == [[0, 1, 2, 3]]


def test_sweep_with_reference(lenet_moda_run):
    run = load_run(lenet_moda_run.path)
    decomposition = decompose(run, 0.9)
    test = run_dataset(run).test
    torch.manual_seed(5)
    reference = build_model("lenet5").eval()  # untrained: a reference that disagrees with the run
    rows = subtask_sweep(run.model, decomposition.masks, test, [[0, 1], [2, 3, 4]], reference=reference)
    assert [r["size"] for r in rows] == [2, 3]
    with torch.no_grad():
        reference_logits = reference(test.batch(slice(None))[0])
    for row in rows:
        classes = torch.tensor(row["classes"])
        pick = torch.isin(test.labels, classes)
        labels = torch.searchsorted(classes, test.labels[pick])
        by_hand = (reference_logits[pick][:, classes].argmax(1) == labels).float().mean().item()
        assert row["reference_accuracy"] == pytest.approx(by_hand)
    assert any(r["reference_accuracy"] != r["full_accuracy"] for r in rows)


def cli(*args):
    result = subprocess.run([sys.executable, "-m", "moda_core", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    return result


@pytest.mark.slow
def test_module_cli(lenet_moda_run, tmp_path):
    run = str(lenet_moda_run.path)
    out = cli("decompose", run, "--tau", "0.9", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["points"][0] == "features.0.relu" and len(result["module_size"]) == 10
    assert 0 < result["mean_module_size"] <= 1 and 0 < result["mean_overlap"] <= 1

    out = cli("compose", run, "--classes", "1", "7", "--out", str(tmp_path / "m.pt2"), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["classes"] == [1, 7] and result["params"] < result["full_params"]
    assert result["flops"] <= result["full_flops"] and 0 < result["accuracy"] <= 1
    assert (tmp_path / "m.pt2").stat().st_size > 0

    out = cli("subtasks", run, "--sizes", "2", "9", "--samples", "3", "--csv", str(tmp_path / "s.csv"), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert [r["size"] for r in result["rows"]] == [2, 2, 2, 9, 9, 9]
    assert (tmp_path / "s.csv").read_text().startswith("classes,")

    for args, message in [(("compose", run, "--classes", "3", "3"), "duplicated"),
                          (("compose", run, "--classes", "10"), "out of range"),
                          (("decompose", run, "--tau", "2"), "tau must be in"),
                          (("decompose", str(tmp_path / "nope")), "no run folder"),
                          (("subtasks", run, "--sizes", "11"), "out of range")]:
        out = cli(*args)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)
