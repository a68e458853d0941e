"""MODA in your own training loop, on your own model and data loader.

    moda = ModularLoss(model, example_input)            # finds the activation points, records them
    logits = moda.model(x)                              # the same parameters; a forward that records
    loss = F.cross_entropy(logits, y) + moda(y)         # + α·affinity + β·dispersion + γ·compactness

``moda.model`` is ``model`` tapped (``moda_core.tapped``): it shares every parameter, so an optimizer over
``model.parameters()`` trains it, and its ``state_dict`` has ``model``'s keys. After training,
``decompose_model(moda.model, loader)`` gives per-class rates and masks, and
``moda_core.compose.compose_module(moda.model, masks, classes)`` the smaller sub-task model (exact against the
masked full model; ``moda_core.export.export_module`` writes it as a ``.pt2``).
"""
from __future__ import annotations

import math
from contextlib import ExitStack
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from moda_core.activations import firing_threshold, modular_points, nonnegative_points, record_activations, units_firing
from moda_core.decompose import DEFAULT_TAU, Decomposition, check_tau, masks_from_rates
from moda_core.errors import ModaError
from moda_core.graph import DEFAULT_THRESHOLD
from moda_core.hooks import eval_mode
from moda_core.losses import modular_losses
from moda_core.models.base import ZooNet
from moda_core.tapped import is_tapped, tap_sites


def prepare_model(model: nn.Module, example_input: torch.Tensor, points: str | Sequence[str] = "relu",
                  threshold: float = DEFAULT_THRESHOLD) -> nn.Module:
    """``model`` ready for MODA: a zoo model or an already tapped one as it is, any other model tapped. Sets
    ``arch`` (classes from the output on ``example_input``) and ``input_shape`` where they are missing."""
    if not isinstance(model, ZooNet) and not is_tapped(model):
        model = tap_sites(model, example_input, points, threshold)
    if not hasattr(model, "input_shape"):
        model.input_shape = tuple(example_input.shape[1:])
    if not hasattr(model, "arch"):
        with eval_mode(model), torch.no_grad():
            output = model(example_input)
        if not isinstance(output, torch.Tensor) or output.dim() != 2 or output.shape[0] != example_input.shape[0]:
            raise ModaError(f"{type(model).__name__} must return logits [batch, classes], got "
                            f"{list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__}")
        kinds = points if isinstance(points, str) else ",".join(points)
        model.arch = {"name": type(model).__name__, "num_classes": int(output.shape[1]), "points": kinds,
                      "threshold": float(threshold), "in_channels": int(example_input.shape[1]),
                      "image_size": int(example_input.shape[-1]), "width": 1.0}
    return model


class ModularLoss:
    """The three modular objectives of MODA on the activations of ``model``'s last forward pass.

    ``points`` picks the activation calls that are points (``"relu"``; ``"gelu"``/``"silu"`` opt in, whose
    firing rule is ``a > threshold``). ``alpha``, ``beta``, ``gamma`` weight affinity, dispersion and
    compactness (MODA's defaults). Call ``close()`` (or use it as a context manager) to remove its hooks.
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, points: str | Sequence[str] = "relu",
                 alpha: float = 1.0, beta: float = 1.0, gamma: float = 0.3,
                 threshold: float = DEFAULT_THRESHOLD) -> None:
        for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
            if not (value >= 0 and math.isfinite(value)):
                raise ModaError(f"{name} must be a non-negative number, got {value}")
        self.model = prepare_model(model, example_input, points, threshold)
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        self.points = modular_points(self.model)
        self.nonnegative = nonnegative_points(self.model)
        self._hooks = ExitStack()
        self._recorder = self._hooks.enter_context(record_activations(self.model, self.points))
        self.terms: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def __call__(self, labels: torch.Tensor) -> torch.Tensor:
        """α·affinity + β·dispersion + γ·compactness of the last forward pass of ``self.model`` on a batch
        labelled ``labels`` (``self.terms`` keeps the three terms)."""
        if not self._recorder.cache:
            raise ModaError("no activations recorded: call moda.model(x) (the tapped model) before moda(y)")
        self.terms = modular_losses(self._recorder.values(), labels, nonnegative=self.nonnegative)
        affinity, dispersion, compactness = self.terms
        return self.alpha * affinity + self.beta * dispersion + self.gamma * compactness

    def close(self) -> None:
        self._hooks.close()

    def __enter__(self) -> ModularLoss:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


@torch.no_grad()
def activation_rates_from(model: nn.Module, loader: Iterable, num_classes: int | None = None,
                          device: torch.device | str | None = None,
                          progress: Callable[[int], None] | None = None) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Per-class firing rates at every point of ``model`` (zoo, or prepared: ``prepare_model``) over the
    ``(inputs, labels)`` batches of ``loader``, in eval mode. Returns rates (point → classes × units) and the
    samples per class; a class without samples is an error."""
    num_classes = num_classes or model.arch["num_classes"]
    device = device or next(model.parameters()).device
    points, threshold = modular_points(model), firing_threshold(model)
    counts: dict[str, torch.Tensor] = {}
    per_class = torch.zeros(num_classes, dtype=torch.long)
    with eval_mode(model), record_activations(model, points, detach=True) as recorder:
        for step, batch in enumerate(loader, start=1):
            x, y = batch[0].to(device), batch[1].to(device)
            if int(y.min()) < 0 or int(y.max()) >= num_classes:
                raise ModaError(f"batch {step} has labels outside 0..{num_classes - 1}")
            model(x)
            onehot = torch.nn.functional.one_hot(y, num_classes).float()
            for point, activation in zip(points, recorder.values(), strict=True):
                update = onehot.T @ units_firing(activation, threshold).float()
                counts[point] = counts[point] + update if point in counts else update
            per_class += torch.bincount(y.cpu(), minlength=num_classes)
            if progress:
                progress(step)
    empty = torch.nonzero(per_class == 0).flatten().tolist()
    if not counts or empty:
        raise ModaError(f"cannot decompose: no samples of class(es) {empty or list(range(num_classes))} in the loader")
    denominator = per_class.to(torch.float32)[:, None]
    return {p: (c.cpu() / denominator) for p, c in counts.items()}, per_class.tolist()


def decompose_model(model: nn.Module, loader: Iterable, tau: float = DEFAULT_TAU, num_classes: int | None = None,
                    device: torch.device | str | None = None) -> Decomposition:
    """Rates over ``loader`` and the masks at ``tau`` (``moda_core.decompose.masks_from_rates``)."""
    tau = check_tau(tau)
    rates, class_counts = activation_rates_from(model, loader, num_classes, device)
    return Decomposition(rates, masks_from_rates(rates, tau), tau, class_counts)
