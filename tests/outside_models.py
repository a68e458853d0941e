"""Outside models for the graph suite: ``bench/outside_models.py``'s families (no zoo model and no other test model
has them), each with the point set and units per point a reader works out by hand (``EXPECTED``: model → [(point,
unit axis, units)]), for 1×28×28 inputs and 10 classes, and builders ``make_<name>`` called as MODA Studio calls a
model of your own (import paths ``outside_models:make_<name>`` with the tests folder on the path)."""
from __future__ import annotations

from torch import nn

from bench.outside_models import CLASSES, MODELS, SLOW  # noqa: F401 - the tests take SLOW from here

# model → [(point, unit axis, units)], worked out by hand from bench/outside_models.py's definitions
EXPECTED = {
    "dense_concat": [("relus.0", 1, 8), ("relus.1", 1, 14), ("relus.2", 1, 20), ("head_relu", 1, 26)],
    "convnext_gelu": [("block.act", 3, 64)],
    "convnext_relu": [("block.act", 3, 64)],
    "mixer": [("blocks.0.token_act", 2, 32), ("blocks.0.channel_act", 2, 48), ("blocks.1.token_act", 2, 32),
              ("blocks.1.channel_act", 2, 48)],
    "se": [("relu1", 1, 12), ("se1.relu", 1, 4), ("relu2", 1, 16), ("se2.relu", 1, 4)],
    "shuffle": [("relu", 1, 12), ("unit.relu1", 1, 12), ("unit.relu2", 1, 12)],
    "in_place": [("relu", 1, 8), ("relu_", 1, 8), ("relu_1", 1, 8), ("relu_2", 1, 10)],
    "pieces": [("relu", 1, 16), ("relu_1", 1, 6), ("relu_2", 1, 10)],
    "clamps": [("relu1", 1, 8), ("relu2", 1, 8), ("relu3", 1, 8)],
    "conv1d": [("relu1", 1, 12), ("relu2", 1, 20)],
    "stochastic": [("relu1", 1, 8), ("relu2", 1, 8), ("relu3", 1, 32)],
    "mobilenet_v3": [("features.1.block.0.2", 1, 8), ("features.1.block.1.activation", 1, 8),
                     ("features.2.block.0.2", 1, 24), ("features.2.block.1.2", 1, 24),
                     ("features.3.block.0.2", 1, 24), ("features.3.block.1.2", 1, 24),
                     *[(f"features.{i}.block.2.activation", 1, n)
                       for i, n in zip(range(4, 12), [8, 16, 16, 8, 16, 24, 40, 40], strict=True)]],
    "efficientnet_b0": None,  # 49 SiLU points: checked by count and axis in the test
}


def _builder(name: str):
    make = MODELS[name][0]

    def build(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        assert (num_classes, in_channels, image_size) == (CLASSES, 1, 28), "these test models are for mnist5k"
        return make()

    build.__name__ = build.__qualname__ = f"make_{name}"
    return build


for _name in MODELS:
    globals()[f"make_{_name}"] = _builder(_name)
