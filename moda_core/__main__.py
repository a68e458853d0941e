"""``python -m moda_core``: the command line (``moda_core.cli``)."""
from moda_core.cli import main

raise SystemExit(main())
