"""Multi-process training with torchrun (gloo on loopback) and the sharding behind it."""
import json
from pathlib import Path

import pytest
import torch
from helpers import torchrun

from moda_core.decompose import decompose
from moda_core.distributed import Context, shard_batches
from moda_core.io import read_tensor_metadata
from moda_core.runs import load_run
from moda_core.train import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("n,world,batch", [(4000, 2, 128), (4001, 2, 128), (10, 3, 4), (7, 2, 2), (5, 1, 128),
                                           (1001, 4, 64), (3, 2, 128)])
def test_every_sample_once_per_epoch_and_equal_steps(n, world, batch):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    per_rank = [shard_batches(order, batch, Context(rank, world)) for rank in range(world)]
    assert len({len(batches) for batches in per_rank}) == 1, "ranks disagree on the number of steps"
    assert all(len(b) > 0 for batches in per_rank for b in batches)
    seen = torch.cat([b for batches in per_rank for b in batches])
    assert sorted(seen.tolist()) == list(range(n))
    largest = max(len(b) for batches in per_rank for b in batches)
    assert largest <= -(-batch // world) + 1 or len(per_rank[0]) == 1


def test_single_process_batches_follow_the_permutation():
    order = torch.randperm(300)
    batches = shard_batches(order, 128, Context())
    assert len(batches) == 3 and torch.equal(torch.cat(batches), order)


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path):
    result = torchrun("train", "--model", "lenet5", "--epochs", "2", "--runs-dir", str(tmp_path), "--name", "ddp",
                      "--json")
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, "only rank 0 reports"
    summary = json.loads(lines[0])
    run = load_run(tmp_path / "ddp")
    assert run.config["world_size"] == 2 and run.epoch == 2
    single = train(TrainConfig(model="lenet5", epochs=2), tmp_path, "single")
    assert abs(summary["test_accuracy"] - single.metrics["test_accuracy"]) < 0.05
    assert summary["test_accuracy"] > 0.7

    # distributed decomposition == single-process decomposition of the same weights, exactly
    torchrun("decompose", str(tmp_path / "ddp"), "--recompute", "--json")
    stored = decompose(load_run(tmp_path / "ddp"))  # reads the files rank 0 wrote
    assert read_tensor_metadata(tmp_path / "ddp" / "rates.safetensors")["weights"]
    fresh = decompose(load_run(tmp_path / "ddp"), recompute=True, save=False)
    for point in fresh.rates:
        assert torch.equal(stored.rates[point], fresh.rates[point]), point
        assert torch.equal(stored.masks[point], fresh.masks[point]), point

    # resuming under torchrun continues the same run
    torchrun("train", "--model", "lenet5", "--epochs", "3", "--runs-dir", str(tmp_path), "--name", "ddp", "--resume")
    resumed = load_run(tmp_path / "ddp")
    assert resumed.epoch == 3 and [row["epoch"] for row in resumed.history] == [1, 2, 3]
