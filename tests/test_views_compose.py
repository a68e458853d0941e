"""Compose of a single class: a module with one logit is always "right" (its logit is the argmax), so its
accuracy says nothing. The report gives a one-vs-rest AUC on all test images instead, for the module and for
the full model's logit of the class; the page and its bar chart show that, never "Accuracy 100%"."""
from __future__ import annotations

import itertools
import re

import pytest
import torch
from helpers import DEMO, NUM_CLASSES, charts, masked_logits, open_page, random_masks, randomised, texts

from dashboard.figures.compose import compose_bars
from moda_core.data import Split
from moda_core.metrics import compose_report, one_vs_rest_auc


def brute_force_auc(scores: list[float], positive: list[bool]) -> float:
    """Every (positive, other) pair: 1 when the positive scores higher, ½ on a tie."""
    pairs = [(a, b) for (a, p), (b, q) in itertools.product(zip(scores, positive, strict=True), repeat=2)
             if p and not q]
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs)


@pytest.mark.parametrize("seed", range(4))
def test_one_vs_rest_auc_is_the_share_of_pairs_ranked_right(seed):
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 6, (60,), generator=generator).float()  # many ties
    positive = torch.rand(60, generator=generator) < 0.3
    assert one_vs_rest_auc(scores, positive) == pytest.approx(brute_force_auc(scores.tolist(), positive.tolist()))
    assert one_vs_rest_auc(positive.float(), positive) == 1.0
    assert one_vs_rest_auc(-positive.float(), positive) == 0.0
    assert torch.isnan(torch.tensor(one_vs_rest_auc(scores, torch.zeros(60, dtype=torch.bool))))


def test_compose_report_of_one_class_measures_one_vs_rest_on_all_test_images():
    model = randomised("lenet5", 1, 28, 28)
    masks = random_masks(model, 0.5, seed=1)
    generator = torch.Generator().manual_seed(0)
    test = Split(torch.randint(0, 256, (90, 1, 28, 28), dtype=torch.uint8, generator=generator),
                 torch.arange(90) % NUM_CLASSES, torch.tensor([0.5]).view(1, 1, 1), torch.tensor([0.25]).view(1, 1, 1))
    report = compose_report(model, masks, [2], test)
    assert report["accuracy"] == 1.0  # one logit, always the argmax: why the page does not show it
    x, _ = test.batch(slice(0, len(test)))
    with torch.no_grad():
        full = model(x)
    positive = test.labels == 2
    assert report["full_one_vs_rest_auc"] == pytest.approx(one_vs_rest_auc(full[:, 2], positive))
    module = masked_logits(model, masks, [2], x)[:, 0]  # what the composed module computes (exactly)
    assert report["one_vs_rest_auc"] == pytest.approx(one_vs_rest_auc(module, positive))
    assert "one_vs_rest_auc" not in compose_report(model, masks, [2, 4], test)  # accuracy means something there


def test_compose_bars_of_one_class_show_the_auc_not_accuracy():
    report = {"params_fraction": 0.1, "flops_fraction": 0.2, "accuracy": 1.0, "full_accuracy": 1.0,
              "one_vs_rest_auc": 0.987, "full_one_vs_rest_auc": 0.9991}
    figure = compose_bars(report)
    assert list(figure.data[0].x) == ["parameters", "FLOPs", "one-vs-rest AUC"]
    assert list(figure.data[1].y) == [0.1, 0.2, 0.987] and list(figure.data[0].y) == [1.0, 1.0, 0.9991]
    assert list(figure.data[1].text) == ["10.0%", "20.0%", "0.987"] and figure.data[0].text[2] == "0.999"
    assert "accuracy" not in figure.layout.yaxis.title.text
    two = compose_bars({"params_fraction": 0.1, "flops_fraction": 0.2, "accuracy": 0.99, "full_accuracy": 0.98})
    assert list(two.data[0].x)[2] == "accuracy"


@pytest.mark.usefixtures("dashboard_pages", "demo_env")
def test_compose_page_of_one_class_shows_no_accuracy_but_the_one_vs_rest_auc():
    app = open_page("compose")
    app.selectbox(key="comp_run").set_value(str(DEMO / "vgg11-moda")).run()
    app.multiselect(key="comp_classes").set_value(["7"]).run()
    assert not app.exception, [e.value for e in app.exception]
    card = app.metric[2]
    assert card.label == "One-vs-rest AUC (all test images)"
    assert "same as the full model (100.0%)" not in card.proto.delta and "Accuracy" not in card.label
    assert 0.5 < float(card.value) <= 1.0 and re.search(r"full model's logit \([01]\.\d{3}\)", card.proto.delta)
    page = texts(app)
    assert "its accuracy would read 100% and say nothing" in page and "image of class 7" in page
    figure = next(iter(charts(app).values()))
    assert figure["data"][0]["x"][2] == "one-vs-rest AUC"
    # two classes: accuracy again
    app.multiselect(key="comp_classes").set_value(["3", "7"]).run()
    assert app.metric[2].label == "Accuracy on these classes" and "say nothing" not in texts(app)


@pytest.mark.slow
@pytest.mark.usefixtures("dashboard_pages")
def test_compose_says_why_flops_fall_less_than_parameters(demo_env):
    """The demo VGG's two-class module keeps 17.9% of the parameters but 45% of the FLOPs: the page says why, with
    the two shares it shows."""
    from dashboard import engine

    app = open_page("compose")
    report = engine.compose(str(DEMO / "vgg11-moda"), 0.9, [0, 1])
    assert report["flops_fraction"] - report["params_fraction"] > 0.2
    shown = texts(app)
    assert f"({report['flops_fraction']:.1%} of the full model's FLOPs, {report['params_fraction']:.1%} of its " \
           "parameters)" in shown
    assert "the late layers hold most of the weights" in shown
