"""Module metrics (docs/design.md, Module metrics) beyond the sizes and overlaps of ``moda_core.summary``:
FLOPs, and the accuracy of composed sub-task models next to the full model's (accuracy itself:
``moda_core.evaluate``)."""
from __future__ import annotations

import itertools
import math
import random
from typing import Callable, Sequence

import torch
from torch import nn

from moda_core.compose import compose_module, parameter_count
from moda_core.data import Split
from moda_core.evaluate import accuracy, predict_logits
from moda_core.hooks import eval_mode
from moda_core.model_attrs import classes_of, input_shape_of

# ----------------------------------------------------------------------------------------------
# module metrics (docs/design.md, Module metrics)

def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass of a single sample (torch's FlopCounterMode; a multiply-add counts 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    param = next(model.parameters())
    with eval_mode(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *input_shape, dtype=param.dtype, device=param.device))
    return int(counter.get_total_flops())


def subtask_split(split: Split, classes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the samples of ``classes`` in ``split`` and their labels as positions in sorted ``classes``."""
    classes_t = torch.tensor(sorted(classes), device=split.labels.device)
    index = torch.nonzero(torch.isin(split.labels, classes_t)).flatten()
    return index, torch.searchsorted(classes_t, split.labels[index])


def restricted_accuracy(full_logits: torch.Tensor, split: Split, classes: Sequence[int]) -> float:
    """Accuracy of a full model on the samples of ``classes``, choosing only among those logits."""
    index, labels = subtask_split(split, classes)
    return accuracy(full_logits[index][:, sorted(classes)], labels)


@torch.no_grad()
def composed_accuracy(composed: nn.Module, split: Split, classes: Sequence[int], batch_size: int = 1000) -> float:
    """Accuracy of a composed module (logits = sorted ``classes``) on the samples of those classes."""
    index, labels = subtask_split(split, classes)
    with eval_mode(composed):
        logits = torch.cat([composed(split.batch(index[i:i + batch_size])[0])
                            for i in range(0, len(index), batch_size)])
    return accuracy(logits, labels)


def one_vs_rest_auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` separating the ``positive`` samples from the rest: the chance
    that a random positive sample scores above a random other one (ties count half; Mann–Whitney U over
    average ranks). NaN when either side has no sample."""
    scores, positive = scores.detach().flatten().double().cpu(), positive.flatten().bool().cpu()
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    values, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    average_rank = ends - (counts.double() - 1) / 2  # 1-based rank shared by the tied samples
    rank_sum = float(average_rank[inverse][positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


@torch.no_grad()
def _logits_on(model: nn.Module, split: Split, batch_size: int = 1000) -> torch.Tensor:
    with eval_mode(model):
        return torch.cat([model(x) for x, _ in split.batches(batch_size)])


def compose_report(model: nn.Module, masks: dict[str, torch.Tensor], classes: Sequence[int], test: Split,
                   full_logits: torch.Tensor | None = None, full_flops: int | None = None) -> dict:
    """Compose ``classes`` and measure it next to the full model: parameters, FLOPs, accuracy.

    ``accuracy`` is the composed module on the test samples of ``classes``; ``full_accuracy`` is the
    full model on the same samples, restricted to the same logits. ``kept_whole``: the (node, reason) pairs
    composition kept whole (``moda_core.graph.NetGraph.kept_whole``: empty for the CNNs of the zoo).

    A module of one class has one logit, always the argmax: its ``accuracy`` is 1 by construction and says
    nothing. For one class the report adds an honest, comparable measure on *all* test samples:
    ``one_vs_rest_auc``, how well the module's logit separates the class's samples from every other
    class's (``one_vs_rest_auc``, the function), and ``full_one_vs_rest_auc``, the same for the full
    model's logit of that class.
    """
    composed = compose_module(model, masks, classes)
    classes = classes_of(composed)
    if full_logits is None:
        full_logits = predict_logits(model, test)
    full_params = parameter_count(model)
    params = parameter_count(composed)
    full_flops = count_flops(model, input_shape_of(model)) if full_flops is None else full_flops
    flops = count_flops(composed, input_shape_of(model))
    report = {"classes": classes, "params": params, "full_params": full_params, "params_fraction": params / full_params,
            "flops": flops, "full_flops": full_flops, "flops_fraction": flops / full_flops,
            "accuracy": composed_accuracy(composed, test, classes),
            "full_accuracy": restricted_accuracy(full_logits, test, classes),
            "kept_whole": [list(entry) for entry in getattr(composed, "kept_whole", [])]}
    if len(classes) == 1:
        positive = test.labels == classes[0]
        report["one_vs_rest_auc"] = one_vs_rest_auc(_logits_on(composed, test)[:, 0], positive)
        report["full_one_vs_rest_auc"] = one_vs_rest_auc(full_logits[:, classes[0]], positive.to(full_logits.device))
    return report


def subtask_sets(num_classes: int, sizes: Sequence[int], samples: int, seed: int = 0) -> list[list[int]]:
    """Every subset of each size when there are at most ``samples`` of them, else a seeded sample."""
    rng = random.Random(seed)
    chosen: list[list[int]] = []
    for size in sizes:
        if not 1 <= size <= num_classes:
            raise ValueError(f"sub-task size {size} is outside 1..{num_classes}")
        if math.comb(num_classes, size) <= samples:
            chosen += [list(c) for c in itertools.combinations(range(num_classes), size)]
        else:
            seen: set[tuple[int, ...]] = set()
            while len(seen) < samples:
                seen.add(tuple(sorted(rng.sample(range(num_classes), size))))
            chosen += [list(c) for c in sorted(seen)]
    return chosen


def subtask_sweep(model: nn.Module, masks: dict[str, torch.Tensor], test: Split, subsets: list[list[int]],
                  reference: nn.Module | None = None,
                  progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """``compose_report`` for each subset; with ``reference`` (e.g. the standard model of the same
    architecture) also that model's restricted accuracy on the same classes."""
    full_logits = predict_logits(model, test)
    reference_logits = predict_logits(reference, test) if reference is not None else None
    full_flops = count_flops(model, input_shape_of(model))
    rows = []
    for done, classes in enumerate(subsets, start=1):
        row = compose_report(model, masks, classes, test, full_logits, full_flops)
        row["size"] = len(classes)
        if reference_logits is not None:
            row["reference_accuracy"] = restricted_accuracy(reference_logits, test, classes)
        rows.append(row)
        if progress:
            progress(done, len(subsets))
    return rows
