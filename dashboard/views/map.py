"""Module map: the run's real network as layers of units, one class's module (or two classes' modules, their
shared units and the connections between them) lit on it, and the test images that fire a unit most."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import engine, folders, ui
from dashboard.figures.map import (
    BOTH,
    MAP_COLOUR_NAMES,
    MAP_HEIGHT,
    NEITHER,
    ONLY_A,
    ONLY_B,
    TOP_IMAGES,
    UNION_ONLY,
    clicked_unit,
    layer_counts,
    map_caption,
    module_map,
    short_name,
    top_images,
    unit_codes,
)
from dashboard.plain_text import code, plain

CHART = "map_chart"  # the map's selection (a clicked unit) lives under this session key
CLICKED = "map_clicked"  # the last click acted on, so that a click moves the layer and unit pickers once
IMAGE_PIXELS = 112  # a test image's side on the page
PROJECTOR_HEIGHT = 470  # px: the map and its controls on one 1280×800 screen
IMAGES_PER_ROW = 3  # the top images beside the map
PAIR_PARAM, UNIT_PARAM = "pair", "unit"  # the URL's classes lit (?pair=3,5) and unit shown (?unit=POINT:N)


def enlarged(image: np.ndarray) -> np.ndarray:
    """A small test image repeated pixel by pixel to about ``IMAGE_PIXELS`` (sharp, not blurred, on screen)."""
    factor = max(1, IMAGE_PIXELS // max(image.shape[:2]))
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


st.title("Module map")
st.caption("The network itself, left to right: each activation point is a strip of its units. Pick one class to "
           "light its module, or two to see their union, the units they share and the strongest connections "
           "between them. Click a unit to see the test images that fire it most.")

summaries = folders.list_runs()
c1, c2, c3 = st.columns([3, 2, 3])
with c1:
    spec = ui.pick_run("Run", key="map_run", summaries=summaries, with_checkpoints=True,
                       prefer=(ui.modular_demo_first, ui.is_modular),
                       help="A run, or one of its saved checkpoints (RUN @ epoch N).")
if spec is None:
    st.stop()
ui.load_or_stop(spec)
names = engine.class_names(spec)
# ?pair=3,5: the classes lit (logit positions), kept in the URL so a bookmark reopens them
linked = ui.linked_classes(PAIR_PARAM, "map_classes", len(names), 2)
if linked is not None:
    st.session_state["map_classes"] = linked
chosen = st.session_state.get("map_classes")
if not isinstance(chosen, (list, tuple)) or len(chosen) > 2 or any(c not in range(len(names)) for c in chosen):
    st.session_state["map_classes"] = list(range(min(2, len(names))))  # before the widget: no default argument
classes = c2.multiselect("Classes (one, or two to compare)", list(range(len(names))), key="map_classes",
                         max_selections=2, format_func=lambda c: f"class {names[c]}",
                         help="One class: its module. Two: each one's own units, the units both keep, and the "
                              "connections each keeps, both keep or only their union keeps.")
with c3:
    tau = ui.tau_slider("map_tau")
if not classes:
    st.info("Pick one class to see its module, or two to compare theirs.")
    st.stop()
ui.link(PAIR_PARAM, ",".join(str(c) for c in classes))

with st.spinner("Decomposing…"):
    all_masks = engine.masks(spec, tau)
points = [p for p in engine.modular_points(spec) if p in all_masks]
masks = {p: all_masks[p] for p in points}  # forward order
codes = unit_codes(masks, classes)

# the unit shown beside the map: the one last clicked on the map, else the layer and unit pickers' (by default the
# last layer's first unit of the first class's module: a unit that serves that class); ?unit=POINT:N names one
linked_unit = ui.linked_value(UNIT_PARAM, "map_point", "map_unit")
if linked_unit is not None:
    named, _, number = linked_unit.rpartition(":")
    index = ui.url_int(number)
    if named in masks and index is not None and index < len(codes[named]):
        st.session_state["map_point"], st.session_state["map_unit"] = named, index
    else:
        st.info(f"The link's unit {code(linked_unit[:60])} is not one of this run's; showing the default unit.")
clicked = clicked_unit(st.session_state.get(CHART), points)
if clicked is None:  # no cell selected (a second click on a cell unselects it): the next click acts again
    st.session_state.pop(CLICKED, None)
elif clicked != st.session_state.get(CLICKED):
    st.session_state[CLICKED] = clicked
    if clicked[0] in masks:
        st.session_state["map_point"], st.session_state["map_unit"] = clicked
if st.session_state.get("map_point") not in masks:
    st.session_state["map_point"] = points[-1]
    st.session_state.pop("map_unit", None)
point = st.session_state["map_point"]
units = len(codes[point])
unit = st.session_state.get("map_unit")
if not isinstance(unit, int) or not 0 <= unit < units:
    kept = np.flatnonzero(codes[point] & ONLY_A)
    unit = int(kept[0]) if len(kept) else 0
st.session_state["map_unit"] = unit

with st.spinner("Reading the weights between the layers…"):
    links = engine.map_links(spec)
fig = module_map(masks, classes, names, links, selected=(point, unit),
                 height=PROJECTOR_HEIGHT if ui.presenting() else MAP_HEIGHT)
# the map and, beside it on the first screen, the test images that fire the unit clicked on it most
map_area, side = st.columns([3, 1])
with map_area:
    ui.chart(fig, key=CHART, on_select="rerun", selection_mode="points")
a = f"class {names[classes[0]]}"
if len(classes) == 1:
    colours = (f"Cells: {MAP_COLOUR_NAMES[ONLY_A]}, kept by {a}'s module; {MAP_COLOUR_NAMES[NEITHER]}, not kept. "
               "Under each layer: its name, its number of units and how many of them the module keeps.")
else:
    b = f"class {names[classes[1]]}"
    colours = (f"Cells and lines: {MAP_COLOUR_NAMES[ONLY_A]}, {a}'s module only; {MAP_COLOUR_NAMES[ONLY_B]}, {b}'s "
               f"only; {MAP_COLOUR_NAMES[BOTH]}, both (shared); {MAP_COLOUR_NAMES[NEITHER]} cells, neither; "
               f"{MAP_COLOUR_NAMES[UNION_ONLY]} lines, connections only the union keeps ({a}'s units to {b}'s, or "
               "back), which a model composed of both classes keeps and neither module does. Under each layer: its "
               "name, its number of units, and how many of them both modules keep (shared) and either keeps (∪).")
map_area.caption(plain(map_caption({p: len(c) for p, c in codes.items()}, links, classes) + " " + colours +
                       " Click a cell for the test images that fire its unit most (beside the map)."))

with side:
    st.markdown("##### What fires a unit")
    pick_layer, pick_unit = st.columns([3, 2])
    point = pick_layer.selectbox("Layer", points, key="map_point", format_func=short_name,
                                 help="An activation point; clicking a cell of the map picks its layer and unit.")
    units = len(codes[point])
    if not 0 <= int(st.session_state.get("map_unit", 0)) < units:  # the layer changed under the unit
        st.session_state["map_unit"] = 0
    unit = int(pick_unit.number_input("Unit", min_value=0, max_value=units - 1, step=1, key="map_unit",
                                      help=f"0–{units - 1}"))
    ui.link(UNIT_PARAM, f"{point}:{unit}")
    with st.spinner("Running the test images through the network…"):
        values = engine.map_activations(spec, point)
    best = top_images(values, unit, TOP_IMAGES)
    # the images first, three to a row, so that they are on the first screen next to the map
    pictures = engine.map_images(spec, best)
    for row in range(0, len(best), IMAGES_PER_ROW):
        for column, index, (image, label) in zip(st.columns(IMAGES_PER_ROW), best[row:row + IMAGES_PER_ROW],
                                                 pictures[row:row + IMAGES_PER_ROW], strict=False):
            column.image(enlarged(image), caption=f"{plain(names[label])} · {values[index, unit]:.2g}",
                         width="stretch")
    code_bits = int(codes[point][unit])
    kept_by = [f"class {names[c]}" for bit, c in zip((ONLY_A, ONLY_B), classes, strict=False) if code_bits & bit]
    others = [f"class {names[c]}" for c in classes if f"class {names[c]}" not in kept_by]
    if len(kept_by) == 2:
        kept_text = "kept by both modules (shared)"
    elif kept_by:
        kept_text = f"kept by {kept_by[0]}'s module" + (f", not by {others[0]}'s" if others else "")
    else:
        kept_text = f"not kept by {' or '.join(others)}'s module"
    rates = engine.rates(spec)[point][:, unit]
    fires = "; ".join(f"fires on {float(rates[c]):.0%} of class {names[c]}'s training images" for c in classes)
    st.markdown(plain(f"Unit {unit} of {point}: {kept_text} at τ = {tau:.2f}; {fires}."))
    st.caption(f"Above: the {len(best)} of the first {len(values)} test images on which this unit is most active "
               "(its mean activation over the image's positions or tokens), most active first; each with its label "
               "and that activation.")

with st.expander("Units kept per layer", expanded=len(classes) == 2):
    table = pd.DataFrame(layer_counts(masks, classes)).rename(
        columns={"point": "layer", **{f"class {c}": f"class {names[c]}" for c in classes}})
    ui.table(table, hide_index=True)
