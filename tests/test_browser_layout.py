"""Layout in a real browser, as a lecture hall sees it: every page at 1280×800 and 1920×1080, in projector mode
(``?present=1``) and at 1280×800 without it. On every chart, no two of its texts (title, legend entries, axis
titles, panel titles and other annotations, colour-bar titles) overlap; every table shows all its columns without
scrolling sideways. In projector mode: the sidebar starts closed; no chart text, value label, table cell or
dropdown text is smaller than 18 px and no headline number smaller than 32 px; each page's key element (``KEY``)
lies entirely on the first screen, top and bottom (Swap's chart once a swap has run); Modules' A and B heatmaps
start at the same height. Screenshots go to $MODA_LAYOUT_SCREENSHOTS_DIR when set, else under pytest's temporary
folder (30 pictures: not the README's)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import CHROMIUM, CHROMIUM_ARGS, ServedDashboard

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["how", "runs", "activations", "modules", "map", "evolution", "tau", "compose", "swap", "compare"]
SIZES = [(1280, 800, True), (1920, 1080, True), (1280, 800, False)]
NO_CHART = {"swap"}  # its chart comes with a swap, which this walk runs in projector mode only
# each page's key element in projector mode: its key chart(s) by index, or its table; How MODA works is read top to
# bottom (its one chart illustrates its fourth section), so it has none
KEY = {"runs": "table", "activations": [0], "modules": [0, 1], "map": [0], "evolution": [0], "tau": [0],
       "compose": [0], "swap": [0], "compare": [0, 1]}
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.long,
              pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt-get install chromium)")]

# every text of every chart with its box: the chart's index, a kind, the text and its box
BOXES = """() => [...document.querySelectorAll('.js-plotly-plot')].flatMap((plot, chart) => {
  const kinds = {'.gtitle': 'title', '.legend .traces': 'legend', '.xtitle': 'x title', '.ytitle': 'y title',
                 '.annotation-text': 'annotation', '.cbtitle text': 'colour-bar title'};
  return Object.entries(kinds).flatMap(([selector, kind]) => [...plot.querySelectorAll(selector)].map(e => {
    const r = e.getBoundingClientRect();
    const font = parseFloat(getComputedStyle(e.querySelector('text') || e).fontSize || '0');
    return {chart, kind, text: (e.textContent || '').trim().slice(0, 50), x: r.left, y: r.top, w: r.width,
            h: r.height, font};
  })).filter(b => b.w > 1 && b.h > 1 && b.text);
})"""
TABLE_WIDTHS = """() => [...document.querySelectorAll("[data-testid='stDataFrame'] .dvn-scroller")]
  .map(s => [s.scrollWidth, s.clientWidth])"""
# the visible sizes of the texts a projector must show large: table cells, dropdowns' values, headline numbers
WIDGET_FONTS = """() => {
  const sizes = selector => [...document.querySelectorAll(selector)].filter(e => e.getBoundingClientRect().width > 0
    && (e.value || e.textContent || '').trim()).map(e => ({text: (e.value || e.textContent).trim().slice(0, 30),
                                                        size: parseFloat(getComputedStyle(e).fontSize)}));
  return {table: sizes("[data-testid='stTable'] td, [data-testid='stTable'] th"),
          dropdown: sizes("[data-testid='stSelectbox'] input, [data-testid='stMultiSelect'] [data-tag] span"),
          metric: sizes("[data-testid='stMetricValue']"),
          grids: document.querySelectorAll("[data-testid='stDataFrame']").length,
          sidebar: (document.querySelector("[data-testid='stSidebar']") || {getBoundingClientRect: () => ({right: 0})})
                   .getBoundingClientRect().right};
}"""
FONTS = """() => [...document.querySelectorAll('.js-plotly-plot text')].filter(t => (t.textContent || '').trim() &&
  t.getBoundingClientRect().width > 0 && getComputedStyle(t).display !== 'none' && getComputedStyle(t).opacity !== '0')
  .map(t => ({text: t.textContent.trim().slice(0, 30), size: parseFloat(getComputedStyle(t).fontSize),
              cell: !!t.closest('.textpoint, .bartext, .heatmaplayer')}))"""


def overlaps(boxes: list[dict]) -> list[str]:
    found = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if a["chart"] != b["chart"]:
                continue
            width = min(a["x"] + a["w"], b["x"] + b["w"]) - max(a["x"], b["x"])
            height = min(a["y"] + a["h"], b["y"] + b["h"]) - max(a["y"], b["y"])
            if width > 2 and height > 2:
                found.append(f"chart {a['chart']}: {a['kind']} {a['text']!r} overlaps {b['kind']} {b['text']!r}")
    return found


def projector_problems(page, name: str, height: int) -> list[str]:
    """What a projector would not show well on this page: small texts, an open sidebar, a key element that is not
    entirely on the first screen, Modules' heatmaps at different heights."""
    problems = [f"{name}: chart text {t['text']!r} at {t['size']} px" for t in page.evaluate(FONTS)
                if t["size"] < 18 - 0.01][:3]
    found = page.evaluate(WIDGET_FONTS)
    for kind, least in (("table", 18), ("dropdown", 18), ("metric", 32)):
        problems += [f"{name}: {kind} text {t['text']!r} at {t['size']} px" for t in found[kind]
                     if t["size"] < least - 0.01][:3]
    if found["grids"]:
        problems.append(f"{name}: {found['grids']} data grid(s), whose canvas text stays small, instead of tables")
    if found["sidebar"] > 1:
        problems.append(f"{name}: the sidebar is open ({found['sidebar']:.0f} px wide)")
    key = KEY.get(name)
    if key == "table":
        tables = page.locator("[data-testid='stTable']")
        boxes = [tables.first.bounding_box() if tables.count() else None]
    elif key is not None:
        charts = page.locator(".js-plotly-plot")
        boxes = [charts.nth(i).bounding_box() if charts.count() > i else None for i in key]
    else:
        boxes = []
    for box in boxes:
        if box is None:
            problems.append(f"{name}: its key element is missing")
        elif box["y"] < 0 or box["y"] + box["height"] > height + 0.5:
            problems.append(f"{name}: its key element spans {box['y']:.0f}–{box['y'] + box['height']:.0f} px, not "
                            f"all on the first screen (0–{height} px)")
    if name == "modules" and len(boxes) == 2 and None not in boxes and abs(boxes[0]["y"] - boxes[1]["y"]) > 1:
        problems.append(f"modules: heatmaps A and B start at {boxes[0]['y']:.0f} and {boxes[1]['y']:.0f} px")
    return problems


@pytest.fixture(scope="module")
def served():
    env = dict(os.environ, MODA_RUNS_DIR=str(ROOT / "assets" / "demo"), STREAMLIT_SERVER_FILE_WATCHER_TYPE="none")
    with ServedDashboard(env, ("--host", "127.0.0.1"), start_timeout=60) as server:
        yield server


@pytest.mark.parametrize("width,height,present", SIZES, ids=[f"{w}x{h}{'-projector' if p else ''}"
                                                             for w, h, p in SIZES])
def test_no_chart_text_overlaps_and_projector_text_is_large(served, width, height, present, tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright python package is missing")
    shots = Path(os.environ.get("MODA_LAYOUT_SCREENSHOTS_DIR") or tmp_path)  # 30 pictures: not the README's
    problems: list[str] = []
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.set_default_timeout(120_000)
        for name in PAGES:
            path = "" if name == "how" else name  # How MODA works is the landing page, at /
            page.goto(f"{served.url}/{path}{'?present=1' if present else ''}")
            page.locator("h1").first.wait_for()
            page.wait_for_timeout(400)
            page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')")
            assert page.locator("[data-testid='stException']").count() == 0, name
            charts = page.locator(".js-plotly-plot")
            if name == "swap" and present:  # its chart comes with a swap: run one (the second time, from the cache)
                page.get_by_role("button", name="Run swap").click()
                charts.first.locator(".main-svg").first.wait_for(timeout=300_000)
                page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')")
                page.wait_for_timeout(800)
                page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollTo(0, 0)")
            if name not in NO_CHART:  # wait for it: the run may still be sending the page when the status widget goes
                charts.first.locator(".main-svg").first.wait_for()
                page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')")
                page.wait_for_timeout(800)  # plotly lays out its text after the first draw
            problems += [f"{name}: {p}" for p in overlaps(page.evaluate(BOXES))]
            # every table's columns on screen (a data grid scrolls sideways otherwise): Runs, Activations, Compare
            if name in ("runs", "compare"):  # in projector mode a plain table instead of a data grid
                page.locator("[data-testid='stTable'], [data-testid='stDataFrame'] .dvn-scroller").first.wait_for()
            widths = page.evaluate(TABLE_WIDTHS)
            problems += [f"{name}: table {content} px wide in {box} px" for content, box in widths if content > box + 1]
            if present:
                problems += projector_problems(page, name, height)
            page.screenshot(path=str(shots / f"{name}-{width}{'-projector' if present else ''}.png"))
        browser.close()
    assert not problems, "\n".join(problems)
