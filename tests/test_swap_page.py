"""The Swap page (module replacement in the browser), headless with Streamlit's AppTest on the demo runs.

Most tests replace ``dashboard.engine.swap`` by a fake that answers at once with a report of the real
shape (the page, not the repair, is under test); the slow test runs the real repairs."""
from __future__ import annotations

import pytest
from helpers import DEMO, charts, open_page, texts

from dashboard import engine
from moda_core.replace import STRATEGIES

pytestmark = pytest.mark.usefixtures("pages_through_app_py")  # tests/conftest.py

WEAK_DEMO = str(DEMO / "swap-weak")
STANDARD = str(DEMO / "vgg11-standard")


@pytest.fixture
def fake_swap(monkeypatch):
    """``engine.swap`` answering a made-up report for the weak run's classes; records its calls."""
    calls = []

    def swap(weak, strong, weak_class_id, strong_class_id, strategy, epochs=5, tau=0.9, progress=None):
        calls.append((weak, strong, weak_class_id, strategy, epochs, tau))
        if progress is not None:  # the stages a real repair reports (moda_core.replace.repair's stage)
            progress(f"{strategy}: {'training the remix layer, epoch 3/5' if strategy == 'calibrate' else 'fitting'}",
                     0.5)
            progress(f"{strategy}: evaluating on 1,000 test images", 0.8)
        classes = engine.run_classes(weak)
        before = {str(c): 0.9 for c in classes}
        before[str(weak_class_id)] = 0.2
        after = {**before, str(weak_class_id): 0.9}
        others = [c for c in before if c != str(weak_class_id)]
        if strategy == "calibrate":
            after[others[-1]] = 0.7
        mean_before = sum(before[c] for c in others) / len(others)
        mean_after = sum(after[c] for c in others) / len(others)
        return {"target_class": weak_class_id, "before": before, "after": after, "target_before": 0.2,
                "target_after": 0.9, "target_gain": 0.7, "other_mean_before": mean_before,
                "other_mean_after": mean_after, "other_mean_change": mean_after - mean_before,
                "other_max_change": 0.2 if strategy == "calibrate" else 0.0,
                "other_max_drop": 0.2 if strategy == "calibrate" else 0.0, "accuracy_before": 0.8,
                "accuracy_after": 0.85, "accuracy_change": 0.05, "module_params_fraction": 0.1,
                "epochs": epochs if strategy == "calibrate" else 0, "strategy": strategy}

    monkeypatch.setattr(engine, "swap", swap)
    return calls


def has_result(app) -> bool:
    return bool(app.get("plotly_chart"))


def test_swap_compares_the_three_strategies_with_the_arrow_on_the_target(demo_env, fake_swap):
    app = open_page("swap")
    assert not has_result(app) and "press **Run swap**" in texts(app)
    app.selectbox(key="swap_weak").set_value(STANDARD).run()
    app.selectbox(key="swap_class").set_value(3).run()
    app.number_input(key="swap_epochs").set_value(7).run()
    app.button(key="swap_go").click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert [c[3] for c in fake_swap] == list(STRATEGIES) and {c[2] for c in fake_swap} == {3}
    table = app.dataframe[0].value
    assert list(table["strategy"]) == list(STRATEGIES)
    assert list(table["target gain"]) == ["+70.0"] * 3
    assert table["others' change"].tolist()[0] == "-2.2"  # signed: 9 others, one −20
    assert table["largest drop"].tolist() == ["20.0", "0.0", "0.0"]
    page = texts(app)
    assert "calibrate trained its layer for 7 epochs" in page
    assert all(f"**{s}** — target +70.0 points" in page for s in STRATEGIES)
    figure = charts(app)[0]
    assert [t["name"] for t in figure["data"]] == ["before (weak model)", *(f"after: {s}" for s in STRATEGIES)]
    arrow = figure["layout"]["annotations"][0]
    categories = figure["layout"]["xaxis"]["categoryarray"]
    assert figure["layout"]["xaxis"]["type"] == "category"
    # the arrow's x is the target's position (an int), never its name read as a position
    assert isinstance(arrow["x"], int) and categories[arrow["x"]] == "3"
    # swap-weak's classes are 3, 5, …, 9: the class "3" is the first category, not the fourth
    app.selectbox(key="swap_weak").set_value(WEAK_DEMO).run()
    app.button(key="swap_go").click().run()
    figure = charts(app)[0]
    arrow = figure["layout"]["annotations"][0]
    assert figure["layout"]["xaxis"]["categoryarray"] == ["3", "5", "6", "7", "8", "9"]
    assert arrow["x"] == 0 and app.selectbox(key="swap_class").value == 3


def test_changing_the_weak_run_without_running_discards_the_result(demo_env, fake_swap):
    """A swap on vgg11-standard's class 0, then another weak run without class 0."""
    app = open_page("swap")
    app.selectbox(key="swap_weak").set_value(STANDARD).run()
    app.selectbox(key="swap_class").set_value(0).run()
    app.button(key="swap_go").click().run()
    assert has_result(app)
    app.selectbox(key="swap_weak").set_value(WEAK_DEMO).run()
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]  # the page guard's "This page stopped" included
    assert not has_result(app) and "press **Run swap**" in texts(app)
    assert len(fake_swap) == 3  # nothing recomputed behind the user's back


def test_a_result_never_outlives_its_controls(demo_env, fake_swap):
    """Change a control, or leave the page and come back: no result for other controls."""
    app = open_page("swap")
    app.selectbox(key="swap_weak").set_value(STANDARD).run()
    app.selectbox(key="swap_class").set_value(2).run()
    app.button(key="swap_go").click().run()
    assert "class 2 repaired" in texts(app)
    app.selectbox(key="swap_class").set_value(4).run()
    assert not has_result(app)
    app.selectbox(key="swap_class").set_value(2).run()
    assert not has_result(app)  # discarded, not hidden: it comes back only by pressing Run swap
    app.button(key="swap_go").click().run()
    open_page("modules", app)
    open_page("swap", app)
    assert not app.error, [e.value for e in app.error]
    if has_result(app):  # widgets that kept their values may show the result that matches them, only that
        assert app.selectbox(key="swap_weak").value == STANDARD and app.selectbox(key="swap_class").value == 2
        assert "class 2 repaired" in texts(app)
    else:
        assert "press **Run swap**" in texts(app)


@pytest.mark.slow
def test_swap_page_runs_the_real_repairs(demo_env, progress_bars):
    app = open_page("swap")
    app.button(key="swap_go").click().run(timeout=600)
    assert not app.exception, [e.value for e in app.exception]
    # the bar told each stage of each strategy, from the engine's own reports
    shown = [t for _, t in progress_bars[0][1:-1]]
    for k, strategy in enumerate(STRATEGIES, start=1):
        assert any(t.startswith(f"{k}/3 {strategy}: evaluating on ") for t in shown), shown
    epochs = app.number_input(key="swap_epochs").value
    assert f"1/3 calibrate: training the remix layer, epoch {epochs}/{epochs}" in shown
    assert "3/3 affine: fitting a, c and b" in shown
    table = app.dataframe[0].value
    assert list(table["strategy"]) == list(STRATEGIES)
    figure = charts(app)[0]
    arrow = figure["layout"]["annotations"][0]
    assert figure["layout"]["xaxis"]["categoryarray"][arrow["x"]] == str(app.selectbox(key="swap_class").value)


STRONG_DEMO = str(DEMO / "swap-strong")


@pytest.fixture
def progress_bars(monkeypatch):
    """``st.progress`` replaced by a recorder: a list of bars, each the (value, text) of its updates."""
    import streamlit

    bars = []

    class Bar:
        def __init__(self, value, text=None):
            self.updates = [(value, text)]
            bars.append(self.updates)

        def progress(self, value, text=None):
            self.updates.append((value, text))

        def empty(self):
            self.updates.append(("empty", None))

    monkeypatch.setattr(streamlit, "progress", Bar)
    return bars


def test_swap_refuses_the_same_run_as_weak_and_strong_before_any_work(demo_env, fake_swap):
    app = open_page("swap")
    app.selectbox(key="swap_strong").set_value(STRONG_DEMO).run()
    app.selectbox(key="swap_weak").set_value(STRONG_DEMO).run()
    assert not app.exception, [e.value for e in app.exception]
    warning = " ".join(w.value for w in app.warning).replace("\\", "")  # markdown escapes off
    assert "The weak and the strong run are the same run" in warning and "swap-strong" in warning
    assert "swap_go" not in [b.key for b in app.button] and not fake_swap and not has_result(app)
    # another weak run: the page works again
    app.selectbox(key="swap_weak").set_value(WEAK_DEMO).run()
    assert "same run" not in " ".join(w.value for w in app.warning)
    app.button(key="swap_go").click().run()
    assert has_result(app) and len(fake_swap) == 3


def test_swap_says_whose_the_affine_strategy_is(demo_env, fake_swap):
    app = open_page("swap")
    app.button(key="swap_go").click().run()
    page = texts(app)
    assert "Ours" not in page and "**affine** — target" in page
    assert "MODA Studio's own strategy (not in the paper)" in page


def test_swap_shows_a_progress_bar_by_stage_and_strategy(demo_env, fake_swap, progress_bars):
    app = open_page("swap")
    app.button(key="swap_go").click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert len(progress_bars) == 1, progress_bars  # one bar for the three repairs
    updates = progress_bars[0]
    assert updates[-1] == ("empty", None) and has_result(app)  # gone once the result is there
    values = [v for v, _ in updates[:-1]]
    assert values == sorted(values) and all(0 <= v <= 1 for v in values)
    shown = [t for _, t in updates[1:-1]]
    assert "1/3 calibrate: training the remix layer, epoch 3/5" in shown
    assert "3/3 affine: fitting" in shown and "2/3 normalize: evaluating on 1,000 test images" in shown
    assert values[shown.index("3/3 affine: fitting") + 1] == pytest.approx((2 + 0.5) / 3)
