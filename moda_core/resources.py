"""Where the files that ship with the package are: the embedded data set, the bundled demo runs and
the comparison table (package data of ``moda_core.assets``, found through ``importlib.resources``).

The paths are real folders and files: the package is installed unzipped (a wheel, or an editable
install of a checkout, where ``moda_core.assets`` is the checkout's ``assets/`` folder).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from moda_core.errors import ModaError


def assets_dir() -> Path:
    """The folder of ``moda_core.assets``."""
    try:
        folder = resources.files("moda_core.assets")
    except ModuleNotFoundError:
        raise ModaError("moda_core.assets is missing: install the package (pip install .) "
                        "instead of importing it from a bare checkout") from None
    path = Path(str(folder))
    if not path.is_dir():
        raise ModaError(f"moda_core.assets is not a folder on disk ({folder}): install the package unzipped")
    return path


def mnist5k_path() -> Path:
    """The embedded 5,000 MNIST digits (``mnist5k.npz``)."""
    return assets_dir() / "mnist5k.npz"


def demo_runs_dir() -> Path:
    """The bundled demo runs (a runs folder, read-only for the dashboard)."""
    return assets_dir() / "demo"


def compare_table_path() -> Path:
    """The shipped comparison table (``bench/compare.py`` writes it; the Compare page shows it)."""
    return assets_dir() / "results" / "compare.csv"
