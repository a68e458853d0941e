"""Module replacement, or model repair (docs/design.md, Module replacement): a strong model's module for
one class repairs a weak model that is bad at that class.

All three strategies keep the weak model and the strong module frozen (``requires_grad`` off, always in
eval mode) and wrap them in one ``nn.Module`` with an ``input_shape`` (``moda_core.repaired``), so the repaired
model is evaluated, saved and exported (``moda_core.export.export_module``) like a composed module. Its
outputs are in the weak model's class order:

- ``calibrate`` (MODA): the weak model's logits without the target class, followed by the module's
  single logit, feed a trainable ``Linear(K, K)`` calibration layer trained with cross-entropy on
  the weak model's training data. It starts as the permutation that puts the module's logit in the
  target's place, so before training it is "the weak logits with the target logit swapped". Output:
  logits.
- ``normalize`` (CNNSplitter-style baseline, no training): the weak model's softmax probability of
  the target class is replaced by the module's output min-max normalised over the weak training
  data and clipped to [0, 1]. Output: these per-class scores (probabilities, not summing to 1).
- ``affine`` (MODA Studio's own, not in the paper: target-only calibration): every weak logit is kept
  bit for bit except the target's, which becomes ``a·s + c·w + b`` of the module's logit ``s`` and the
  weak model's own target logit ``w``; the three scalars are fitted with cross-entropy on the weak
  training data (and its 1-pixel shifts), then the bias is capped so that the new logit out-ranks few
  other-class samples.
  Another class can only lose a sample where the target's new logit out-ranks its own. Output: logits.

``repair`` runs one strategy on two runs and measures it with ``replacement_report``, the paper's measure
(target accuracy before/after, mean accuracy of the other classes before/after) plus the largest single-class
drop and overall accuracy; it and ``weak_config``/``strong_config``, which build the runs of the experiment (the
paper's setting and the scarce-target one) for ``bench/repair.py`` and the demo bundle, live in
``moda_core.replace_experiment``.

Class indices are positions in each model's own logits; ``class_index`` maps an original class id
(``config["data"]["classes"]``) to that position.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from moda_core import runs
from moda_core.compose import compose_module, parameter_count
from moda_core.data import Split, dataset_info
from moda_core.decompose import DEFAULT_TAU, decompose
from moda_core.errors import ModaError
from moda_core.evaluate import predict_logits
from moda_core.model_attrs import arch_of
from moda_core.repaired import (
    AffineModel,
    CalibratedModel,
    NormalizedModel,
    RepairedModel,
    check_replacement,
    device_of,
)
from moda_core.replace_experiment import (
    SCARCE_FRACTION,
    SETTINGS,
    STRONG_CLASSES,
    WEAK_FRACTION,
    WEAK_REST,
    replacement_report,
    strong_config,
    weak_config,
)

STRATEGIES = ("calibrate", "normalize", "affine")

# a progress report by stage: (what is being done, in words; the share of the work done so far, 0–1)
Stage = Callable[[str, float], None]


# ----------------------------------------------------------------------------------------------
# class ids

def run_classes(run: runs.Run) -> list[int]:
    """Original class ids of a run's logits, in logit order."""
    classes = run.config.get("data", {}).get("classes")
    return list(classes) if classes is not None else list(range(arch_of(run.model)["num_classes"]))


def class_index(run: runs.Run, class_id: int) -> int:
    """Position of original class ``class_id`` in the run's logits."""
    classes = run_classes(run)
    if class_id not in classes:
        raise ModaError(f"run {run.spec} did not learn class {class_id}: its classes are {classes}")
    return classes.index(class_id)


# ----------------------------------------------------------------------------------------------
# strategies

def strong_module(strong: nn.Module, masks: Mapping[str, torch.Tensor], strong_class: int,
                  device: torch.device) -> nn.Module:
    """The strong model's single-class module (one logit), on ``device``."""
    return compose_module(strong, masks, [strong_class]).to(device)


def calibrate(weak: nn.Module, strong: nn.Module, masks: Mapping[str, torch.Tensor], weak_class: int,
              strong_class: int, train: Split, epochs: int = 5, lr: float = 0.01, batch_size: int = 32,
              seed: int = 0, classes: Sequence[int] | None = None, stage: Stage | None = None) -> CalibratedModel:
    """MODA's repair: train only a Linear(K, K) calibration layer (Adam, cross-entropy) on ``train``.

    The frozen parts see every training sample in eval mode without augmentation, so their outputs
    are computed once and the layer trains on those features. ``stage`` hears of each step (computing
    those outputs, then each epoch as it starts).
    """
    check_replacement(weak, strong, weak_class, strong_class)
    if epochs < 1:
        raise ModaError(f"calibration needs at least one epoch, got {epochs}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ModaError(f"calibration learning rate must be a positive number, got {lr}")
    device = device_of(weak)
    model = CalibratedModel(weak, strong_module(strong, masks, strong_class, device), weak_class, classes)
    if stage:
        stage(f"computing the frozen models' outputs on {len(train):,} training images", 0.0)
    features = _outputs(model.features, train)
    labels = train.labels.to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    optimizer = torch.optim.Adam(model.calibration.parameters(), lr=lr)
    for epoch in range(1, epochs + 1):
        if stage:
            stage(f"training the remix layer, epoch {epoch}/{epochs}", 0.3 + 0.7 * (epoch - 1) / epochs)
        order = torch.randperm(len(labels), device=device, generator=generator)
        for start in range(0, len(labels), batch_size):
            index = order[start:start + batch_size]
            loss = F.cross_entropy(model.calibration(features[index]), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        # one check per epoch (not per step: no host sync in the loop); a diverged layer stays diverged
        if not all(torch.isfinite(p).all() for p in model.calibration.parameters()):
            raise ModaError(f"calibration diverged (non-finite weights) in epoch {epoch} of {epochs} "
                            f"at learning rate {lr}", hint="try a smaller --lr")
    return model.eval()


def normalize(weak: nn.Module, strong: nn.Module, masks: Mapping[str, torch.Tensor], weak_class: int,
              strong_class: int, train: Split, classes: Sequence[int] | None = None) -> NormalizedModel:
    """The CNNSplitter-style baseline: no training; the module output's range over all of ``train``
    (at inference the class is unknown, so every class's samples count) becomes [0, 1]."""
    check_replacement(weak, strong, weak_class, strong_class)
    module = strong_module(strong, masks, strong_class, device_of(weak))
    outputs = _outputs(module, train)
    return NormalizedModel(weak, module, weak_class, outputs.min().item(), outputs.max().item(), classes)


def affine(weak: nn.Module, strong: nn.Module, masks: Mapping[str, torch.Tensor], weak_class: int,
           strong_class: int, train: Split, max_false_positives: float = 0.01, shift: int = 1,
           shifted_samples: int = 1000, iterations: int = 200, seed: int = 0,
           classes: Sequence[int] | None = None, stage: Stage | None = None) -> AffineModel:
    """Target-only calibration (MODA Studio's own; docs/design.md, Module replacement): only the target's
    logit changes, to ``a·s + c·w + b`` (``s`` the module's logit, ``w`` the weak model's own target logit).

    1. ``a``, ``c``, ``b`` minimise the cross-entropy of the repaired logits on ``train`` and on its
       copies shifted by ``shift`` pixels in the 8 directions (full batch, L-BFGS; deterministic). A
       weak model that over-fits its few training samples scores them with a confidence it does not
       have on new images; the shifted copies are new images of the same classes, so the fit sees
       logits closer to the test-time ones (``shift=0``: the training data only; a training set larger
       than ``shifted_samples`` has only a seeded random subset of that size shifted, which bounds the
       cost at 8 × ``shifted_samples`` extra samples). ``s`` and ``w`` are standardised first, so the
       fit does not depend on their scales; a constant input (e.g. a weak model that never scores the
       target) gets weight 0.
    2. The bias is then lowered, if needed, until at most ``max_false_positives`` of the other
       classes' samples in that fitting set see the target's new logit out-rank every other logit:
       a bound on the new errors the repair may add.

    Another class can only lose a sample when the target's logit out-ranks its own, so the other
    classes move much less than under ``calibrate``'s K×K layer. ``stage`` hears of each step
    (computing the logits of the fitting set, fitting).
    """
    check_replacement(weak, strong, weak_class, strong_class)
    if not 0.0 <= max_false_positives <= 1.0:
        raise ModaError(f"the false-positive bound is a share of samples in [0, 1], got {max_false_positives}")
    if iterations < 1:
        raise ModaError(f"the affine fit needs at least one iteration, got {iterations}")
    if shift < 0 or shifted_samples < 1:
        raise ModaError(f"the fitting shift is a number of pixels >= 0 and the shifted samples at least 1, "
                        f"got {shift} and {shifted_samples}")
    device = device_of(weak)
    module = strong_module(strong, masks, strong_class, device)
    fitting = train
    if shift:
        subset = train
        if len(train) > shifted_samples:
            generator = torch.Generator().manual_seed(seed)
            index = torch.randperm(len(train), generator=generator)[:shifted_samples].sort().values
            subset = Split(train.images[index.to(train.images.device)], train.labels[index.to(train.labels.device)],
                           train.mean, train.std)
        shifted = with_shifts(subset, shift)
        fitting = Split(torch.cat([train.images, shifted.images[len(subset):]]),
                        torch.cat([train.labels, shifted.labels[len(subset):]]), train.mean, train.std)
    if stage:
        stage(f"computing the logits of {len(fitting):,} fitting images", 0.0)
    weak_logits, module_logit = _outputs(weak, fitting), _outputs(module, fitting)
    if stage:
        stage("fitting a, c and b", 0.6)
    labels = fitting.labels.to(device)
    inputs = torch.cat([module_logit, weak_logits[:, weak_class:weak_class + 1]], dim=1).double()  # N×2
    mean = inputs.mean(0)
    std = inputs.std(0) if len(inputs) > 1 else torch.zeros_like(mean)
    varies = torch.isfinite(std) & (std > 1e-12)
    standard = torch.where(varies, (inputs - mean) / torch.where(varies, std, 1.0), 0.0)
    is_target = torch.arange(weak_logits.shape[1], device=device) == weak_class
    rest = weak_logits.double()
    weights = torch.tensor([1.0, 0.0], dtype=torch.float64, device=device, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, device=device, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights, bias], lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        target_logit = standard @ (weights * varies) + bias
        loss = F.cross_entropy(torch.where(is_target, target_logit[:, None], rest), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():  # back to the raw inputs: a·s + c·w + b
        raw = torch.where(varies, weights / torch.where(varies, std, 1.0), 0.0)
        offset = bias - (raw * mean).sum()
        if not torch.isfinite(raw).all() or not torch.isfinite(offset):
            raise ModaError("the affine fit did not converge to finite numbers (are the weak or module logits finite?)")
        others = labels != weak_class
        if others.any():
            # a non-target sample becomes a false positive when a·s + c·w + b > its best non-target logit
            best_other = rest[others][:, ~is_target].max(1).values
            room = best_other - inputs[others] @ raw  # the largest bias that keeps each sample
            allowed = torch.quantile(room, max_false_positives) if max_false_positives > 0 else room.min()
            # strictly below: at a tie argmax picks the lower index (it may be the target's), and the
            # repaired model adds its logits in float32, whose rounding would undo a float64-exact bound
            allowed = allowed - 1e-4 * (1 + allowed.abs())
            offset = torch.minimum(offset, allowed)
    scale, weak_scale = raw.tolist()
    return AffineModel(weak, module, weak_class, scale, weak_scale, offset.item(), classes).eval()


def with_shifts(split: Split, shift: int) -> Split:
    """``split`` followed by its copies shifted by ``shift`` pixels in the 8 directions (zero fill):
    9× the samples; ``shift=0`` returns ``split`` itself."""
    if shift == 0:
        return split
    images, labels = [split.images], [split.labels]
    for dy in (-shift, 0, shift):
        for dx in (-shift, 0, shift):
            if dy or dx:
                moved = torch.zeros_like(split.images)
                h, w = split.images.shape[-2:]
                moved[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
                    split.images[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
                images.append(moved)
                labels.append(split.labels)
    return Split(torch.cat(images), torch.cat(labels), split.mean, split.std)


@torch.no_grad()
def _outputs(function: Callable[[torch.Tensor], torch.Tensor], split: Split, batch_size: int = 1000) -> torch.Tensor:
    return torch.cat([function(x) for x, _ in split.batches(batch_size)])


# ----------------------------------------------------------------------------------------------
# the run-level entry point

@dataclass
class Repair:
    """A repaired model and its ``replacement_report`` plus what produced it (runs, classes, strategy)."""

    model: RepairedModel
    report: dict[str, Any]


def repair(weak: runs.Run, strong: runs.Run, weak_class: int, strong_class: int, strategy: str = "calibrate",
           epochs: int = 5, tau: float = DEFAULT_TAU, lr: float = 0.01, seed: int = 0,
           progress: Callable[[int, int], None] | None = None, save_decomposition: bool = True,
           stage: Stage | None = None) -> Repair:
    """Repair run ``weak``'s class ``weak_class`` with ``strong``'s module for ``strong_class``, then
    measure both on the weak run's test split. The strong run's decomposition at ``tau`` is read from
    its folder, or computed there first (``progress`` sees that; ``save_decomposition=False`` writes
    nothing into the strong run's folder).

    ``stage(text, done)`` hears of every stage of the whole repair with the share of it done so far
    (0–1): the decomposition, the strategy's own steps (prefixed with its name, e.g. "calibrate:
    training the remix layer, epoch 3/5"), the evaluation; a plain callback, so a command line, a
    dashboard or a test can each show it their own way."""
    if strategy not in STRATEGIES:
        raise ModaError(f"unknown replacement strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    check_replacement(weak.model, strong.model, weak_class, strong_class)
    data = runs.run_dataset(weak)
    strong_info = dataset_info(runs.dataset_name(strong))
    if (strong_info.mean, strong_info.std) != (data.info.mean, data.info.std):
        raise ModaError(f"the strong run normalises its inputs for {strong_info.name!r} and the weak run for "
                        f"{data.info.name!r} (different mean/std): the module would see inputs it was not trained on")
    started = time.perf_counter()
    decomposing = progress
    if stage:
        stage("reading the strong run's modules (or decomposing it first)", 0.0)

        def decomposing(done: int, total: int) -> None:
            if progress:
                progress(done, total)
            stage(f"decomposing the strong run: batch {done}/{total}", 0.2 * done / max(total, 1))

    masks = decompose(strong, tau, progress=decomposing, save=save_decomposition).masks
    classes = run_classes(weak)
    # the strategy's own steps take the middle of the bar: 0.2 to 0.8
    steps = (lambda text, done: stage(f"{strategy}: {text}", 0.2 + 0.6 * done)) if stage else None
    model: RepairedModel
    if strategy == "calibrate":
        model = calibrate(weak.model, strong.model, masks, weak_class, strong_class, data.train, epochs=epochs,
                          lr=lr, seed=seed, classes=classes, stage=steps)
    elif strategy == "affine":
        model = affine(weak.model, strong.model, masks, weak_class, strong_class, data.train, seed=seed,
                       classes=classes, stage=steps)
    else:
        if steps:
            steps(f"measuring the module's output range on {len(data.train):,} training images", 0.0)
        model = normalize(weak.model, strong.model, masks, weak_class, strong_class, data.train, classes=classes)
    if stage:
        stage(f"{strategy}: evaluating on {len(data.test):,} test images", 0.8)
    report = replacement_report(predict_logits(weak.model, data.test), predict_logits(model, data.test),
                                data.test.labels, weak_class, classes)
    module_params = parameter_count(model.module)
    report.update(weak=weak.spec, strong=strong.spec, strategy=strategy, weak_class=weak_class,
                  strong_class=strong_class, strong_class_id=run_classes(strong)[strong_class], tau=tau,
                  epochs=epochs if strategy == "calibrate" else 0, module_params=module_params,
                  module_params_fraction=module_params / parameter_count(strong.model),
                  seconds=time.perf_counter() - started)
    if isinstance(model, AffineModel):  # strategy "affine"
        report["affine"] = {"scale": model.scale.item(), "weak_scale": model.weak_scale.item(),
                            "bias": model.bias.item()}
    if stage:
        stage(f"{strategy}: done", 1.0)
    return Repair(model, report)


__all__ = ["SCARCE_FRACTION", "SETTINGS", "STRATEGIES", "STRONG_CLASSES", "WEAK_FRACTION", "WEAK_REST", "AffineModel",
           "CalibratedModel", "NormalizedModel", "Repair", "RepairedModel", "Stage", "affine", "calibrate",
           "check_replacement", "class_index", "normalize", "repair", "replacement_report", "run_classes",
           "strong_config", "strong_module", "weak_config", "with_shifts"]
