"""Activations: which units fire for which class, and which units each class module keeps at τ."""
from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import engine, folders, study_jobs, ui
from dashboard.figures.activations import (
    FLOOR_SHOWN,
    SHARED_GROUP,
    UNKEPT_GROUP,
    firing_figure,
    floor_text,
    image_module_match,
    kept_by_tau_figure,
    kept_units_text,
    module_size_figure,
    rate_heatmap,
    unit_groups,
    units_by_class_order,
)
from dashboard.figures.style import method_label
from dashboard.plain_text import plain
from moda_core.decompose import TAU_RANGE
from moda_core.errors import ModaError

st.title("Activations")
st.caption("Every ReLU call in the network's forward pass is an activation point (a ReLU called twice is two "
           "points; a model's GELU or SiLU calls only when it was trained with them as points). A unit's "
           "*activation rate* for a class is the share of that class's training images on which the unit fires; a "
           "class module keeps the units whose rate is at least τ.")

summaries = folders.list_runs()
# on a projector the run, the point and the order share one row, so the slider and the heatmap fit on the screen
top = st.columns([5, 5, 3]) if ui.presenting() else None
with top[0] if top else contextlib.nullcontext():
    spec = ui.pick_run("Run", key="act_run", summaries=summaries, with_checkpoints=True,
                       prefer=(ui.modular_demo_first, ui.is_modular))
if spec is None:
    st.stop()
run = ui.load_or_stop(spec)
names = engine.class_names(spec)
with st.spinner("Measuring activation rates over the training set…"):
    rates = engine.rates(spec)
points = list(rates)

c1, c2 = (top[1], top[2]) if top else st.columns([2, 1])
# opens on the run's most class-specific point (moda_core.decompose.most_class_specific_point), where the heatmap
# shows the modules as blocks; another run keeps the point shown, so that two runs are compared at one layer
point = ui.point_picker(c1, points, engine.class_specific_point(spec), key="act_point",
                        help="The ReLU module, named by its path in the model. The page opens on the most "
                             "class-specific one: where each unit fires for fewest classes.")
order_by = c2.radio("Order units by", ["unit index", "class they serve"], index=1, key="act_order", horizontal=True)

# the run's twin trained the other way (standard for a MODA or MwT run, MODA for a standard one), when the runs
# folders hold one: its units kept per layer vs τ below, and its heatmap beside this one on request
group = study_jobs.twins(summaries, spec)
method = next(iter(group), "")
twin = study_jobs.twin(group)


def side_title(method_name: str, point: str) -> str:
    """A side-by-side heatmap's title, short enough for one line in half the page (both titles of one height)."""
    return f"{SHORT_METHOD.get(method_name, method_name)} at {point}"


def class_rate_heatmap(rates: Any, masks: Any, class_names: list[str], point: str, tau: float,
                       by_class: bool) -> Any:
    """A run's class × unit heatmap at ``point``: its units in index order, or grouped by the class they serve."""
    order = units_by_class_order(rates, masks) if by_class else list(range(rates.shape[1]))
    return rate_heatmap(rates, class_names, point, order, tau, masks,
                        groups=unit_groups(masks, class_names) if by_class else None)


def twin_rate_heatmap(twin_spec: str, point: str, tau: float, by_class: bool) -> Any:
    """The twin's class × unit heatmap at ``point`` and ``tau``, titled with its method (raises ``ModaError`` when
    the twin does not load or has no such point)."""
    twin_rates = engine.rates(twin_spec)
    if point not in twin_rates:
        raise ModaError(f"the twin has no point {point}")
    figure = class_rate_heatmap(twin_rates[point].numpy(), engine.masks(twin_spec, tau)[point],
                                engine.class_names(twin_spec), point, tau, by_class)
    figure.layout.title.text = side_title(twin[0], point) + folders.unfinished_note(summaries, twin_spec)
    return figure


SHORT_METHOD = {"moda": "MODA", "standard": "Standard training", "mwt": "MwT"}
NEAR_MISS = 0.01  # a rate this close under τ looks like τ on the colour scale: the caption says why it is unboxed


def near_miss_text(rates: Any, tau: float) -> str:
    """A sentence for the cells whose rate lies just under τ (they look as lit as kept cells, but are not boxed);
    "" when there are none."""
    near = (rates < tau) & (rates >= tau - NEAR_MISS)
    if not near.any():
        return ""
    highest = float(rates[near].max())
    every = " fire on every one of the class's images" if tau >= 1.0 else \
        f" fire on at least {tau:.0%} of the class's images"
    count = int(near.sum())
    many = count != 1
    return (f" {count} cell{'s look' if many else ' looks'} as lit as the kept ones but {'are' if many else 'is'} "
            f"not boxed: {'they fire' if many else 'it fires'} on just under τ of the class's images (up to "
            f"{highest:.1%}), and a module keeps only units that{every}.")


TWIN_LABEL = {"moda": "MODA", "standard": "Standard", "mwt": "MwT"}  # the twin switch's label: "Standard twin"


@ui.fragment
def tau_view() -> None:
    """Everything τ changes: a slider step reruns only this (the heatmap first), not the pickers above."""
    beside = False
    if twin is None:
        tau = ui.tau_slider("act_tau")
    else:  # the twin's switch on the slider's row: no row of its own above the heatmap (a projector's first screen)
        slider_area, switch_area = st.columns([3, 1], vertical_alignment="bottom")
        with slider_area:
            tau = ui.tau_slider("act_tau")
        beside = switch_area.toggle(f"{TWIN_LABEL.get(twin[0], twin[0])} twin", key="act_beside",
                                    help=f"Beside this heatmap: {ui.run_token(twin[1])}, the same model and data "
                                         f"with {method_label(twin[0])}, at this point and τ.")

    point_rates = rates[point].numpy()
    all_masks = engine.masks(spec, tau)
    point_masks = all_masks[point]
    by_class = order_by == "class they serve"
    kept = point_masks.sum(1)
    st.markdown(f"**At {point}, τ = {tau:.2f}:** {kept_units_text(kept, point_rates.shape[1])}")
    heatmap = class_rate_heatmap(point_rates, point_masks, names, point, tau, by_class)
    twin_heatmap = None
    if beside:
        try:
            twin_heatmap = twin_rate_heatmap(twin[1], point, tau, by_class)
        except ModaError:  # a twin that does not load (or lacks the point): this run's heatmap alone
            twin_heatmap = None
    if twin_heatmap is not None:
        left, right = st.columns(2)
        heatmap.layout.title.text = side_title(method, point)
        ui.chart(heatmap, key="act_heatmap", where=left)
        ui.chart(twin_heatmap, key="act_heatmap_twin", where=right)
    else:
        ui.chart(heatmap, key="act_heatmap")
    st.caption("Colour: how often the unit fires for the class (0–100%, the colour bar). Black boxes: the units that "
               "class's module keeps at this τ. Drag τ to watch modules grow (low τ) or shrink (high τ)."
               + (f" Units are grouped by the one class whose module keeps them; **{SHARED_GROUP}**: kept by "
                  f"two or more modules; **{UNKEPT_GROUP}**: kept by none (a group too narrow for its label is named "
                  "when you point at its units)." if by_class else "") + near_miss_text(point_rates, tau))

    # units kept per layer vs τ, for the run and its twin when the runs folders hold one
    shares = {f"{method_label(method)}: {ui.run_token(spec)}": engine.kept_share_by_tau(spec)}
    shown_twin = twin
    if twin is not None:
        try:
            with st.spinner("Measuring the twin's activation rates…"):
                shares[f"{method_label(twin[0])}: {ui.run_token(twin[1])}"] = engine.kept_share_by_tau(twin[1])
        except ModaError:  # a twin that does not load: the chart shows the run alone
            shown_twin = None
    ui.chart(kept_by_tau_figure(TAU_RANGE, shares, {p: int(r.shape[1]) for p, r in rates.items()}, tau, point),
             key="act_kept_by_tau")
    st.caption("How much moving τ changes each layer's modules: one line per activation point, the mean share of its "
               "units a class module keeps"
               + (f"; solid: this run, dashed: its twin, the same model and data with {method_label(shown_twin[0])}."
                  if shown_twin else " (no twin trained the other way in the runs folders).")
               + " Flat lines are layers τ hardly changes; steep ones are where moving τ grows and shrinks the "
                 "modules.")

    ui.table(pd.DataFrame({"class": names, "units kept": kept.astype(int),
                           "share of units": 100.0 * kept / point_rates.shape[1]}),
             formats={"share of units": "%.1f%%"}, hide_index=True,
             column_config={"share of units": st.column_config.NumberColumn(format="%.1f%%")})
    if engine.composition_blocker(spec) is None:  # module sizes are counted on the model's graph
        sizes = engine.module_metrics(spec, tau)["sizes"]
        floor = engine.module_floor(spec)
        ui.chart(module_size_figure(sizes, names, tau, floor), key="act_sizes")
        st.caption("A module keeps, at every layer, the weights between the units it keeps there and those it keeps "
                   "one layer before (the Modules page compares runs)."
                   + (" " + floor_text(floor) if floor >= FLOOR_SHOWN else ""))

    st.subheader("One test image through the network")
    test_size = len(engine.dataset(spec).test)
    index = ui.image_picker(f"Test image (0–{test_size - 1})", test_size, key="act_image")
    image = engine.image_activations(spec, int(index))
    c1, c2 = st.columns([1, 3])
    c1.image(np.clip(image["image"], 0, 1), caption=f"true: {plain(names[image['label']])}, "
                                                     f"predicted: {plain(names[image['predicted']])}", width=160)
    # The module compared follows the image's prediction whenever the image (or run) changes; a class the
    # visitor picks stays until then (a τ or point change keeps it).
    shown_image = (spec, int(index))
    if (st.session_state.get("act_module_image") != shown_image
            or st.session_state.get("act_module_class") not in names):
        st.session_state["act_module_image"] = shown_image
        st.session_state["act_module_class"] = names[image["predicted"]]
    module_class = c1.selectbox("Compare with the module of class", names, key="act_module_class",
                                help="Follows the predicted class when you pick another image.")
    ui.chart(firing_figure(image["fired"], all_masks, names.index(module_class), module_class),
             key="act_firing", where=c2)
    ui.chart(image_module_match(image["fired"], all_masks, names), key="act_match")
    st.caption("Each cell: of the units that fire for this image at a point, the share that a class's module keeps. "
               "In a well-modularised network the true class's row is the brightest.")


tau_view()
