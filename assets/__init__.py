"""Data that ships inside the installed package as ``moda_core.assets`` (this folder is mapped there by
``pyproject.toml``): the embedded ``mnist5k.npz`` data set, the bundled demo runs (``demo/``) and the
comparison table the dashboard's Compare page shows (``results/``). Code finds them through
``moda_core.resources``, never through the checkout's path.

``make_mnist5k.py`` and ``make_demo.py`` rebuild the data set and the demo runs from a checkout; their
output is committed.
"""
