"""How MODA works: the three training terms, the firing rule, modules and overlap, and why a composed module
is the union of masks — a page to read before (or while) showing the others."""
from __future__ import annotations

import streamlit as st

from dashboard import ui
from dashboard.figures.compose import UNION_COLOUR_NAMES, union_cells, union_figure

st.title("How MODA works")
st.caption("MODA (activation-driven modular training) trains a network so that each class ends up using its own "
           "small part of it — a *module* — which can then be cut out, combined with others, or swapped.")

st.subheader("1. Training: cross-entropy plus three terms on the activations")
st.markdown(
    "Every ReLU layer is an *activation point*; a conv channel counts as one unit (its mean |activation| over "
    "the image). For each batch, MODA compares the activation vectors of pairs of images:\n"
    "- **Affinity** (weight α): images of the *same* class should activate the same units — "
    "1 − their mean cosine similarity.\n"
    "- **Dispersion** (weight β): images of *different* classes should activate different units — "
    "their mean cosine similarity.\n"
    "- **Compactness** (weight γ): few units should fire at all — the mean absolute activation.\n\n"
    "Loss = cross-entropy + α·affinity + β·dispersion + γ·compactness (defaults 1, 1, 0.3). With "
    "α = β = γ = 0 it is standard training: the *standard twin* the other pages compare against.")

st.subheader("2. Decomposition: the firing rule")
st.markdown(
    "After training, every training image goes through the network once. A unit's *rate* for a class is the "
    "share of that class's images on which it fires (is non-zero). **A unit joins the class's module when its "
    f"rate ≥ τ** (default τ = {ui.DEFAULT_TAU:g}). The class × unit table of rates is the heatmap on the "
    "**Activations** page; "
    "the **τ trade-off** page shows what moving τ does.")

st.subheader("3. Modules and overlap")
st.markdown(
    "A class's **module** is the network restricted to the units the class keeps at every point: a layer "
    "keeps the weights from the kept units of the previous point to its own kept units. **Module size** is its "
    "share of the full model's weights. The **overlap** of two classes is the share of weights that *both* "
    "modules keep (the **Modules** page; the **Modules over training** page follows both over the "
    "epochs).")
st.markdown(
    "**Why early layers are shared by every class.** The first convolutions detect strokes, edges and blobs "
    "that every digit is made of, so on every class's images almost all of their units fire: every module keeps "
    "them, and the overlap there is the whole layer. Classes separate in the later layers, where units stand "
    "for class-specific shapes — MODA's terms push exactly those apart. (The Activations page opens on the point "
    "whose units are most class-specific, with a chart of how τ changes every layer.)")

st.subheader("4. Composing: a module for several classes is the union of their masks")
st.markdown(
    "A model for classes A and B keeps, at every point, the units that A **or** B keeps, and every layer keeps "
    "the weights between its kept inputs and kept outputs. So its size is **not** size(A) + size(B) − "
    "overlap(A, B): a layer's weights depend on *both* its input and output units, and the union also keeps the "
    "*cross* weights — from A's inputs to B's outputs and from B's inputs to A's outputs — that neither module "
    "keeps alone.")
st.markdown(
    "**A worked example**: one fully-connected layer with 4 inputs and 4 outputs. Module A keeps inputs {1, 2} "
    "and outputs {1, 2}: 2 × 2 = **4** weights. Module B keeps inputs {2, 3} and outputs {2, 3}: **4** weights. "
    "They share input 2 → output 2: overlap **1**. \"A + B − overlap\" would be 7, but the composed module keeps "
    "inputs {1, 2, 3} × outputs {1, 2, 3} = **9** weights: the two extra ones (1 → 3 and 3 → 1, marked "
    f"*union*, {UNION_COLOUR_NAMES[4]} below) "
    "belong to neither module. The **Compose** page measures the real, physically smaller network built this way.")
cells = union_cells(inputs_a=[1, 1, 0, 0], outputs_a=[1, 1, 0, 0], inputs_b=[0, 1, 1, 0],
                    outputs_b=[0, 1, 1, 0])
ui.chart(union_figure(cells), key="how_union")
st.caption("Rows: the layer's output units; columns: its input units; one square per weight. The union keeps "
           f"every coloured square: A's ({UNION_COLOUR_NAMES[1]}, marked A), B's ({UNION_COLOUR_NAMES[2]}, B), both "
           f"({UNION_COLOUR_NAMES[3]}, both) and the cross terms ({UNION_COLOUR_NAMES[4]}, union).")
