"""Plotly figures of the dashboard, as pure functions of arrays and tables (no Streamlit, no moda_core
calls): data in, a ``plotly.graph_objects.Figure`` out. Tests call them directly with hand-made data.

One module per page family; import a figure from the module that owns it
(``from dashboard.figures.modules import overlap_heatmap``):

- ``style``: the palette, the shared layout and legend placement every other module uses;
- ``activations``: rate heatmaps and one test image's firing units (Activations);
- ``modules``: module sizes, the overlap heatmap and the overlap per layer (Modules);
- ``training``: losses and accuracy per epoch, modules over training, the τ trade-off;
- ``compose``: a composed module vs the full model, and the union of two modules' masks (How MODA works);
- ``swap``: per-class accuracy before and after a module swap;
- ``compare``: standard training vs MODA vs MwT from the comparison table.
"""
