"""The weights that connect consecutive activation points, read on the model's graph (the Module map's lines).

``weight_links(model)`` gives, for each point after the first, how strongly each unit of the point before it feeds
each of its units: walking the graph back from the point, through one conv or linear layer (|weights|, a conv's
summed over its kernel; through a flatten, a channel's positions summed) or several (a ViT's fc2, then across the
residual stream the next block's fc1: the product of their |weight| matrices), passing over norms, attention and
pools. Only the paths that cross the fewest weight layers (at least one, at most ``max_hops``) count: a skip
connection alone is no weight.
"""
from __future__ import annotations

import builtins

import numpy as np
import torch
from torch import fx, nn

from moda_core.errors import ModaError
from moda_core.graph import NetGraph, TraceError, graph_of
from moda_core.oprules import target_name

MAP_HOPS = 2  # weight layers a connection between two consecutive points may cross, at most
MAX_STEPS = 20_000  # graph steps one walk may take (a bound for graphs with many residual paths)


def unit_weights(module: nn.Module) -> torch.Tensor | None:
    """A conv's or linear's |weights| as an outputs × inputs matrix (a conv's summed over its kernel, a grouped
    conv's zero between groups); None for any other module."""
    if isinstance(module, nn.Linear):
        return module.weight.detach().abs().float().cpu()
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        per_group = module.weight.detach().abs().float().cpu().flatten(2).sum(2)  # out × in/groups
        groups, out = module.groups, per_group.shape[0]
        if groups == 1:
            return per_group
        full = torch.zeros(out, module.in_channels)
        rows, cols = out // groups, module.in_channels // groups
        for g in range(groups):
            full[g * rows:(g + 1) * rows, g * cols:(g + 1) * cols] = per_group[g * rows:(g + 1) * rows]
        return full
    return None


def fold(matrix: torch.Tensor, units: int) -> torch.Tensor | None:
    """``matrix``'s columns summed down to ``units`` (a flatten spreads each channel over consecutive positions);
    None when they do not divide."""
    columns = matrix.shape[1]
    if columns == units:
        return matrix
    if columns % units:
        return None
    return matrix.view(matrix.shape[0], units, columns // units).sum(2)


def _stops(node: fx.Node) -> bool:
    """A walk back stops at sizes and shapes (``x.size(0)``) and at concatenations (units from several tensors)."""
    return (node.op == "call_method" and node.target in ("size", "dim", "numel")) or \
        (node.op == "call_function" and node.target in (builtins.getattr, torch.cat, torch.stack))


def _walk(g: NetGraph, model: nn.Module, before: str, point: str, max_hops: int) -> tuple[np.ndarray, int] | None:
    units = {name: p.units for name, p in g.points.items()}
    start = g.node(g.points[point].node)
    stack = [(arg, torch.eye(units[point]), 0) for arg in start.all_input_nodes[:1]]
    reached: dict[int, torch.Tensor] = {}
    steps = 0
    while stack and steps < MAX_STEPS:
        steps += 1
        node, matrix, hops = stack.pop()
        if node.op in ("placeholder", "get_attr", "output") or _stops(node):
            continue
        found = g.point_at(node)
        if found is not None:  # a point: the one before, or another one that a path may not cross
            folded = fold(matrix, units[before]) if found.name == before and hops else None
            if folded is not None:
                reached[hops] = reached[hops] + folded if hops in reached else folded
            continue
        weights = unit_weights(model.get_submodule(target_name(node))) if node.op == "call_module" else None
        if weights is not None:
            folded = fold(matrix, weights.shape[0]) if hops < max_hops else None
            if folded is not None and node.all_input_nodes:
                stack.append((node.all_input_nodes[0], folded @ weights, hops + 1))
            continue
        stack += [(arg, matrix, hops) for arg in node.all_input_nodes]
    if not reached:
        return None
    hops = min(reached)
    return reached[hops].numpy().astype(np.float32), hops


def weight_links(model: nn.Module, max_hops: int = MAP_HOPS) -> dict[str, tuple[np.ndarray, int]]:
    """Point → (its units × the previous point's units, ≥ 0; the number of weight layers crossed), for every point
    after the first that a path of weights reaches (see the module docstring). A model fx cannot trace has none."""
    try:
        g = graph_of(model)
    except (TraceError, ModaError, AttributeError):
        return {}
    points = list(g.points)
    links: dict[str, tuple[np.ndarray, int]] = {}
    with torch.no_grad():
        for before, point in zip(points[:-1], points[1:], strict=True):
            found = _walk(g, model, before, point, max_hops)
            if found is not None:
                links[point] = found
    return links
