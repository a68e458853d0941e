"""The module map (the Module map page): a run's network drawn as a left-to-right sequence of layers, one per
activation point in forward order, each a vertical strip of its units, with one class's module lit, or two
classes' modules, their shared units and the strongest of the connections between them.

Units are coded as the How MODA works grid codes weights (``compose.UNION_CELLS``): 0 kept by neither module,
1 only by module A, 2 only by module B, 3 by both; a connection (a weight from unit i of one point to unit j of
the next) is kept by a module when it keeps both ends, and by the union alone (code 4) when only the composed
model of both classes keeps it (A's input to B's output, or B's to A's). The colours are that grid's.

Everything here is numpy and plotly (no torch): the page hands in the masks (point → classes × units, bool), the
connection strengths between consecutive points (``engine.map_links``) and the per-image activations of a point's
units (``engine.map_activations``).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from dashboard.figures.style import OKABE_ITO, UNION_COLOURS, layout, legend_above
from dashboard.plain_text import html_escape

NEITHER, ONLY_A, ONLY_B, BOTH, UNION_ONLY = 0, 1, 2, 3, 4
# unit and connection colours: the How MODA works grid's (neither light grey, A blue, B orange, both black, the
# union's own connections bluish green); the map's grey is darker than the grid's, whose cells have borders: a
# strip of units kept by neither must not vanish on the white page
MAP_NEITHER = "#BDBDBD"
MAP_COLOURS = {NEITHER: MAP_NEITHER, ONLY_A: UNION_COLOURS[1], ONLY_B: UNION_COLOURS[2], BOTH: UNION_COLOURS[3],
               UNION_ONLY: OKABE_ITO[2]}
MAP_COLOUR_NAMES = {NEITHER: "light grey", ONLY_A: "blue", ONLY_B: "orange", BOTH: "black", UNION_ONLY: "green"}
MAX_CELLS = 128  # cells per strip at most: a larger layer is drawn in bins of consecutive units
TOP_LINKS = 8  # connections drawn between two consecutive layers, at most, per kind of connection
STRIP = 0.36  # a strip's width, in layers (strips are 1 apart)
TOP_IMAGES = 8  # test images shown for a unit
MAP_HEIGHT = 560  # px
STAGGER = 5  # strips beyond which the layer labels alternate between two heights


def unit_codes(masks: Mapping[str, np.ndarray], classes: Sequence[int]) -> dict[str, np.ndarray]:
    """Per point, each unit's code: kept by the module of ``classes[0]`` adds 1 (``ONLY_A``), by that of
    ``classes[1]`` (when given) adds 2 (``ONLY_B``); 3 (``BOTH``) is kept by both, 0 (``NEITHER``) by none."""
    if not 1 <= len(classes) <= 2:
        raise ValueError(f"the module map shows one or two classes' modules, got {len(classes)}")
    codes = {}
    for point, mask in masks.items():
        mask = np.asarray(mask, dtype=bool)
        code = mask[classes[0]].astype(np.int8)
        if len(classes) == 2:
            code = code + 2 * mask[classes[1]].astype(np.int8)
        codes[point] = code
    return codes


def layer_counts(masks: Mapping[str, np.ndarray], classes: Sequence[int]) -> list[dict[str, Any]]:
    """Per point (in the masks' order): its units, the units each class's module keeps, and with two classes
    the units both keep (``shared``, the masks' AND) and either keeps (``union``, their OR)."""
    rows = []
    for point, mask in masks.items():
        mask = np.asarray(mask, dtype=bool)
        row: dict[str, Any] = {"point": point, "units": int(mask.shape[1])}
        for c in classes:
            row[f"class {c}"] = int(mask[c].sum())
        if len(classes) == 2:
            row["shared"] = int((mask[classes[0]] & mask[classes[1]]).sum())
            row["union"] = int((mask[classes[0]] | mask[classes[1]]).sum())
        rows.append(row)
    return rows


def link_kinds(codes_before: np.ndarray, codes_after: np.ndarray) -> np.ndarray:
    """Units after × units before: which module keeps each connection from the point before to the next
    (codes as units', plus ``UNION_ONLY``: kept by neither module, only by the composed model of both)."""
    before, after = np.asarray(codes_before), np.asarray(codes_after)
    kept_a = np.outer(after & ONLY_A, before & ONLY_A) > 0
    kept_b = np.outer(after & ONLY_B, before & ONLY_B) > 0
    kinds = kept_a.astype(np.int8) + 2 * kept_b.astype(np.int8)
    union = np.outer(after > 0, before > 0)
    kinds[union & (kinds == NEITHER)] = UNION_ONLY
    return kinds


def strongest_links(weights: np.ndarray, kinds: np.ndarray, k: int = TOP_LINKS) -> list[tuple[int, int, int]]:
    """The connections to draw between two consecutive points: of each kind a module keeps (not ``NEITHER``), the
    ``k`` with the largest weight magnitude, as (unit after, unit before, kind), strongest first per kind."""
    weights = np.abs(np.asarray(weights, dtype=np.float64))
    chosen = []
    for kind in (BOTH, ONLY_A, ONLY_B, UNION_ONLY):
        rows, cols = np.nonzero(kinds == kind)
        if not len(rows) or k <= 0:
            continue
        values = weights[rows, cols]
        top = np.argsort(-values, kind="stable")[:k]
        chosen += [(int(rows[i]), int(cols[i]), kind) for i in top]
    return chosen


def cell_size(units: int, max_cells: int = MAX_CELLS) -> int:
    """Units per cell of a strip: 1 up to ``max_cells`` units, else the fewest that fit in ``max_cells`` cells."""
    return max(1, math.ceil(units / max_cells))


def top_images(values: np.ndarray, unit: int, k: int = TOP_IMAGES) -> list[int]:
    """Indices of the ``k`` images (rows of ``values``, images × units) on which ``unit`` is most active, most
    active first (ties: the lower index first)."""
    column = np.asarray(values)[:, unit]
    return [int(i) for i in np.argsort(-column, kind="stable")[:k]]


def clicked_unit(selection: Any, points: Sequence[str]) -> tuple[str, int] | None:
    """(point, unit) of the cell clicked on the map (``module_map`` of ``points``), from the chart's selection state
    (``{"selection": {"points": [{"customdata": [strip, unit], ...}]}}``); None when no cell is selected."""
    try:
        chosen = selection["selection"]["points"]
    except (KeyError, TypeError):
        return None
    for point in chosen or ():
        data = point.get("customdata") if isinstance(point, dict) else None
        if isinstance(data, dict):  # a typed array reaches Python as {"0": …, "1": …}
            data = [data.get(k, data.get(int(k))) for k in ("0", "1")]
        try:
            strip, unit = int(data[0]), int(data[1])
        except (TypeError, ValueError, IndexError):
            continue
        if 0 <= strip < len(points) and unit >= 0:
            return points[strip], unit
    return None


def short_name(point: str) -> str:
    """A point's name on the map's axis: without the ``.relu`` every zoo point ends with."""
    return point[: -len(".relu")] if point.endswith(".relu") and len(point) > len(".relu") else point


def _unit_names(classes: Sequence[int], class_names: Sequence[str]) -> dict[int, str]:
    a = f"class {class_names[classes[0]]}"
    if len(classes) == 1:
        return {ONLY_A: f"kept by {a}'s module", NEITHER: "not kept"}
    b = f"class {class_names[classes[1]]}"
    return {BOTH: "kept by both (shared)", ONLY_A: f"{a} only", ONLY_B: f"{b} only", NEITHER: "kept by neither"}


UNION_LINKS = "union only (connections)"


def _cell_text(point: str, cell: int, size: int, units: int, count: int) -> str:
    point = html_escape(point)
    if size == 1:
        return f"{point}, unit {cell}"
    last = min(units, (cell + 1) * size) - 1
    return f"{point}, units {cell * size}–{last}: {count} of them"


def module_map(masks: Mapping[str, np.ndarray], classes: Sequence[int], class_names: Sequence[str],
               links: Mapping[str, tuple[np.ndarray, int]] | None = None, selected: tuple[str, int] | None = None,
               max_cells: int = MAX_CELLS, top_k: int = TOP_LINKS, title: str | None = None,
               height: int = MAP_HEIGHT) -> go.Figure:
    """The module map: one strip per point of ``masks`` (in their order, which is forward order), its units from
    top (unit 0) to bottom, coloured by which of the modules of ``classes`` (one or two logit indices) keep them.

    A strip of more than ``max_cells`` units is drawn in cells of ``cell_size`` consecutive units, each cell split
    left to right in proportion to its units' codes. Every cell part is a bar whose ``customdata`` is (the strip's
    index, the first unit of that code in the cell), so a click names a unit (``clicked_unit``). ``links``
    (point → (its units × the previous point's units weight magnitudes, weight layers on the path), see
    ``engine.map_links``) draws, between consecutive strips, the ``top_k`` strongest connections of each kind
    (``strongest_links``). ``selected`` (point, unit) is marked with an arrow. Each strip's label carries its kept
    counts (``layer_counts``); with more than ``STAGGER`` strips, every other label sits two lines lower, so that
    neighbours never run together (projector text included)."""
    points = list(masks)
    codes = unit_codes(masks, classes)
    class_names = [html_escape(str(name)) for name in class_names]  # plotly would render HTML in a name
    names = _unit_names(classes, class_names)
    parts: dict[int, list[dict[str, np.ndarray]]] = {value: [] for value in names}
    where: dict[str, tuple[int, int]] = {}  # point → (units per cell, cells)
    for x, point in enumerate(points):
        code = codes[point]
        size = cell_size(len(code), max_cells)
        cells = math.ceil(len(code) / size)
        where[point] = size, cells
        grid = np.full(cells * size, -1, dtype=np.int8)
        grid[:len(code)] = code
        grid = grid.reshape(cells, size)
        in_cell = (grid >= 0).sum(1)
        left = np.full(cells, x - STRIP / 2)
        for value in names:  # BOTH, ONLY_A, ONLY_B, NEITHER: left to right within a cell
            hits = grid == value
            count = hits.sum(1)
            share = count / in_cell * STRIP
            shown = np.flatnonzero(count)
            parts[value].append(dict(x=share[shown], base=left[shown], y=1 - (shown + 0.5) / cells,
                                     strip=np.full(len(shown), x), unit=shown * size + hits[shown].argmax(1),
                                     count=count[shown], cell=shown))
            left = left + share
    fig = go.Figure()
    for value, chunks in parts.items():
        part = {key: np.concatenate([chunk[key] for chunk in chunks]) for key in chunks[0]}
        hover = [_cell_text(points[strip], int(cell), where[points[strip]][0], len(codes[points[strip]]), int(count))
                 for strip, cell, count in zip(part["strip"], part["cell"], part["count"], strict=True)]
        fig.add_trace(go.Bar(orientation="h", name=names[value], legendgroup=str(value), x=part["x"], y=part["y"],
                             base=part["base"], width=np.array([0.86 / where[points[s]][1] for s in part["strip"]]),
                             customdata=np.stack([part["strip"], part["unit"]], axis=1).tolist(), hovertext=hover,
                             marker=dict(color=MAP_COLOURS[value], line_width=0),
                             hovertemplate=f"%{{hovertext}}: {names[value]}<extra></extra>"))
    drawn: dict[int, tuple[list, list]] = {kind: ([], []) for kind in (BOTH, ONLY_A, ONLY_B, UNION_ONLY)}
    for before, point in zip(points[:-1], points[1:], strict=True):
        if not links or point not in links:
            continue
        weights, _hops = links[point]
        x0, x1 = points.index(before) + STRIP / 2, points.index(point) - STRIP / 2
        (size_b, cells_b), (size_a, cells_a) = where[before], where[point]
        for after_unit, before_unit, kind in strongest_links(weights, link_kinds(codes[before], codes[point]), top_k):
            xs, ys = drawn[kind]
            xs += [x0, x1, None]
            ys += [1 - (before_unit // size_b + 0.5) / cells_b, 1 - (after_unit // size_a + 0.5) / cells_a, None]
    for kind, (xs, ys) in drawn.items():
        if xs:
            # a connection takes the colour (and the legend entry) of the units a module keeps at both its ends
            own = kind in names
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=names[kind] if own else UNION_LINKS,
                                     legendgroup=str(kind), showlegend=not own, hoverinfo="skip",
                                     line=dict(color=MAP_COLOURS[kind], width=1.2), opacity=0.5))
    if selected is not None and selected[0] in where:
        point, unit = selected
        size, cells = where[point]
        # from the gap after the strip (over lines, not cells; after the last strip, in the right margin)
        fig.add_annotation(x=points.index(point) + STRIP / 2, y=1 - (unit // size + 0.5) / cells,
                           text=f"unit {unit}", showarrow=True, arrowhead=2, arrowwidth=2, ax=40, ay=0,
                           font=dict(size=13), bgcolor="white")
    ticks = []
    for row in layer_counts(masks, classes):
        counts = f"{row[f'class {classes[0]}']} kept" if len(classes) == 1 else \
            f"{row['shared']} shared · ∪ {row['union']}"
        lower = "<br><br>" if len(points) > STAGGER and len(ticks) % 2 else ""
        ticks.append(f"{lower}{html_escape(short_name(row['point']))} ({row['units']})<br>{counts}")
    fig.update_layout(barmode="overlay", bargap=0, plot_bgcolor="white", hovermode="closest", clickmode="event+select")
    fig.update_xaxes(tickvals=list(range(len(points))), ticktext=ticks, range=[-0.6, len(points) - 0.4], tickangle=0,
                     showgrid=False, zeroline=False)
    fig.update_yaxes(range=[-0.01, 1.01], showticklabels=False, showgrid=False, zeroline=False)
    legend_above(fig)
    if title is None:
        title = (f"Module of class {class_names[classes[0]]}" if len(classes) == 1 else
                 f"Modules of class {class_names[classes[0]]} and class {class_names[classes[1]]}")
    bottom = 100 if len(points) > STAGGER else 60
    return layout(fig, title, None, "units (unit 0 on top)", height=height, t=90, b=bottom, r=80)


def map_caption(units: Mapping[str, int], links: Mapping[str, tuple[np.ndarray, int]], classes: Sequence[int],
                max_cells: int = MAX_CELLS, top_k: int = TOP_LINKS) -> str:
    """What the module map draws, in words: how big layers are binned and which connections the lines are."""
    points = list(units)
    binned = [p for p in points if cell_size(units[p], max_cells) > 1]
    parts = ["Each strip is one activation point (forward order, left to right), one cell per unit, unit 0 on top."]
    if binned:
        parts.append(f"Layers of more than {max_cells} units are drawn in {max_cells} cells or fewer of consecutive "
                     "units, each cell split in proportion to which modules keep its units (" +
                     ", ".join(f"{short_name(p)}: {cell_size(units[p], max_cells)} units a cell" for p in binned) +
                     ").")
    gaps = [p for p in points[1:] if p in links]
    kinds = "of the module" if len(classes) == 1 else "of each kind (both keep, only one keeps, only the union keeps)"
    if gaps:
        hops = {links[p][1] for p in gaps}
        one = ("|w| of the conv or linear between them, a conv's summed over its kernel and, through a flatten, a "
               "channel's positions summed")
        two = ("where two weight layers join them (a ViT's fc2, then across the residual stream the next block's "
               "fc1), the product of their |w|, with attention and norms passed over")
        how = one if hops == {1} else two if 1 not in hops else f"{one}; {two}"
        parts.append(f"Lines: between two consecutive layers, the {top_k} strongest connections {kinds}, by weight "
                     f"magnitude ({how}); the rest are not drawn.")
    missing = [short_name(p) for p in points[1:] if p not in links]
    if missing:
        parts.append("No lines into " + ", ".join(missing) + ": no weight path of at most two layers was found "
                     "from the layer before it.")
    return " ".join(parts)
