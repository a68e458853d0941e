"""The look every dashboard figure shares: the palette, the page layout and where legends go.

Colour scales stay ordered in greyscale and for colour-blind viewers (viridis for rates and counts,
cividis for overlaps and masks); categories take Okabe–Ito colours. Every colour a figure uses is
named here, so that one run, method or strategy keeps its colour on every page.
"""
from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go
import plotly.io as pio

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
# Every figure of this process starts from the white template: plotly applies a default template when it
# creates a figure (a few ms), while assigning one to a figure copies and checks it (30–40 ms a chart, ten
# times over on a page, on every τ step)
pio.templates.default = TEMPLATE


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
    """The shared look: white template (the default of every figure: ``pio.templates.default``), Okabe–Ito
    colour cycle, the usual margins (``margin`` overrides some sides); the title, axis titles a teacher can
    read aloud, and the height when given. One layout update: each costs plotly a check of the whole layout."""
    settings: dict = dict(margin={**MARGIN, **margin}, colorway=list(OKABE_ITO))
    if title is not None:
        settings["title"] = title
    if x_title is not None:
        settings["xaxis_title"] = x_title
    if y_title is not None:
        settings["yaxis_title"] = y_title
    if height:
        settings["height"] = height
    fig.update_layout(**settings)
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


# ----- projector mode: every chart readable from the back of a lecture hall --------------------------------

PROJECTOR_TEXT = 18  # px: the least size of any text on a chart in projector mode
PROJECTOR_TITLE = 22
PROJECTOR_CELL_TEXT = 18  # numbers printed inside heatmap cells and on bars (as large as any chart text)


def _wrapped(text: str, per_line: int) -> tuple[str, int]:
    """``text`` broken at spaces into lines of at most ``per_line`` characters (plotly's ``<br>``); the lines."""
    lines: list[str] = []
    for word in text.replace("<br>", " ").split():
        if lines and len(lines[-1]) + 1 + len(word) <= per_line:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "<br>".join(lines), max(1, len(lines))


def for_projector(fig: go.Figure, width: int = 900) -> go.Figure:
    """``fig`` (changed in place, and returned) for a projector: every text at least ``PROJECTOR_TEXT`` px (titles
    larger; numbers on bars ``PROJECTOR_CELL_TEXT`` or hidden where they do not fit; none in cells of heatmaps wider
    than six columns), the title wrapped to the chart's ``width`` (px, about), and the legend above the plot, next
    to the curves, under the title and above the panels' titles, with the top margin all of it needs."""
    layout = fig.layout

    def at_least(font: object, size: int) -> dict:
        current = getattr(font, "size", None) if font is not None else None
        return dict(size=max(size, current or 0))

    fig.update_layout(font=at_least(layout.font, PROJECTOR_TEXT),
                      legend_font=at_least(layout.legend.font, PROJECTOR_TEXT),
                      hoverlabel_font=dict(size=PROJECTOR_TEXT),
                      uniformtext=dict(minsize=PROJECTOR_CELL_TEXT, mode="hide"))
    rows = max(1, sum(1 for name in layout if name.startswith("yaxis")))
    for name in layout:
        if name.startswith(("xaxis", "yaxis")):
            axis = layout[name]
            fig.layout[name].update(tickfont=at_least(axis.tickfont, PROJECTOR_TEXT),
                                    title_font=at_least(axis.title.font, PROJECTOR_TEXT))
            if name.startswith("yaxis") and axis.title.text:  # a vertical title no taller than its plot
                per_line = max(12, int(0.8 * (layout.height or 450) / rows / 10))
                text, lines = _wrapped(axis.title.text, per_line)
                fig.layout[name].title.text = text
    for annotation in layout.annotations or ():
        annotation.update(font=at_least(annotation.font, PROJECTOR_TEXT))
    for trace in fig.data:
        if trace.type == "heatmap" and trace.z is not None and len(trace.z) and len(trace.z[0]) > 6:
            trace.update(texttemplate=None, text=None)  # numbers that large do not fit in cells that small
        if "textfont" in trace:
            trace.update(textfont=at_least(trace.textfont, PROJECTOR_CELL_TEXT))
        if "colorbar" in trace:
            trace.update(colorbar=dict(tickfont=at_least(trace.colorbar.tickfont, PROJECTOR_TEXT),
                                       title_font=at_least(trace.colorbar.title.font, PROJECTOR_TEXT)))
    if layout.title.text:
        fig.update_layout(title_font=at_least(layout.title.font, PROJECTOR_TITLE))
    return arrange_top(fig, width, PROJECTOR_TITLE, PROJECTOR_TEXT)


def fit_for_page(fig: go.Figure, width: int = 900) -> go.Figure:
    """``fig`` (changed in place, and returned) arranged for a chart ``width`` px wide (about): the title wrapped,
    the legend above the plot under the title with the room its rows need, and numbers on bars hidden where they
    cannot be read."""
    fig.update_layout(uniformtext=dict(minsize=11, mode="hide"))
    return arrange_top(fig, width, 17, 13)


def arrange_top(fig: go.Figure, width: int, title_px: int, legend_px: int) -> go.Figure:
    """Lay out the top of ``fig`` (in place; returned): the title wrapped to ``width``, then the legend's rows
    (horizontal, left-aligned), then the panels' titles, then the plot, with the top margin all of it needs.
    ``title_px`` and ``legend_px`` are the font sizes the texts have."""
    layout = fig.layout
    top = 16
    title = layout.title.text or ""
    height = layout.height or 450
    if title:
        text, lines = _wrapped(title, max(20, int(width / (0.6 * title_px))))
        top += 24 + int(1.4 * title_px) * lines
        fig.update_layout(title=dict(text=text, yref="container", y=1.0 - 26 / height, yanchor="top"))
    panel_titles = any(a.yref == "paper" and (a.y or 0) >= 0.98 and a.yanchor == "bottom"
                       for a in layout.annotations or ())
    shown = [trace.name for trace in fig.data if trace.showlegend is not False and trace.name]
    legend_rows = 0
    if shown and layout.showlegend is not False:
        entries = [2.6 * legend_px + 0.64 * legend_px * len(str(name)) for name in dict.fromkeys(shown)]
        row, legend_rows = 0.0, 1
        for entry in entries:
            if row and row + entry > width - 120:
                legend_rows, row = legend_rows + 1, 0.0
            row += entry
        if max(entries) > (width - 120) / 2:  # plotly then gives long entries rows of their own: room for each
            legend_rows = max(legend_rows, len(entries))
    panels = int(1.9 * legend_px) if panel_titles else 0
    legend_height = int(1.55 * legend_px) * legend_rows + 8 if legend_rows else 0
    margin_top = top + legend_height + panels
    bottom = layout.margin.b if layout.margin.b is not None else MARGIN["b"]
    before = layout.margin.t if layout.margin.t is not None else MARGIN["t"]
    grown = height + max(0, margin_top - before) if layout.height else height
    plot_height = max(100, grown - max(margin_top, before) - bottom)  # the plot's height once the top has its room
    if legend_rows:
        fig.update_layout(legend=dict(orientation="h", yanchor="bottom", x=0, xanchor="left",
                                      y=1.0 + (panels + 4) / plot_height))
    fig.update_layout(margin=dict(t=max(margin_top, before)))
    if layout.height:  # the plot keeps its height: the figure grows by what the top needs more
        fig.update_layout(height=grown)
    return fig
