"""The Swap page's figure: per-class accuracy of the weak model before a module swap and after it, per
repair strategy."""
from __future__ import annotations

from typing import Mapping, Sequence

import plotly.graph_objects as go

from dashboard.figures.style import OKABE_ITO, SWAP_BEFORE_COLOUR, SWAP_COLOURS, layout, legend_above
from dashboard.plain_text import html_escape

ZERO_BAR = 0.005  # an accuracy under half a percent draws no visible bar: it gets a "0%" label


def swap_bars(class_names: Sequence[str], before: Sequence[float], afters: Mapping[str, Sequence[float]],
              target: str | None = None, height: int = 450) -> go.Figure:
    """Per-class test accuracy before a module swap and after it, one "after" series per strategy
    (``afters``: strategy → accuracies in ``class_names`` order), as grouped bars; an arrow marks the
    target class; a bar at 0% (no height to see) is labelled "0%". ``height``: px.

    The x axis is categorical in the given order (class names such as "3" must never be read as
    positions), and the arrow's x is the target's position on that axis: plotly places annotations on
    a category axis by serial number, so the name "3" would point at the fourth category. Names are text,
    never HTML."""
    names = [html_escape(n) for n in class_names]
    def zeros(values: Sequence[float]) -> dict:  # "0%" over a bar too low to see, outside and not shrunk
        return dict(text=["0%" if v < ZERO_BAR else "" for v in values], textposition="outside",
                    constraintext="none", cliponaxis=False)

    fig = go.Figure([go.Bar(x=names, y=list(before), name="before (weak model)", marker_color=SWAP_BEFORE_COLOUR,
                            hovertemplate="class %{x}: %{y:.1%}<extra>before</extra>", **zeros(before))])
    for k, (strategy, after) in enumerate(afters.items()):
        fig.add_trace(go.Bar(x=names, y=list(after), name=f"after: {html_escape(strategy)}",
                             marker_color=SWAP_COLOURS.get(strategy, OKABE_ITO[4 + k % 4]),
                             hovertemplate=f"class %{{x}}: %{{y:.1%}}<extra>{html_escape(strategy)}</extra>",
                             **zeros(after)))
    if target is not None and html_escape(target) in names:
        position = names.index(html_escape(target))
        top = max([before[position], *(after[position] for after in afters.values())])
        fig.add_annotation(x=position, y=top, yshift=4, text=f"target (class {html_escape(target)})", showarrow=True,
                           arrowhead=2, ay=-30)
    fig.update_layout(barmode="group", yaxis_tickformat=".0%", yaxis_range=[0, 1.15])
    legend_above(fig)
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=names)
    return layout(fig, "Per-class test accuracy before and after the swap, per strategy", "class", "accuracy",
                  height=height)
