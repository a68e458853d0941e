"""Baselines that MODA is compared against, measured with the same metrics (see ``bench/compare.py``)."""
