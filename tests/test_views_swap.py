"""The Swap page (module replacement in the browser), headless with Streamlit's AppTest on the demo runs.

Most tests replace ``dashboard.engine.swap`` by a fake that answers at once with a report of the real
shape (the page, not the repair, is under test); the slow test runs the real repairs."""
from __future__ import annotations

import pytest
from helpers import DEMO, charts, open_page, texts

from dashboard import engine
from moda_core.replace import STRATEGIES

pytestmark = pytest.mark.usefixtures("dashboard_pages")  # tests/conftest.py

WEAK_DEMO = str(DEMO / "swap-weak")
STANDARD = str(DEMO / "vgg11-standard")


def made_up_report(weak, weak_class_id, strategy, epochs):
    """A report of the real shape for the weak run's classes (the page, not the repair, is under test)."""
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


@pytest.fixture
def fake_swap(monkeypatch):
    """``engine.swap`` answering a made-up report for the weak run's classes; records its calls."""
    calls = []

    def swap(weak, strong, weak_class_id, strong_class_id, strategy, epochs=5, tau=0.9):
        calls.append((weak, strong, weak_class_id, strategy, epochs, tau))
        return made_up_report(weak, weak_class_id, strategy, epochs)

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
    assert table["overall"].tolist() == ["80.0% → 85.0% (+5.0)"] * 3  # all test images, before → after
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
def test_swap_page_runs_the_real_repairs(demo_env, board_words):
    stages, shown = board_words
    app = open_page("swap")
    app.button(key="swap_go").click().run(timeout=600)
    assert not app.exception, [e.value for e in app.exception]
    # each repair ran on the server's board and reported every stage of each strategy from the engine's own
    # reports; the visitor read its words while waiting
    for strategy in STRATEGIES:
        assert any(note.startswith(f"{strategy}: evaluating on ") for note in stages), stages
    epochs = app.number_input(key="swap_epochs").value
    assert f"calibrate: training the remix layer, epoch {epochs}/{epochs}" in stages
    assert "affine: fitting a, c and b" in stages
    assert any(text.startswith("Repairing class ") for text in shown), shown
    table = app.dataframe[0].value
    assert list(table["strategy"]) == list(STRATEGIES)
    figure = charts(app)[0]
    arrow = figure["layout"]["annotations"][0]
    assert figure["layout"]["xaxis"]["categoryarray"][arrow["x"]] == str(app.selectbox(key="swap_class").value)


STRONG_DEMO = str(DEMO / "swap-strong")


@pytest.fixture
def board_words(monkeypatch):
    """(the stage notes heavy work reported to the server's board, the words waiting visitors were shown)."""
    from dashboard import jobs

    stages, shown = [], []
    report, say = jobs.Job.progress, jobs.words

    def progress(self, done, total, note=""):
        stages.append(note)
        report(self, done, total, note)

    def words(job, ahead, now=None):
        text = say(job, ahead, now)
        shown.append(text[0])
        return text

    monkeypatch.setattr(jobs.Job, "progress", progress)
    monkeypatch.setattr(jobs, "words", words)
    jobs.board().clear()
    return stages, shown


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


def test_swap_waits_with_the_repairs_own_words_and_remembers_the_result(demo_env, monkeypatch, board_words):
    import time
    from types import SimpleNamespace

    stages, shown = board_words
    calls = []

    def repair(weak, strong, weak_class, strong_class, strategy, epochs, tau, save_decomposition, stage):
        calls.append(strategy)
        stage(f"{strategy}: fitting", 0.5)
        time.sleep(0.5)  # long enough for the visitor to be told
        stage(f"{strategy}: evaluating on 1,000 test images", 0.8)
        time.sleep(0.3)
        return SimpleNamespace(report=made_up_report(weak.spec, weak_class, strategy, epochs))

    monkeypatch.setattr(engine, "repair", repair)
    app = open_page("swap")
    app.button(key="swap_go").click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert calls == list(STRATEGIES) and has_result(app)
    for strategy in STRATEGIES:
        assert any(text.startswith("Repairing class ") and text.endswith(f"{strategy}: fitting")
                   or text.endswith(f"{strategy}: evaluating on 1,000 test images") for text in shown), shown
    app.button(key="swap_go").click().run()  # the same swap again: answered from the board, no repair
    assert calls == list(STRATEGIES) and has_result(app)


