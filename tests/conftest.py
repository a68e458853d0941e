"""Shared fixtures: small trained runs on the embedded data set, made once per test session."""
from __future__ import annotations

import pytest
import torch

from moda_core.train import TrainConfig, train

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def lenet_moda_run(runs_dir):
    """LeNet-5 trained with MODA for 3 epochs on mnist5k (a few seconds on CPU)."""
    return train(TrainConfig(model="lenet5", epochs=3, seed=0, checkpoint_every=1), runs_dir, "lenet-moda")
