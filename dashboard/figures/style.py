"""The look every dashboard figure shares: the palette, the page layout and where legends go.

Colour scales stay ordered in greyscale and for colour-blind viewers (viridis for rates and counts,
cividis for overlaps and masks); categories take Okabe–Ito colours. Every colour a figure uses is
named here, so that one run, method or strategy keeps its colour on every page.
"""
from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go

RATE_SCALE = "Viridis"
OVERLAP_SCALE = "Cividis"
# Okabe–Ito: a categorical palette that colour-blind viewers can tell apart
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
# two colours that differ in lightness as well as hue (Okabe–Ito blue and orange): run A / run B, before / after
PAIR_COLOURS = (OKABE_ITO[0], OKABE_ITO[1])
# outlines of the cells a class module keeps on the rate heatmap
OUTLINE_COLOUR = "#000000"
# lines between groups of units on the rate heatmap
SEPARATOR_COLOUR = "#444444"
# a reference that is not a method (the standard model restricted to the same class pairs): a neutral grey,
# lighter than every method colour; reference lines (standard training = 1, the pages' τ) darker
REFERENCE_COLOUR = "#999999"
REFERENCE_LINE = "#555555"
# the outline of a legend's square markers
LEGEND_MARKER_LINE = "#666666"

# One name (the method's label) and one colour per training method on every figure, in the registry's order:
# standard training orange and MODA blue, MwT bluish green. Methods outside the registry get the remaining
# Okabe–Ito colours in order of appearance.
# The names and labels are moda_core.methods' registry's, written out so that drawing a figure never imports
# torch (the landing page renders before it is loaded); tests/test_figures.py checks that they agree.
METHOD_LABELS = {"standard": "standard training", "moda": "MODA", "mwt": "MwT"}
METHODS = tuple(METHOD_LABELS)
METHOD_COLOURS = {"standard": OKABE_ITO[1], "moda": OKABE_ITO[0], "mwt": OKABE_ITO[2]}

# the Swap page: the weak model's accuracy, then one "after" series per repair strategy (the three strategies
# keep one colour each and stay apart from the orange "before"); other strategies take the later colours
SWAP_BEFORE_COLOUR = OKABE_ITO[1]
SWAP_COLOURS = {"calibrate": OKABE_ITO[0], "normalize": OKABE_ITO[3], "affine": OKABE_ITO[2]}

# How MODA works' weight grid, by the codes of ``compose.UNION_CELLS``: kept by neither (light grey), only
# module A, only module B, both (black), only the union
UNION_COLOURS = ("#F2F2F2", OKABE_ITO[0], OKABE_ITO[1], "#000000", OKABE_ITO[5])

TEMPLATE = "plotly_white"
MARGIN = dict(l=60, r=20, t=60, b=50)


def method_label(method: str) -> str:
    """How figures name a training method: its ``Method.label`` (``standard`` → "standard training"); a
    name outside the registry as it is."""
    return METHOD_LABELS.get(method, method)


def method_colours(methods: Sequence[str]) -> dict[str, str]:
    """Colour of each method: fixed for the known ones, the unused Okabe–Ito colours for the rest."""
    spare = iter(c for c in OKABE_ITO if c not in METHOD_COLOURS.values())
    return {m: METHOD_COLOURS.get(m) or next(spare, OKABE_ITO[-1]) for m in methods}


def layout(fig: go.Figure, title: str | None = None, x_title: str | None = None, y_title: str | None = None,
           height: int | None = None, **margin: int) -> go.Figure:
    """The shared look: white template, Okabe–Ito colour cycle, the usual margins (``margin`` overrides
    some sides); the title, axis titles a teacher can read aloud, and the height when given."""
    fig.update_layout(margin={**MARGIN, **margin}, template=TEMPLATE, colorway=list(OKABE_ITO))
    if title is not None:
        fig.update_layout(title=title)
    if x_title is not None:
        fig.update_layout(xaxis_title=x_title)
    if y_title is not None:
        fig.update_layout(yaxis_title=y_title)
    if height:
        fig.update_layout(height=height)
    return fig


def class_rows_height(classes: int) -> int:
    """Height of a heatmap with one row per class."""
    return 140 + 28 * classes


def legend_above(fig: go.Figure, y: float = 1.0) -> None:
    """A horizontal legend just above the plot area (``y`` in plot-area fractions: 1 is its top edge)."""
    fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=y, x=0, title_text=""))


def legend_above_panel_titles(fig: go.Figure) -> None:
    """A horizontal legend above the titles of side-by-side panels, with the top margin it needs."""
    legend_above(fig, 1.12)
    fig.update_layout(margin=dict(t=120))


def legend_below(fig: go.Figure) -> None:
    """A horizontal legend under the plot area (stacked panels, where one above would meet the title)."""
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.08, x=0))


def legend_right(fig: go.Figure) -> None:
    """A vertical legend right of the plot area."""
    fig.update_layout(legend=dict(orientation="v", x=1.02, y=1))


def square_marker(colour: str) -> dict:
    """A legend's square marker of ``colour`` (for a legend entry without points)."""
    return dict(symbol="square", size=14, color=colour, line=dict(color=LEGEND_MARKER_LINE, width=1))
