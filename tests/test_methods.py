"""The method interface (moda_core/methods): each method's own hyperparameters, the named terms its steps report,
one spelling of standard training, a trainer that sums whatever terms a method reports, and ``methods.method_of``,
the one answer to "which method is this run"."""
from __future__ import annotations

import argparse
import math
from dataclasses import FrozenInstanceError, dataclass
from typing import ContextManager

import pytest
import torch
import torch.nn.functional as F
from helpers import DEMO
from torch import nn

from moda_core import methods, runs
from moda_core.commands import one_spelling
from moda_core.errors import ModaError
from moda_core.losses import modular_losses
from moda_core.methods import METHODS, method_of
from moda_core.methods.base import Method, Step, StepFunction, Weights, weight
from moda_core.models import build_model
from moda_core.train import TrainConfig, setting_differences, start_steps, train, train_step


def test_each_method_names_its_own_weights() -> None:
    moda, mwt, standard = (METHODS[n].weights(TrainConfig(method=n)) for n in ("moda", "mwt", "standard"))
    assert (moda.affinity, moda.dispersion, moda.compactness) == (1.0, 1.0, 0.3)
    assert (mwt.same_label, mwt.different_label) == (0.5, 1.5)
    assert standard.described() == []
    assert [label for label, _ in moda.described()] == ["α, affinity weight", "β, dispersion weight",
                                                        "γ, compactness weight"]
    assert mwt.described() == [("α, weight of same-label mask dissimilarity", 0.5),
                               ("β, weight of different-label mask similarity", 1.5)]
    # the slots are storage: MwT's α is not an affinity weight, and it has no γ
    assert METHODS["mwt"].Weights.slots() == {"alpha": "same_label", "beta": "different_label"}
    assert METHODS["mwt"].Weights.defaults() == {"alpha": 0.5, "beta": 1.5, "gamma": 0.0}
    with pytest.raises(FrozenInstanceError):
        moda.affinity = 2.0  # type: ignore[misc]
    assert METHODS["moda"].weights(TrainConfig(alpha=2.0)).affinity == 2.0


def test_a_weight_a_method_does_not_take_is_refused_by_name() -> None:
    with pytest.raises(ModaError, match=r"standard training takes no loss weights: alpha and gamma must be 0, "
                                        r"got 0.5, 0.1"):
        TrainConfig(method="standard", alpha=0.5, gamma=0.1).validate()
    with pytest.raises(ModaError, match="gamma must be 0, got 0.3"):
        TrainConfig(method="mwt", gamma=0.3).validate()
    with pytest.raises(ValueError, match="one of"):
        weight("delta", "δ", 1.0)


def test_standard_training_has_one_spelling() -> None:
    zero = TrainConfig(alpha=0, beta=0, gamma=0)
    assert zero.method == "standard" and method_of(zero) is METHODS["standard"]
    assert TrainConfig(method="moda", alpha=0, beta=0, gamma=0.3).method == "moda"
    # a run stored before: method moda with zero weights is standard, to method_of and to reuse
    stored = {"train": {"method": "moda", "alpha": 0.0, "beta": 0.0, "gamma": 0.0}}
    assert method_of(stored) is METHODS["standard"]
    assert "method" not in setting_differences(stored["train"], TrainConfig(method="standard"))

    def parsed(**given) -> argparse.Namespace:
        return argparse.Namespace(**{"standard": False, "method": "moda", "alpha": None, "beta": None,
                                     "gamma": None, **given})
    args = parsed(standard=True)
    assert one_spelling(args) == "--standard is the old spelling of --method standard" and args.method == "standard"
    args = parsed(alpha=0.0, beta=0.0, gamma=0.0)
    assert "is standard training" in one_spelling(args) and args.method == "standard"
    assert one_spelling(parsed()) is None and one_spelling(parsed(method="standard")) is None
    with pytest.raises(ModaError, match="cannot be combined with --method mwt"):
        one_spelling(parsed(standard=True, method="mwt"))


@pytest.mark.parametrize("name, track", [("moda", True), ("standard", True), ("standard", False), ("mwt", True)])
def test_a_step_reports_exactly_the_terms_its_method_names(name: str, track: bool) -> None:
    config = TrainConfig(model="lenet5", method=name, track_modular_terms=track)
    method = method_of(config)
    torch.manual_seed(0)
    model = method.prepare(build_model("lenet5", 1, 28, 10)).train()
    out = start_steps(method, config, model)(torch.randn(16, 1, 28, 28), torch.arange(16) % 4)
    assert list(out.terms) == list(method.terms(config)) and next(iter(out.terms)) == "ce"
    assert all(t.dim() == 0 and torch.isfinite(t) for t in out.terms.values())
    trained = [t for t, is_trained in method.terms(config).items() if is_trained]
    if name == "moda":
        w = method.weights(config)
        torch.testing.assert_close(out.loss, out.terms["ce"] + w.affinity * out.terms["affinity"]
                                   + w.dispersion * out.terms["dispersion"] + w.compactness * out.terms["compactness"])
    if name == "standard":
        assert trained == ["ce"] and out.loss is out.terms["ce"]
        assert all(not t.requires_grad for k, t in out.terms.items() if k != "ce")  # measured, detached
        assert len(out.terms) == (4 if track else 1)


def test_the_spatial_mean_as_a_sum_gives_the_same_losses_and_gradients() -> None:
    """The modular terms read a conv map's mean over its positions as a float32 sum divided afterwards (cheaper
    backward); the values and gradients are those of the plain mean, in float32 and from a bfloat16 map."""
    generator = torch.Generator().manual_seed(0)
    maps = [torch.rand(6, 4, 5, 5, generator=generator), torch.rand(6, 3, 2, 2, generator=generator),
            torch.rand(6, 7, generator=generator)]
    labels = torch.tensor([0, 0, 1, 1, 2, 0])
    for dtype in (torch.float32, torch.bfloat16):
        a = [m.to(dtype).clone().requires_grad_() for m in maps]
        b = [m.to(dtype).clone().requires_grad_() for m in maps]
        got = modular_losses(a, labels, nonnegative=True)
        vectors = [F.normalize(m.float().flatten(2).mean(2) if m.dim() > 2 else m.float(), dim=1) for m in b]
        compact = torch.stack([(m.float().flatten(2).mean(2) if m.dim() > 2 else m.float()).mean() for m in b]).mean()
        same = labels[:, None] == labels[None, :]
        upper = torch.triu(torch.ones(6, 6, dtype=torch.bool), 1)
        sims = [v @ v.T for v in vectors]
        affinity = 1 - torch.stack([s[same & upper].mean() for s in sims]).mean()
        dispersion = torch.stack([s[~same & upper].mean() for s in sims]).mean()
        for x, y in zip(got, (affinity, dispersion, compact), strict=True):
            torch.testing.assert_close(x, y)
        sum(got).backward()
        sum((affinity, dispersion, compact)).backward()
        for x, y in zip(a, b, strict=True):
            assert x is not y and x.grad is not None and x.grad.abs().sum() > 0
            loose = dict(rtol=5e-2, atol=1e-4) if dtype == torch.bfloat16 else {}
            torch.testing.assert_close(x.grad, y.grad, **loose)


@dataclass(frozen=True)
class _SparsityWeights(Weights):
    sparsity: float = weight("gamma", "γ, L1 weight", 0.01)


class _Sparsity(Method):
    """A method whose term no other method has: the trainer must sum and log it by its name."""

    name, label, Weights = "sparsity", "L1 sparsity", _SparsityWeights

    def terms(self, config) -> dict[str, bool]:
        return {"ce": True, "l1": True}

    def start(self, config, model: nn.Module, network: nn.Module, autocast: ContextManager) -> StepFunction:
        gamma = self.weights(config).sparsity

        def step(x: torch.Tensor, y: torch.Tensor) -> Step:
            logits, activations, _ = network(x)
            ce = F.cross_entropy(logits.float(), y)
            l1 = torch.stack([a.abs().mean() for a in activations]).mean()
            return Step(logits, ce + gamma * l1, {"ce": ce, "l1": l1})
        return step


@pytest.mark.slow
def test_the_trainer_sums_and_logs_whatever_terms_a_method_reports(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(methods.METHODS, "sparsity", _Sparsity())
    run = train(TrainConfig(model="lenet5", method="sparsity", epochs=2, train_fraction=0.1, device="cpu"),
                tmp_path, "l1")
    assert [row["epoch"] for row in run.history] == [1, 2]
    for row in run.history:
        assert {"ce", "l1"} <= set(row) and not {"affinity", "dispersion", "compactness"} & set(row)
        assert math.isfinite(row["l1"]) and row["l1"] > 0 and math.isfinite(row["ce"])
    # the same step, by hand: the logged epoch mean is the mean of the steps' terms
    config = TrainConfig(model="lenet5", method="sparsity")
    model = build_model("lenet5", 1, 28, 10).train()
    step = start_steps(METHODS["sparsity"], config, model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    out = train_step(step, optimizer, torch.randn(8, 1, 28, 28), torch.arange(8) % 10)
    torch.testing.assert_close(out.loss, out.terms["ce"] + 0.01 * out.terms["l1"])


def test_a_stored_run_says_its_weights_and_terms_by_its_method_s_names() -> None:
    from moda_core.methods import settings_of

    def read(train: dict) -> tuple[str, str, dict[str, bool]]:
        config = {"train": train}
        method, settings = method_of(config), settings_of(config)
        return method.label, method.weights(settings).short(), method.terms(settings)

    assert read({"method": "mwt"}) == ("MwT", "same-label 0.5, different-label 1.5",
                                       {"ce": True, "affinity": True, "dispersion": True})
    assert read({"method": "moda", "alpha": 2.0}) == (
        "MODA", "affinity 2, dispersion 1, compactness 0.3",
        {"ce": True, "affinity": True, "dispersion": True, "compactness": True})
    label, weights, terms = read({"method": "moda", "alpha": 0.0, "beta": 0.0, "gamma": 0.0})  # stored before
    assert (label, weights) == ("standard training", "") and [t for t, trained in terms.items() if trained] == ["ce"]
    assert read({"method": "standard", "track_modular_terms": False})[2] == {"ce": True}


# ----- one vocabulary for methods ------------------------------------------------------------------

def test_method_of_a_train_config():
    assert method_of(TrainConfig()).name == "moda"
    assert method_of(TrainConfig(method="mwt")).name == "mwt"
    assert method_of(TrainConfig(method="standard")).name == "standard"
    assert method_of(TrainConfig(alpha=0, beta=0, gamma=0)).name == "standard"  # MODA without its terms
    assert method_of(TrainConfig(alpha=0, beta=0, gamma=0.3)).name == "moda"


def test_method_of_a_stored_config():
    assert method_of({"train": {"method": "mwt", "alpha": 0.5, "beta": 1.5, "gamma": 0.0}}).name == "mwt"
    assert method_of({"train": {"method": "moda", "alpha": 1.0, "beta": 1.0, "gamma": 0.3}}).name == "moda"
    assert method_of({"train": {"method": "moda", "alpha": 0.0, "beta": 0.0, "gamma": 0.0}}).name == "standard"
    # runs written before train.method existed: MwT through arch.mwt, MODA (or standard) otherwise
    assert method_of({"arch": {"name": "vgg11", "mwt": True}, "train": {"alpha": 0.5, "beta": 1.5}}).name == "mwt"
    assert method_of({"arch": {"name": "vgg11"}, "train": {"alpha": 1.0, "beta": 1.0, "gamma": 0.3}}).name == "moda"
    assert method_of({"arch": {"name": "vgg11"}, "train": {"alpha": 0, "beta": 0, "gamma": 0}}).name == "standard"
    with pytest.raises(ModaError, match="unknown training method 'magic'"):
        method_of({"train": {"method": "magic"}})


def test_a_method_carries_its_name_and_label():
    assert {name: m.label for name, m in METHODS.items()} == {
        "standard": "standard training", "moda": "MODA", "mwt": "MwT"}
    assert all(m.name == name for name, m in METHODS.items())


def test_listed_runs_carry_the_resolved_method_and_nothing_called_kind():
    summaries = {s.name: s for s in runs.list_runs(DEMO)}
    for name, summary in summaries.items():
        assert not hasattr(summary, "kind") and "kind" not in summary.row()
        assert summary.method == method_of(runs.read_config(DEMO / name)).name, name
    assert summaries["vgg11-standard"].method == "standard"  # stored as MODA with α=β=γ=0
    assert summaries["vgg11-mwt"].method == "mwt" and summaries["vgg11-moda"].method == "moda"
