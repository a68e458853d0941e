"""The worked examples of docs/extending.md run, and what they build passes the engine's own checks.

Each example starts at a ``<!-- example: NAME -->`` marker and holds every ```python block up to the
next marker; its blocks run in order in one namespace. The registries the examples add to (models,
methods, op rules) are restored afterwards, so no other test sees the examples' entries.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import brute_force_overlap, masked_logits, random_masks, randomised

from moda_core import methods, models, oprules
from moda_core.compose import compose_module
from moda_core.errors import ModaError
from moda_core.methods.base import Method, Step
from moda_core.overlap import overlap_counts
from moda_core.train import TrainConfig

EXTENDING = Path(__file__).resolve().parent.parent / "docs" / "extending.md"
MARKER = re.compile(r"^<!-- example: ([\w-]+) -->$", re.MULTILINE)
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def examples() -> dict[str, list[tuple[int, str]]]:
    """Example name → its python blocks as (line where the code starts, code)."""
    text = EXTENDING.read_text()
    marks = list(MARKER.finditer(text))
    found: dict[str, list[tuple[int, str]]] = {}
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        end = following.start() if following else len(text)
        found[mark.group(1)] = [(text.count("\n", 0, block.start(1)), block.group(1))
                                for block in BLOCK.finditer(text, mark.end(), end)]
    return found


def run_example(name: str, blocks: int | None = None) -> dict:
    """Run example ``name``'s blocks (the first ``blocks`` of them; None: all) in one namespace; tracebacks
    point at docs/extending.md's lines."""
    namespace: dict = {"__name__": f"docs_example_{name}"}
    for line, code in examples()[name][:blocks]:
        exec(compile("\n" * line + code, str(EXTENDING), "exec", dont_inherit=True), namespace)  # as a script runs it
    return namespace


@pytest.fixture(autouse=True)
def registries() -> Iterator[None]:
    """Put the model, method and rule registries back as they were after each example."""
    saved = [(registry, dict(registry)) for registry in (models.MODELS, methods.METHODS, oprules.MODULE_RULES)]
    yield
    for registry, contents in saved:
        registry.clear()
        registry.update(contents)


def test_every_recipe_has_a_worked_example() -> None:
    found = examples()
    assert set(found) == {"model", "method", "rule"}
    assert all(found.values()), "an example without a python block"


def assert_composes_exactly(name: str, channels: int, size: int, overlap: bool = False) -> None:
    """The composed module equals the masked full model; with ``overlap``, the analytic overlap also equals
    the brute-force count (worth its time for a new rule: the zoo's rules are checked in test_compose.py)."""
    model = randomised(name, channels, size)
    for trial, classes in enumerate([[0], [1, 4], [0, 2, 3, 5]]):
        masks = random_masks(model, density=[0.5, 0.7, 0.9][trial], seed=trial)
        x = torch.randn(4, channels, size, size)
        expected = masked_logits(model, masks, classes, x)
        with torch.no_grad():
            got = compose_module(model, masks, classes)(x)
        assert (expected.std(0) > 0).any(), "degenerate check: the output does not depend on the input"
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    if not overlap:
        return
    model = randomised(name, channels, size, dtype=torch.float64)
    masks = random_masks(model, 0.4, seed=3)
    assert torch.equal(overlap_counts(model, masks), brute_force_overlap(model, masks))


def test_add_a_model() -> None:
    run_example("model")
    assert "tinycnn" in models.MODELS
    assert_composes_exactly("tinycnn", 3, 32)  # the example itself checked 1×28×28 inputs


def test_a_new_training_method_computes_its_losses() -> None:
    """The method's first block (its class and registration): its loss terms on one batch, no training."""
    run_example("method", blocks=1)
    method = methods.METHODS["sparse"]
    assert isinstance(method, Method) and method.name == "sparse"
    config = TrainConfig(model="lenet5", method="sparse")
    config.validate()
    assert methods.method_of(config) is method and (config.alpha, config.beta, config.gamma) == (0.0, 0.0, 0.3)
    with pytest.raises(ModaError, match=r"sparse training takes gamma \(γ, compactness weight\): alpha must be 0"):
        TrainConfig(model="lenet5", method="sparse", alpha=1.0).validate()
    assert method.weights(config).described() == [("γ, compactness weight", 0.3)]
    model = method.prepare(models.build_model("lenet5", 1, 28, 10)).train()
    step = method.start(config, model, method.network(model, config), torch.autocast("cpu", enabled=False))
    out = step(torch.randn(8, 1, 28, 28), torch.arange(8) % 4)
    assert isinstance(out, Step) and out.loss.requires_grad and list(out.terms) == list(method.terms(config))
    torch.testing.assert_close(out.loss, out.terms["ce"] + 0.3 * out.terms["compactness"])


@pytest.mark.slow
def test_add_a_training_method() -> None:
    """The whole example, including its step with the trainer's ``train_step``."""
    namespace = run_example("method")
    assert isinstance(namespace["out"], Step) and torch.isfinite(namespace["out"].loss)


def test_add_an_op_rule() -> None:
    namespace = run_example("rule")
    affine = namespace["ChannelAffine"]
    assert isinstance(oprules.MODULE_RULES[affine], namespace["ChannelAffineRule"]) and affine in oprules.leaf_modules()
    assert_composes_exactly("affinecnn", 3, 32, overlap=True)
