"""The module-replacement experiment around one repair (``moda_core.replace``; docs/design.md, Module
replacement): its measure (``replacement_report``: the paper's, and stricter ones of ours) and its runs
(``strong_config``, ``weak_config``: the module donor and the weak model, in the paper's setting and the
scarce-target one), for ``moda_core.replace.repair``, ``bench/repair.py`` and the demo bundle."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch

from moda_core.errors import ModaError
from moda_core.evaluate import accuracy, per_class_accuracy

if TYPE_CHECKING:
    from moda_core.train import TrainConfig


# ----------------------------------------------------------------------------------------------
# the measure

def replacement_report(before_logits: torch.Tensor, after_logits: torch.Tensor, labels: torch.Tensor,
                       target: int, classes: Sequence[int]) -> dict[str, Any]:
    """Per-class accuracy (0–1) before and after, keyed by original class id (``classes``, in logit
    order), and the paper's measure (docs/design.md, Module replacement): the target's accuracy before/after
    (``target_before``, ``target_after``, ``target_gain`` = after − before) and the unweighted mean
    accuracy of the other classes before/after (``other_mean_before``, ``other_mean_after``,
    ``other_mean_change`` = after − before, signed). Stricter, ours: ``other_max_change`` = the largest
    |after − before| over the other classes and ``other_max_drop`` the largest before − after there
    (never negative). Without other classes the means are 0. Overall accuracy: ``accuracy_before``,
    ``accuracy_after``, ``accuracy_change``."""
    before = per_class_accuracy(before_logits, labels, len(classes))
    after = per_class_accuracy(after_logits, labels, len(classes))
    others = [k for k in range(len(classes)) if k != target]
    changes = [after[k] - before[k] for k in others]
    other_mean_before = sum(before[k] for k in others) / len(others) if others else 0.0
    other_mean_after = sum(after[k] for k in others) / len(others) if others else 0.0
    accuracy_before, accuracy_after = accuracy(before_logits, labels), accuracy(after_logits, labels)
    return {"target_class": classes[target],
            "before": {str(c): v for c, v in zip(classes, before, strict=True)},
            "after": {str(c): v for c, v in zip(classes, after, strict=True)},
            "target_before": before[target], "target_after": after[target],
            "target_gain": after[target] - before[target],
            "other_mean_before": other_mean_before, "other_mean_after": other_mean_after,
            "other_mean_change": other_mean_after - other_mean_before,
            "other_max_change": max((abs(c) for c in changes), default=0.0),
            "other_max_drop": max([0.0, *(-c for c in changes)]),
            "accuracy_before": accuracy_before, "accuracy_after": accuracy_after,
            "accuracy_change": accuracy_after - accuracy_before}


# ----------------------------------------------------------------------------------------------
# the experiment's runs (bench/repair.py and the demo bundle build them from here)

SETTINGS = ("paper", "scarce")
STRONG_CLASSES = (0, 1, 2, 3, 4)
WEAK_REST = (5, 6, 7, 8, 9)
WEAK_FRACTION = 0.1  # the paper's share of the weak model's training data
SCARCE_FRACTION = 0.02  # the scarce-target setting's share of the mixed class


def strong_config(epochs: int, device: str = "cpu", **overrides: Any) -> "TrainConfig":
    """The module donor (docs/design.md, Module replacement): VGG11 (width 0.25), MODA training, classes 0–4,
    all the data."""
    from moda_core.train import TrainConfig

    return TrainConfig(**{**dict(model="vgg11", dataset="mnist5k", width=0.25, epochs=epochs, alpha=1.0, beta=1.0,
                                 gamma=0.3, seed=0, classes=list(STRONG_CLASSES), device=device), **overrides})


def weak_config(setting: str, mixed_class: int, epochs: int, checkpoint_every: int = 0, device: str = "cpu",
                **overrides: Any) -> "TrainConfig":
    """The weak model (docs/design.md, Module replacement): LeNet-5, standard training, no augmentation, on
    the mixed class and classes 5–9 with 10% of their training data; ``setting="scarce"`` keeps only 2% of the mixed
    class (so the weak model is weak exactly where the module helps), ``"paper"`` 10% as in the paper.
    Batch 32: 10% of the data is a few hundred samples, so a batch of 128 would give 2 steps an epoch.
    ``checkpoint_every`` keeps periodic weights (RUN@EPOCH: early = under-fit, last = over-fit)."""
    from moda_core.train import TrainConfig

    if setting not in SETTINGS:
        raise ModaError(f"unknown repair setting {setting!r}: expected one of {', '.join(SETTINGS)}")
    if mixed_class not in STRONG_CLASSES:
        raise ModaError(f"the mixed class must be one of the strong model's classes {list(STRONG_CLASSES)}, "
                        f"got {mixed_class}")
    fractions = {mixed_class: SCARCE_FRACTION} if setting == "scarce" else None
    return TrainConfig(**{**dict(model="lenet5", dataset="mnist5k", epochs=epochs, alpha=0.0, beta=0.0, gamma=0.0,
                                 seed=0, batch_size=32, classes=[mixed_class, *WEAK_REST],
                                 train_fraction=WEAK_FRACTION, class_fractions=fractions, augment=False,
                                 checkpoint_every=checkpoint_every, track_modular_terms=False, device=device),
                          **overrides})
