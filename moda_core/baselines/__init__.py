"""Baselines that MODA is compared against, measured with the same metrics (see ``bench/compare.py``).

The training methods themselves (MwT included) live in ``moda_core.methods``; the comparison table's
format lives in ``moda_core.comparison`` (re-exported here for older imports).
"""
from moda_core.comparison import COMPARE_COLUMNS

__all__ = ["COMPARE_COLUMNS"]
