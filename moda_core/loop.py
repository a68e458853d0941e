"""MODA in your own training loop, on your own model and data loader.

    moda = ModularLoss(model, example_input)            # reads the model's graph: its points and their units
    logits = moda.model(x)                              # the same model; its forward also keeps the activations
    loss = F.cross_entropy(logits, y) + moda(y)         # + α·affinity + β·dispersion + γ·compactness

``moda.model`` is ``model`` itself as far as its parameters go (the same modules, the same ``state_dict`` keys), so
an optimizer over ``model.parameters()`` trains it; in training mode it runs the graph traced in training mode, so
dropout and stochastic depth behave as in ``model``. After training, ``decompose_model(model, loader)`` gives
per-class rates and masks, and ``moda_core.compose.compose_module(model, masks, classes)`` the smaller sub-task
model (exact against the masked full model; ``moda_core.export.export_module`` writes it as a ``.pt2``).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from moda_core.activations import (
    firing_threshold,
    modular_points,
    nonnegative_points,
    recorder,
    traceable,
    units_firing,
)
from moda_core.decompose import DEFAULT_TAU, Decomposition, check_tau, masks_from_rates
from moda_core.errors import ModaError
from moda_core.graph import DEFAULT_THRESHOLD, graph_of, identity, module_view
from moda_core.losses import modular_losses
from moda_core.model_attrs import arch_of, set_attributes
from moda_core.models.base import ZooNet

Points = str | Sequence[str] | Mapping[str, int | None]


def prepare_model(model: nn.Module, example_input: torch.Tensor, points: Points = "relu",
                  threshold: float = DEFAULT_THRESHOLD) -> nn.Module:
    """``model`` ready for MODA: ``arch`` (classes from the output on ``example_input``, the points, the threshold)
    and ``input_shape`` set where they are missing, and its graph read (``moda_core.graph.graph_of``: a point whose
    units cannot be told is an error here). ``points``: activation kinds, or site name → unit axis."""
    if not hasattr(model, "input_shape"):
        set_attributes(model, input_shape=tuple(example_input.shape[1:]))
    if not hasattr(model, "arch"):
        with torch.no_grad():
            output = module_view(model)(example_input)
        if not isinstance(output, torch.Tensor) or output.dim() != 2 or output.shape[0] != example_input.shape[0]:
            raise ModaError(f"{type(model).__name__} must return logits [batch, classes], got "
                            f"{list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__}")
        kinds = dict(points) if isinstance(points, Mapping) else points if isinstance(points, str) else ",".join(points)
        set_attributes(model, arch={"name": type(model).__name__, "num_classes": int(output.shape[1]), "points": kinds,
                                    "threshold": float(threshold), "in_channels": int(example_input.shape[1]),
                                    "image_size": int(example_input.shape[-1]), "width": 1.0})
    if isinstance(model, ZooNet) or traceable(model):
        graph = graph_of(model, example_input=example_input)
        if not graph.points:
            raise ModaError(f"{type(model).__name__} has no activation point: no {arch_of(model)['points']} call in "
                            "its forward pass")
    return model


class RecordingModel(nn.Module):
    """``model`` with a forward that also keeps every point's activation of the last pass (``last``, units on
    dim 1): the same modules, parameters and ``state_dict`` keys; in training mode the graph traced in training
    mode runs, in eval mode the eval one."""

    # kept in its __dict__, out of its modules and state_dict
    recorded_model: nn.Module
    arch: dict[str, Any]
    input_shape: tuple[int, ...]
    last: list[torch.Tensor] | None
    recorders: dict[bool, tuple[tuple[bool, tuple], nn.Module]]  # training → (its stamp, its recorder)

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        for name, child in model.named_children():
            self._modules[name] = child
        for name, parameter in model.named_parameters(recurse=False):
            self._parameters[name] = parameter
        for name, buffer in model.named_buffers(recurse=False):
            self._buffers[name] = buffer
            if name in model._non_persistent_buffers_set:
                self._non_persistent_buffers_set.add(name)
        self.__dict__.update(recorded_model=model, arch=model.arch, input_shape=model.input_shape, last=None,
                             recorders={})
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stamp = (self.training, identity(self.recorded_model))
        built = self.recorders.get(self.training)
        if built is None or built[0] != stamp:
            built = self.recorders[self.training] = (stamp, recorder(self.recorded_model, training=self.training))
        logits, activations, _ = built[1](x)
        self.__dict__["last"] = list(activations)
        return logits


class ModularLoss:
    """The three modular objectives of MODA on the activations of ``self.model``'s last forward pass.

    ``points`` picks the activation calls that are points (``"relu"``; ``"gelu"``/``"silu"`` opt in, whose firing
    rule is ``a > threshold``; or site name → unit axis). ``alpha``, ``beta``, ``gamma`` weight affinity,
    dispersion and compactness (MODA's defaults).
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, points: Points = "relu",
                 alpha: float = 1.0, beta: float = 1.0, gamma: float = 0.3,
                 threshold: float = DEFAULT_THRESHOLD) -> None:
        for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
            if not (value >= 0 and math.isfinite(value)):
                raise ModaError(f"{name} must be a non-negative number, got {value}")
        self.model = RecordingModel(prepare_model(model, example_input, points, threshold))
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        self.nonnegative = nonnegative_points(model)
        self.terms: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def __call__(self, labels: torch.Tensor) -> torch.Tensor:
        """α·affinity + β·dispersion + γ·compactness of the last forward pass of ``self.model`` on a batch
        labelled ``labels`` (``self.terms`` keeps the three terms)."""
        if self.model.last is None:
            raise ModaError("no activations recorded: call moda.model(x) before moda(y)")
        self.terms = modular_losses(self.model.last, labels, nonnegative=self.nonnegative)
        affinity, dispersion, compactness = self.terms
        return self.alpha * affinity + self.beta * dispersion + self.gamma * compactness

    def close(self) -> None:
        """Nothing to undo (no hooks are registered); kept so that ``with ModularLoss(...)`` reads naturally."""

    def __enter__(self) -> ModularLoss:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()


@torch.no_grad()
def activation_rates_from(model: nn.Module, loader: Iterable, num_classes: int | None = None,
                          device: torch.device | str | None = None,
                          progress: Callable[[int], None] | None = None) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Per-class firing rates at every point of ``model`` (zoo, or prepared: ``prepare_model``) over the
    ``(inputs, labels)`` batches of ``loader``, in eval mode. Returns rates (point → classes × units) and the
    samples per class; a class without samples is an error."""
    model = model.__dict__.get("recorded_model", model)  # a RecordingModel's model
    num_classes = num_classes or arch_of(model)["num_classes"]
    device = device or next(model.parameters()).device
    record, points, threshold = recorder(model), modular_points(model), firing_threshold(model)
    counts: dict[str, torch.Tensor] = {}
    per_class = torch.zeros(num_classes, dtype=torch.long)
    for step, batch in enumerate(loader, start=1):
        x, y = batch[0].to(device), batch[1].to(device)
        if int(y.min()) < 0 or int(y.max()) >= num_classes:
            raise ModaError(f"batch {step} has labels outside 0..{num_classes - 1}")
        _, activations, _ = record(x)
        onehot = torch.nn.functional.one_hot(y, num_classes).float()
        for point, activation in zip(points, activations, strict=True):
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
