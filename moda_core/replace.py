"""Module replacement (model repair, DESIGN.md §1.6): a strong model's module for one class repairs a
weak model that is bad at that class.

Both strategies keep the weak model and the strong module frozen (``requires_grad`` off, always in
eval mode) and wrap them in one ``nn.Module`` with an ``input_shape``, so the repaired model is
evaluated, saved and exported (``moda_core.export.export_module``) like a composed module. Its
outputs are in the weak model's class order:

- ``calibrate`` (MODA): the weak model's logits without the target class, followed by the module's
  single logit, feed a trainable ``Linear(K, K)`` calibration layer trained with cross-entropy on
  the weak model's training data. It starts as the permutation that puts the module's logit in the
  target's place, so before training it is "the weak logits with the target logit swapped". Output:
  logits.
- ``normalize`` (CNNSplitter-style baseline, no training): the weak model's softmax probability of
  the target class is replaced by the module's output min-max normalised over the weak training
  data and clipped to [0, 1]. Output: these per-class scores (probabilities, not summing to 1).

Class indices are positions in each model's own logits; ``class_index`` maps an original class id
(``config["data"]["classes"]``) to that position.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from moda_core import runs
from moda_core.compose import compose_module, parameter_count
from moda_core.data import Split, check_classes, dataset_info
from moda_core.decompose import DEFAULT_TAU, decompose
from moda_core.errors import ModaError
from moda_core.metrics import accuracy, per_class_accuracy, predict_logits

STRATEGIES = ("calibrate", "normalize")


# ----------------------------------------------------------------------------------------------
# checks and class ids

def run_classes(run: runs.Run) -> list[int]:
    """Original class ids of a run's logits, in logit order."""
    classes = run.config.get("data", {}).get("classes")
    return list(classes) if classes is not None else list(range(run.model.arch["num_classes"]))


def class_index(run: runs.Run, class_id: int) -> int:
    """Position of original class ``class_id`` in the run's logits."""
    classes = run_classes(run)
    if class_id not in classes:
        raise ModaError(f"run {run.spec} did not learn class {class_id}: its classes are {classes}")
    return classes.index(class_id)


def check_replacement(weak: nn.Module, strong: nn.Module, weak_class: int, strong_class: int) -> None:
    """Same input shape, and both class indices inside their model's logits."""
    weak_shape, strong_shape = tuple(weak.input_shape), tuple(strong.input_shape)
    if weak_shape != strong_shape:
        raise ModaError(f"the weak model takes inputs of shape {weak_shape} but the strong model takes "
                        f"{strong_shape}: a module can only replace a class of a model with the same input")
    check_classes([weak_class], _num_classes(weak), "the weak model (--weak-class)")
    check_classes([strong_class], _num_classes(strong), "the strong model (--strong-class)")


def _num_classes(model: nn.Module) -> int:
    arch = getattr(model, "arch", None)
    if arch:
        return arch["num_classes"]
    with torch.no_grad():  # a model from outside the zoo: count its outputs
        return model.eval()(torch.zeros(1, *model.input_shape, device=_device(model))).shape[1]


def _frozen(module: nn.Module) -> nn.Module:
    for param in module.parameters():
        param.requires_grad_(False)
    return module.eval()


# ----------------------------------------------------------------------------------------------
# repaired models

class RepairedModel(nn.Module):
    """A frozen weak model and a frozen single-class module of a strong model; ``target`` is the
    position of the replaced class in the weak model's logits, ``classes`` their original ids."""

    def __init__(self, weak: nn.Module, module: nn.Module, target: int, classes: Sequence[int] | None = None) -> None:
        super().__init__()
        self.weak = _frozen(copy.deepcopy(weak))  # a copy: repairing never touches the caller's model
        self.module = _frozen(module)
        self.target = target
        self.num_classes = _num_classes(weak)
        self.classes = list(classes) if classes is not None else list(range(self.num_classes))
        self.input_shape = tuple(weak.input_shape)
        self.register_buffer("others", torch.tensor([k for k in range(self.num_classes) if k != target],
                                                    dtype=torch.long, device=_device(weak)))

    def train(self, mode: bool = True) -> "RepairedModel":
        super().train(mode)
        self.weak.eval()  # frozen parts never update batch-norm statistics
        self.module.eval()
        return self


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


class CalibratedModel(RepairedModel):
    """Logits ``calibration([weak logits without the target, module logit])`` in the weak class order."""

    def __init__(self, weak: nn.Module, module: nn.Module, target: int, classes: Sequence[int] | None = None) -> None:
        super().__init__(weak, module, target, classes)
        k = self.num_classes
        self.calibration = nn.Linear(k, k, device=_device(weak))
        # start as the swap: output j reads weak logit j (j ≠ target), the target output reads the module
        start = torch.zeros(k, k)
        start[self.others.cpu(), torch.arange(k - 1)] = 1.0
        start[target, k - 1] = 1.0
        with torch.no_grad():
            self.calibration.weight.copy_(start)
            self.calibration.bias.zero_()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The calibration layer's input: K−1 weak logits (target left out, order kept), module logit."""
        return torch.cat([self.weak(x).index_select(1, self.others), self.module(x)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.calibration(self.features(x))


class NormalizedModel(RepairedModel):
    """Scores: the weak softmax, with the target's probability replaced by the module output
    min-max normalised to [``low``, ``high``] (measured on the training data) and clipped to [0, 1]."""

    def __init__(self, weak: nn.Module, module: nn.Module, target: int, low: float, high: float,
                 classes: Sequence[int] | None = None) -> None:
        super().__init__(weak, module, target, classes)
        if not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise ModaError(f"cannot normalise the module's output: it spans [{low}, {high}] on the training data "
                            "(constant or not finite); the module does not tell samples apart")
        device = _device(weak)
        self.register_buffer("low", torch.tensor(low, device=device))
        self.register_buffer("high", torch.tensor(high, device=device))
        self.register_buffer("is_target", torch.arange(self.num_classes, device=device) == target)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = F.softmax(self.weak(x), dim=1)
        score = ((self.module(x) - self.low) / (self.high - self.low)).clamp(0.0, 1.0)
        return torch.where(self.is_target, score, probabilities)


# ----------------------------------------------------------------------------------------------
# strategies

def strong_module(strong: nn.Module, masks: Mapping[str, torch.Tensor], strong_class: int,
                  device: torch.device) -> nn.Module:
    """The strong model's single-class module (one logit), on ``device``."""
    return compose_module(strong, masks, [strong_class]).to(device)


def calibrate(weak: nn.Module, strong: nn.Module, masks: Mapping[str, torch.Tensor], weak_class: int,
              strong_class: int, train: Split, epochs: int = 5, lr: float = 0.01, batch_size: int = 32,
              seed: int = 0, classes: Sequence[int] | None = None) -> CalibratedModel:
    """MODA's repair: train only a Linear(K, K) calibration layer (Adam, cross-entropy) on ``train``.

    The frozen parts see every training sample in eval mode without augmentation, so their outputs
    are computed once and the layer trains on those features.
    """
    check_replacement(weak, strong, weak_class, strong_class)
    if epochs < 1:
        raise ModaError(f"calibration needs at least one epoch, got {epochs}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ModaError(f"calibration learning rate must be a positive number, got {lr}")
    device = _device(weak)
    model = CalibratedModel(weak, strong_module(strong, masks, strong_class, device), weak_class, classes)
    features = _outputs(model.features, train)
    labels = train.labels.to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    optimizer = torch.optim.Adam(model.calibration.parameters(), lr=lr)
    for _ in range(epochs):
        order = torch.randperm(len(labels), device=device, generator=generator)
        for start in range(0, len(labels), batch_size):
            index = order[start:start + batch_size]
            loss = F.cross_entropy(model.calibration(features[index]), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


def normalize(weak: nn.Module, strong: nn.Module, masks: Mapping[str, torch.Tensor], weak_class: int,
              strong_class: int, train: Split, classes: Sequence[int] | None = None) -> NormalizedModel:
    """The CNNSplitter-style baseline: no training; the module output's range over all of ``train``
    (at inference the class is unknown, so every class's samples count) becomes [0, 1]."""
    check_replacement(weak, strong, weak_class, strong_class)
    module = strong_module(strong, masks, strong_class, _device(weak))
    outputs = _outputs(module, train)
    return NormalizedModel(weak, module, weak_class, outputs.min().item(), outputs.max().item(), classes)


@torch.no_grad()
def _outputs(function: Callable[[torch.Tensor], torch.Tensor], split: Split, batch_size: int = 1000) -> torch.Tensor:
    return torch.cat([function(x) for x, _ in split.batches(batch_size)])


# ----------------------------------------------------------------------------------------------
# report and the run-level entry point

def replacement_report(before_logits: torch.Tensor, after_logits: torch.Tensor, labels: torch.Tensor,
                       target: int, classes: Sequence[int]) -> dict[str, Any]:
    """Per-class accuracy (0–1) before and after, keyed by original class id (``classes``, in logit
    order); ``target_gain`` = after − before on the target; ``other_max_change`` = the largest
    |after − before| over the other classes and ``other_max_drop`` the largest before − after there
    (both 0 when there are none; a drop is never negative)."""
    before = per_class_accuracy(before_logits, labels, len(classes))
    after = per_class_accuracy(after_logits, labels, len(classes))
    changes = [a - b for k, (a, b) in enumerate(zip(after, before)) if k != target]
    return {"target_class": classes[target],
            "before": {str(c): v for c, v in zip(classes, before)},
            "after": {str(c): v for c, v in zip(classes, after)},
            "target_gain": after[target] - before[target],
            "other_max_change": max((abs(c) for c in changes), default=0.0),
            "other_max_drop": max([0.0, *(-c for c in changes)]),
            "accuracy_before": accuracy(before_logits, labels), "accuracy_after": accuracy(after_logits, labels)}


@dataclass
class Repair:
    """A repaired model and its ``replacement_report`` plus what produced it (runs, classes, strategy)."""

    model: RepairedModel
    report: dict[str, Any]


def repair(weak: runs.Run, strong: runs.Run, weak_class: int, strong_class: int, strategy: str = "calibrate",
           epochs: int = 5, tau: float = DEFAULT_TAU, lr: float = 0.01, seed: int = 0,
           progress: Callable[[int, int], None] | None = None, save_decomposition: bool = True) -> Repair:
    """Repair run ``weak``'s class ``weak_class`` with ``strong``'s module for ``strong_class``, then
    measure both on the weak run's test split. The strong run's decomposition at ``tau`` is read from
    its folder, or computed there first (``progress`` sees that; ``save_decomposition=False`` writes
    nothing into the strong run's folder)."""
    if strategy not in STRATEGIES:
        raise ModaError(f"unknown replacement strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    check_replacement(weak.model, strong.model, weak_class, strong_class)
    data = runs.run_dataset(weak)
    strong_info = dataset_info(runs.dataset_name(strong))
    if (strong_info.mean, strong_info.std) != (data.info.mean, data.info.std):
        raise ModaError(f"the strong run normalises its inputs for {strong_info.name!r} and the weak run for "
                        f"{data.info.name!r} (different mean/std): the module would see inputs it was not trained on")
    started = time.perf_counter()
    masks = decompose(strong, tau, progress=progress, save=save_decomposition).masks
    classes = run_classes(weak)
    if strategy == "calibrate":
        model = calibrate(weak.model, strong.model, masks, weak_class, strong_class, data.train, epochs=epochs,
                          lr=lr, seed=seed, classes=classes)
    else:
        model = normalize(weak.model, strong.model, masks, weak_class, strong_class, data.train, classes=classes)
    report = replacement_report(predict_logits(weak.model, data.test), predict_logits(model, data.test),
                                data.test.labels, weak_class, classes)
    module_params = parameter_count(model.module)
    report.update(weak=weak.spec, strong=strong.spec, strategy=strategy, weak_class=weak_class,
                  strong_class=strong_class, strong_class_id=run_classes(strong)[strong_class], tau=tau,
                  epochs=epochs if strategy == "calibrate" else 0, module_params=module_params,
                  module_params_fraction=module_params / parameter_count(strong.model),
                  seconds=time.perf_counter() - started)
    return Repair(model, report)

