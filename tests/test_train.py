"""End to end: MODA training on mnist5k, the run store, resume, and bad input."""
import json
import os

import pytest
import torch

from moda_core import io, runs
from moda_core.errors import ModaError
from moda_core.evaluate import accuracy, predict_logits
from moda_core.methods import method_of
from moda_core.models import build_model
from moda_core.runs import list_runs, load_run, run_dataset
from moda_core.train import TrainConfig, start_steps, train, train_step


def test_short_moda_run_learns(lenet_moda_run):
    run = lenet_moda_run
    assert run.epoch == 3 and len(run.history) == 3
    assert run.metrics["status"] == "complete"
    assert run.metrics["test_accuracy"] > 0.85  # chance is 0.10
    first, last = run.history[0], run.history[-1]
    assert last["ce"] < first["ce"]
    assert all(0 <= row["affinity"] <= 1 and row["compactness"] > 0 for row in run.history)
    assert run.config["train"]["alpha"] == 1.0 and run.config["arch"]["name"] == "lenet5"


def test_save_load_round_trip_gives_identical_outputs(lenet_moda_run):
    loaded = load_run(lenet_moda_run.path)
    assert not loaded.model.training
    # the trainer measured the last epoch's test accuracy on its in-memory model, before saving it:
    # the weights read back from disk must reproduce it exactly
    test = run_dataset(loaded).test
    assert accuracy(predict_logits(loaded.model, test), test.labels) == loaded.history[-1]["test_accuracy"]
    assert loaded.history == lenet_moda_run.history


def _one_step(config: TrainConfig) -> dict[str, torch.Tensor]:
    """The parameters after one ``train_step`` from a fixed start on a fixed batch."""
    torch.manual_seed(0)
    method = method_of(config)
    model = method.prepare(build_model(config.model, 1, 28, 10, config.width)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 1, 28, 28, generator=generator), torch.arange(32) % 10
    out = train_step(start_steps(method, config, model), optimizer, x, y)
    assert torch.isfinite(out.loss)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_modular_terms_reach_the_weights_only_when_weighted():
    plain = _one_step(TrainConfig(model="lenet5", alpha=0, beta=0, gamma=0, track_modular_terms=False))
    tracked = _one_step(TrainConfig(model="lenet5", alpha=0, beta=0, gamma=0, track_modular_terms=True))
    assert all(torch.equal(plain[k], tracked[k]) for k in plain)  # logged, detached: no effect on training
    for weights in (dict(alpha=1.0, beta=0.0, gamma=0.0), dict(alpha=0.0, beta=1.0, gamma=0.0),
                    dict(alpha=0.0, beta=0.0, gamma=0.3)):
        moda = _one_step(TrainConfig(model="lenet5", **weights))
        assert not all(torch.equal(plain[k], moda[k]) for k in plain), weights  # each term does reach them


def test_periodic_checkpoints_are_addressable(lenet_moda_run):
    assert runs.list_checkpoints(lenet_moda_run.path) == [1, 2, 3]
    early = load_run(f"{lenet_moda_run.path}@1")
    assert early.epoch == 1 and early.spec.endswith("@1")
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert not torch.equal(early.model(x), lenet_moda_run.model(x))
    with pytest.raises(ModaError, match="no checkpoint for epoch 9; available epochs: \\[1, 2, 3\\]"):
        load_run(f"{lenet_moda_run.path}@9")


@pytest.mark.slow
def test_standard_training_logs_terms_without_using_them(runs_dir):
    run = train(TrainConfig(model="mlp", epochs=1, alpha=0, beta=0, gamma=0, width=0.25), runs_dir, "mlp-std")
    assert run.config["train"]["alpha"] == 0 and run.history[0]["affinity"] > 0
    assert run.metrics["test_accuracy"] > 0.5


class Interrupt(Exception):
    pass


@pytest.mark.slow
def test_resume_continues_from_the_right_epoch_and_matches_uninterrupted(tmp_path):
    config = dict(model="lenet5", epochs=3, width=0.5, seed=1)
    straight = train(TrainConfig(**config), tmp_path, "straight")

    def stop_after_epoch_2(event):
        if event.stage == "epoch" and event.epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(TrainConfig(**config), tmp_path, "resumed", progress=stop_after_epoch_2)
    assert io.read_json(tmp_path / "resumed" / runs.METRICS)["epochs_done"] == 2
    seen = []
    resumed = train(TrainConfig(**config), tmp_path, "resumed", resume=True, progress=seen.append)
    assert {e.epoch for e in seen} == {3}  # only the missing epoch ran
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_existing_run_is_never_overwritten(lenet_moda_run):
    before = (lenet_moda_run.path / runs.MODEL).read_bytes()
    with pytest.raises(ModaError, match="already exists"):
        train(TrainConfig(model="lenet5", epochs=1), lenet_moda_run.path.parent, lenet_moda_run.name)
    assert (lenet_moda_run.path / runs.MODEL).read_bytes() == before


@pytest.mark.slow
def test_nan_loss_stops_with_message_and_keeps_last_epoch(tmp_path, monkeypatch):
    import moda_core.methods.moda as train_module  # where MODA's step computes its terms

    calls = {"n": 0}
    real = train_module.modular_losses

    def poisoned(activations, labels, **kwargs):
        calls["n"] += 1
        aff, dis, com = real(activations, labels, **kwargs)
        return (aff * float("nan"), dis, com) if calls["n"] > 32 else (aff, dis, com)  # epoch 2 onwards

    monkeypatch.setattr(train_module, "modular_losses", poisoned)
    with pytest.raises(ModaError, match="NaN or infinite in epoch 2.*keeps epoch 1"):
        train(TrainConfig(model="lenet5", epochs=3), tmp_path, "nan")
    kept = load_run(tmp_path / "nan")
    assert kept.epoch == 1 and all(torch.isfinite(p).all() for p in kept.model.parameters())


def test_corrupt_and_mismatched_checkpoints_are_clear(lenet_moda_run, tmp_path):
    import shutil

    corrupt = tmp_path / "corrupt"
    shutil.copytree(lenet_moda_run.path, corrupt)
    (corrupt / runs.MODEL).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ModaError, match="corrupt tensor file .*corrupt/model.safetensors"):
        load_run(corrupt)

    mismatched = tmp_path / "mismatched"
    shutil.copytree(lenet_moda_run.path, mismatched)
    config = json.loads((mismatched / runs.CONFIG).read_text())
    config["arch"]["width"] = 2.0
    (mismatched / runs.CONFIG).write_text(json.dumps(config))
    with pytest.raises(ModaError, match="does not match the model in its config: shape mismatch"):
        load_run(mismatched)

    summaries = {s.name: s for s in list_runs(tmp_path)}
    assert "corrupt tensor file" in summaries["corrupt"].error
    assert summaries["corrupt"].status == "broken"
    # listing reads headers only, and still finds the mismatch with the config
    assert "shape mismatch" in summaries["mismatched"].error and summaries["mismatched"].status == "broken"
    assert list_runs(tmp_path / "nowhere") == []


def test_half_written_run_does_not_load(tmp_path):
    (tmp_path / "half").mkdir()
    io.write_json(tmp_path / "half" / runs.CONFIG, {"arch": {"name": "lenet5", "in_channels": 1,
                                                            "image_size": 28, "num_classes": 10}})
    with pytest.raises(ModaError, match="has no weights yet"):
        load_run(tmp_path / "half")
    assert "no finished epoch" in list_runs(tmp_path)[0].error
    with pytest.raises(ModaError, match="no run folder"):
        load_run(tmp_path / "absent")


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "f.json"
    io.write_json(target, {"a": 1})

    def failing(path):
        path.write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        io.atomic_write_with(target, failing)
    assert json.loads(target.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["f.json"]


@pytest.mark.parametrize("kwargs,match", [
    (dict(model="alexnet"), "unknown model 'alexnet'"),
    (dict(dataset="imagenet"), "unknown data set 'imagenet'"),
    (dict(classes=[0, 11]), "out of range"),
    (dict(epochs=0), "epochs must be"),
    (dict(alpha=-1.0), "alpha must be"),
    (dict(dataset="svhn"), "needs a local folder"),
    (dict(device="cuda:0") if not torch.cuda.is_available() else dict(device="tpu"), "device"),
])
def test_bad_training_input(tmp_path, kwargs, match):
    with pytest.raises(ModaError, match=match):
        train(TrainConfig(**{"epochs": 1, **kwargs}), tmp_path, "bad")
    assert not (tmp_path / "bad" / runs.MODEL).exists()
