"""The ViT's floor (the parameters every module keeps: attention, norms, embeddings) drawn and explained where
its module sizes are drawn over τ."""
from __future__ import annotations

import pytest
from helpers import APP, TIMEOUT, charts, texts

pytestmark = pytest.mark.slow


def test_tau_trade_off_draws_the_vits_floor():
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    app.query_params["run"] = "demo/vit-moda"
    app.run()
    app.switch_page("views/tau.py")
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    figure = next(f for f in charts(app).values() if "τ trade-off" in str(f["layout"].get("title")))
    floors = [a for a in figure["layout"].get("annotations", []) if "floor" in str(a.get("text"))]
    assert floors and 0.4 < float(floors[0]["text"].split()[1].rstrip("%:")) / 100 < 0.7
    assert "every module keeps the parameters no unit mask can drop" in texts(app)
