"""``python -m moda_core``: the command line (``moda_core.cli``), as the ``moda`` command runs it.

``python -m`` puts the current folder first on the module path, so a folder someone sent (a runs folder with a
``torch/`` or ``numpy/`` next to it) could shadow what the command imports. It is taken off again before anything
else is imported; a model builder is looked for there only from a package the person allowed
(``moda_core.import_policy``)."""
import os
import sys

sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]

from moda_core.cli import main  # noqa: E402

raise SystemExit(main())
