"""The README says which models the browser's training form offers, and it is what the form offers
(``dashboard.training.LIMITS``, which sets the form's model picker and binds Resume too)."""
from __future__ import annotations

import re
from pathlib import Path

from dashboard.training import LIMITS

README = Path(__file__).resolve().parent.parent / "README.md"
# how the README names each zoo model
NAMES = {"lenet5": "LeNet-5", "mlp": "MLP", "vgg11": "VGG11", "resnet18": "ResNet-18", "mobilenet": "MobileNet",
         "vit": "ViT"}


def test_readme_names_every_model_the_training_form_offers_and_no_other():
    text = " ".join(README.read_text().split())
    sentence = re.search(r"train a new run with the form's limits \((.*?)\) into the first configured folder", text)
    assert sentence, "the README's sentence on the browser's training form moved"
    limits = sentence.group(1)
    assert set(LIMITS.models) <= set(NAMES), "a model the form offers has no README name here"
    assert [m for m, name in NAMES.items() if re.search(rf"\b{re.escape(name)}\b", limits)] == list(LIMITS.models)
    assert f"up to {LIMITS.max_epochs} epochs" in limits
    assert all(f"×{w:g}" in limits for w in LIMITS.widths)
