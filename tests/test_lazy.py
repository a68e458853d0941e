"""The dashboard's background warm-up: imports, then named functions (torch.export's first use), once."""
from __future__ import annotations

import sys
import threading
import types

import pytest

from dashboard import lazy


@pytest.fixture
def fresh_warm_up(monkeypatch):
    monkeypatch.setattr(lazy, "_warmed", False)
    calls = []
    module = types.ModuleType("warm_target")
    module.ready = lambda: calls.append("ready")
    module.broken = lambda: 1 / 0
    monkeypatch.setitem(sys.modules, "warm_target", module)
    return calls


def _wait_for_warm_up():
    for thread in threading.enumerate():
        if thread.name == "moda-warm-up":
            thread.join(timeout=60)


def test_warm_up_imports_then_calls_the_named_functions_once(fresh_warm_up, caplog):
    calls = fresh_warm_up
    lazy.warm_up("json", then=("warm_target:broken", "warm_target:ready"))
    lazy.warm_up("json", then=("warm_target:ready",))  # a second page: nothing more
    _wait_for_warm_up()
    assert calls == ["ready"]  # a failing warm-up step is logged and the next one still runs
    assert any("warm-up warm_target:broken failed" in r.getMessage() for r in caplog.records)


def test_warm_up_export_prepares_torch_export_in_memory(tmp_path, monkeypatch):
    import torch

    from moda_core.export import export_module, warm_up_export

    monkeypatch.chdir(tmp_path)
    warm_up_export()
    assert list(tmp_path.iterdir()) == []  # nothing written
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    path = export_module(model, tmp_path / "m.pt2", (1, 2, 2))
    x = torch.randn(5, 1, 2, 2)
    assert torch.allclose(torch.export.load(str(path)).module()(x), model(x))



FRAGMENT_APP = '''
import streamlit as st
from dashboard import ui
from moda_core.errors import ModaError

@ui.fragment
def part(kind):
    st.slider("τ", 0.5, 1.0, 0.9, key="tau")
    if kind == "moda":
        raise ModaError("the rates file does not match this model")
    raise RuntimeError("a bug")

part(KIND)
'''


def test_an_error_in_a_fragment_is_one_short_message_not_a_traceback():
    from streamlit.testing.v1 import AppTest

    from dashboard.ui import PAGE_STOPPED

    for kind, words in (("moda", "the rates file does not match this model"), ("bug", "on an unexpected error")):
        app = AppTest.from_string(FRAGMENT_APP.replace("KIND", repr(kind)), default_timeout=60).run()
        assert not app.exception, kind
        assert app.error and PAGE_STOPPED in app.error[0].value and words in app.error[0].value, kind
        assert "a bug" not in app.error[0].value and "Traceback" not in app.error[0].value
