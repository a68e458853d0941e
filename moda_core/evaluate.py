"""Evaluation: a model's logits over a split and the accuracies computed from them. The trainer, the
metrics and module replacement all measure accuracy here."""
from __future__ import annotations

import torch
from torch import nn

from moda_core.data import Split
from moda_core.hooks import eval_mode


@torch.no_grad()
def predict_logits(model: nn.Module, split: Split, batch_size: int = 1000) -> torch.Tensor:
    """Logits of ``model`` (put in eval mode for the pass) over a whole split, in order."""
    with eval_mode(model):
        return torch.cat([model(x).float() for x, _ in split.batches(batch_size)])


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose arg-max equals the label (0–1)."""
    if len(labels) == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return (logits.argmax(1) == labels).float().mean().item()


def per_class_accuracy(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float]:
    """Accuracy over the samples of each class (NaN for a class without samples)."""
    correct = (logits.argmax(1) == labels).float()
    totals = torch.bincount(labels, minlength=num_classes).float()
    hits = torch.bincount(labels, weights=correct, minlength=num_classes)
    return (hits / totals).tolist()
