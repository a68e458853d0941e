"""bench/compare.py reuses finished runs only when they were trained with exactly the row's settings."""
from __future__ import annotations

from bench.compare import find_reusable
from moda_core.train import TrainConfig


def test_find_reusable_matches_the_settings(lenet_moda_run):
    folder = lenet_moda_run.path.parent
    found = find_reusable(folder, TrainConfig(model="lenet5", epochs=3, seed=0, track_modular_terms=False))
    assert found is not None  # checkpoints and logging do not matter (another identical run may be found first)
    assert {k: found.config["train"][k] for k in ("model", "epochs", "seed", "alpha", "method")} == {
        "model": "lenet5", "epochs": 3, "seed": 0, "alpha": 1.0, "method": "moda"}
    assert find_reusable(folder, TrainConfig(model="lenet5", epochs=4, seed=0)) is None
    assert find_reusable(folder, TrainConfig(model="lenet5", epochs=3, seed=1)) is None
    assert find_reusable(folder, TrainConfig(model="lenet5", epochs=3, seed=0, alpha=0.0, beta=0.0, gamma=0.0)) is None
    assert find_reusable(folder, TrainConfig(model="lenet5", epochs=3, seed=0, method="mwt")) is None
