"""Baselines that MODA is compared against, measured with the same metrics (see ``bench/compare.py``)."""

# The columns of bench/compare.py's table (one row per model × method), which the dashboard reads.
COMPARE_COLUMNS = ("model", "width", "method", "epochs", "seed", "test_accuracy", "seconds_per_epoch",
                   "time_ratio_vs_standard", "mean_module_size", "mean_overlap", "pair_params_fraction",
                   "pair_composed_accuracy", "pair_standard_accuracy")
