"""Back and Forward in a real browser: one history entry per page visited, whatever the visitor moved on it.

Three τ steps on Activations and a switch to Modules used to add about six entries, and Back then stayed on
the page or did nothing; now a page adds one entry, Back returns to the previous page with the τ it had, and
the τ stays the session's on every page."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from helpers import CHROMIUM, CHROMIUM_ARGS, ServedDashboard

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.long,
              pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt-get install chromium)")]


def idle(page) -> None:
    page.wait_for_timeout(250)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=120_000)


BARE = [sys.executable, "-m", "streamlit", "run", "dashboard/app.py"]  # as someone would start it from a checkout


@pytest.mark.parametrize("started", ["moda-studio", "bare streamlit run"])
def test_back_returns_to_the_previous_page_as_it_was_left(started):
    playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright python package is missing")
    env = dict(os.environ, MODA_RUNS_DIR=str(ROOT / "assets" / "demo"), STREAMLIT_SERVER_FILE_WATCHER_TYPE="none")
    served = ServedDashboard(env, ("--host", "127.0.0.1"), start_timeout=60) if started == "moda-studio" else \
        ServedDashboard(env, ("--server.headless", "true"), start_timeout=60, command=BARE, port_flag="--server.port")
    with served, playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(120_000)
        page.goto(f"{served.url}/activations")
        page.get_by_text("rate ≥ τ=0.90").first.wait_for()
        idle(page)
        entries = page.evaluate("history.length")
        slider = page.get_by_role("slider").first
        slider.focus()
        for expected in ("0.89", "0.88", "0.87"):
            page.keyboard.press("ArrowLeft")
            page.get_by_text(f"rate ≥ τ={expected}").first.wait_for()
            idle(page)
        assert page.evaluate("history.length") == entries  # moving τ adds no entry
        page.get_by_role("link", name="Modules", exact=True).click()
        page.get_by_role("heading", name="Modules", exact=True).wait_for()
        idle(page)
        page.wait_for_function("() => location.search.includes('tau=0.87')")  # the session's τ on every page
        assert page.evaluate("history.length") == entries + 1  # a page adds one
        assert page.locator("[data-testid='stSliderThumbValue']").first.inner_text() == "0.87"
        page.go_back()
        page.get_by_role("heading", name="Activations", exact=True).wait_for()
        page.get_by_text("rate ≥ τ=0.87").first.wait_for()
        page.wait_for_function("() => location.pathname.endsWith('/activations') && "
                               "location.search.includes('tau=0.87')")
        page.go_forward()
        page.get_by_role("heading", name="Modules", exact=True).wait_for()
        idle(page)
        assert "/modules" in page.url
        # Compose's classes and Swap's settings follow the visitor into the URL (shareable links)
        page.goto(f"{served.url}/compose?classes=0,3")
        page.get_by_text("logits of classes 0, 3").wait_for()
        idle(page)
        page.locator("[data-testid='stMultiSelect']").first.locator("input").click()
        page.keyboard.type("7")
        page.get_by_role("option", name="7", exact=True).click()
        page.wait_for_function("() => new URLSearchParams(location.search).get('classes') === '0,3,7'")
        page.keyboard.press("Escape")
        page.goto(f"{served.url}/swap?weak=demo/swap-weak&strong=demo/vgg11-moda&epochs=2")
        page.get_by_role("heading", name="Swap", exact=True).wait_for()
        idle(page)
        page.wait_for_function("() => { const q = new URLSearchParams(location.search); return q.get('weak') === "
                               "'demo/swap-weak' && q.get('strong') === 'demo/vgg11-moda' && q.get('epochs') === '2' "
                               "&& q.get('class') !== null; }")
        browser.close()
