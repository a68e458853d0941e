"""A classroom on one dashboard server: many visitors at once, each with parameters of its own (browsers or clients).

The dashboard starts as ``make run`` starts it, ``python -m dashboard.serve --runs-dir assets/demo --no-training``
(no training form), on a free port of 127.0.0.1, from the repository root, with Streamlit's file watcher off. For
each count N of ``--visitors`` a fresh server is started. Unless ``--steps 0``, the lecturer (one browser context)
opens Activations on it first, as a lecturer does before the class arrives; then the N visitors arrive, each at a
time drawn uniformly from [0, ``--spread``] seconds after the lecturer's page showed (seeded by ``--seed``). With
``--client browser`` (the default) each visitor is a context of one Debian Chromium (driven with Playwright: the
browser test's executable and flags, ``bench/browser.py``), 1280×800; the browsers then share the machine's cores
with the server, which on a 2-core machine is most of what a visitor waits for. With ``--client protocol`` each
visitor is a client of Streamlit's own websocket protocol (``/_stcore/stream``: the rerun request a browser sends
for a URL, then every message until the run ends), so the server has the cores as it has when the class's browsers
run on the class's laptops. Each visitor opens three pages by URL, one after the other:

- Activations: ``/activations?run=RUN&tau=TAU&point=POINT&image=IMAGE``,
- the Module map: ``/map?run=RUN&tau=TAU``,
- Compose: ``/compose?run=RUN&tau=TAU&classes=A,B``,

where visitor i's run (the demo's ``vgg11-moda`` for even i, ``vgg11-standard`` for odd i), τ (0.80 to 0.95),
activation point, test image (no two visitors share one) and two classes are drawn from ``--seed`` alone: visitor i
has the same parameters whatever N is. For every visitor and page it records:

- time to first chart: in a browser, from the start of the page's navigation (the document's
  ``performance.timeOrigin``) to the first plotly chart on it with data and its SVG drawn, timed inside the page (a
  MutationObserver installed before the page's own scripts) and read afterwards, so that the browser's round trips
  to this process add nothing; as a protocol client, from the start of the connection to the first plotly chart
  received;
- errors: an exception box (``[data-testid="stException"]``), the dashboard's "This page stopped" message
  (``dashboard.ui.PAGE_STOPPED``), a connection to the server lost for good, or a page that did not finish within
  ``--timeout`` seconds of the start of its navigation;
- its answer: the text of the main area's displayed (not ``display: none``) headings, markdown (widget labels
  included), captions, image captions and metrics, read from the page's text nodes rather than from its layout,
  and each plotly chart's traces (type, name and x, y, z values, numbers rounded to 6 significant digits), in page
  order; read every 0.5 s once the page has finished (the app's script not running, by the state Streamlit's front
  end keeps on its root element; nothing stale; at least the page's usual number of charts drawn), until it equals
  the lone visitor's answer or has read the same for 5 s. A browser starved of CPU can add the last elements the
  server sent seconds after the app reports its run finished, so an answer that differs has to stand for 5 s to
  count; one that differs at first and then settles on the lone visitor's counts as equal.

Before the classrooms, on a server of its own: the lecturer steps τ alone (the τ step's reference), then a lone
visitor (the same client as the classroom's) opens every distinct page and parameters the largest classroom will
use; every classroom visitor's answers are compared with the lone visitor's for the same page and parameters (they
must all be equal). A protocol visitor's answer is read from the elements the run leaves in the main area (texts of
headings, markdown, alerts, metrics, image captions and widget labels; each chart's traces), as a browser's is
read from the page.

While the classroom browses, the lecturer presses ← on Activations' τ slider (from τ = 0.79, below every visitor's
τ, so no visitor has computed its masks), half a second after each redraw: each step's time from the key reaching
the page to the heatmap's legend naming the new τ, timed in the page, next to the same steps taken alone.

While a classroom runs, the resident memory (VmRSS in /proc/PID/status) of the server process and every process
below it is sampled every 0.5 s: the peak and the value at the end are reported; so are the peak of the browser's
(Playwright's driver and Chromium, summed over their processes, so pages they share count more than once) and the
lowest MemAvailable of the machine. The browser and the server share this machine's cores; the load average is
printed at the start and the end. In one run every visitor is the same kind of client: all browser contexts, or
all protocol clients; the lecturer is always a browser context.

With ``--evidence DIR``, every browser visit that erred or whose answer differs leaves a full-page screenshot, its
main area's HTML and both answers (JSON) in DIR, and a round whose server printed a traceback leaves the server's
output there (the report quotes the end of the first traceback either way). Exits with status 1 when any visitor
erred or differed.

    python -m bench.classroom [--client browser|protocol] [--visitors 1 10 30] [--spread 5] [--seed 0]
                              [--steps 29] [--timeout 300] [--quick] [--json] [--out FILE] [--evidence DIR]

The committed reports are bench/results/classroom-browser.md and classroom-protocol.md (``--out`` names them);
``--quick``: classrooms of 1 and 3 visitors, 2 τ steps.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bench.browser import CHROMIUM, CHROMIUM_ARGS
from bench.common import ROOT, BenchParser, log, show, write_result
from bench.dashboard import BenchError, Server, load_average, warm_file_cache

VIEWPORT = {"width": 1280, "height": 800}
RUNS = ("demo/vgg11-moda", "demo/vgg11-standard")  # visitor i shows RUNS[i % 2]
# the demo VGG-11's activation points (both runs have the same) and its number of test images
POINTS = ("features.0.relu", "features.2.relu", "features.4.relu", "features.5.relu", "features.7.relu",
          "features.8.relu", "features.10.relu", "features.11.relu", "classifier.0.relu")
TEST_IMAGES = 1000
CLASSES = 10
TAUS = tuple(round(0.80 + step / 100, 2) for step in range(16))  # 0.80 … 0.95
# each page's URL path, its name in the output, and the number of charts it draws once it has finished
PAGES = {"activations": ("Activations", 5), "map": ("Module map", 1), "compose": ("Compose", 1)}
SAMPLE_SECONDS = 0.5
# seconds a page's answer must read the same before it counts, when it differs from the lone visitor's, and for the
# lone visitor itself (alone, its browser keeps up)
QUIET_SECONDS, LONE_QUIET_SECONDS = 5.0, 1.5
TIMEOUT_ERROR = "timeout: "  # how a page that did not finish in time is recorded among a visit's errors
DIGITS = 6  # significant digits kept of every number in a chart's data

# Installed in every document before its own scripts: the time (ms since navigation start) at which the first plotly
# chart with data has drawn its SVG.
FIRST_CHART_JS = """(() => {
  window.__firstChart = null;
  const drawn = () => [...document.querySelectorAll('.js-plotly-plot')]
    .some(c => c.querySelector('.main-svg') && c.data && c.data.length);
  const watch = new MutationObserver(() => {
    if (window.__firstChart === null && drawn()) { window.__firstChart = performance.now(); watch.disconnect(); }
  });
  watch.observe(document, {childList: true, subtree: true});
})()"""

# The page's error, if it shows one: a connection lost for good, an exception box or the dashboard's "page stopped"
# message.
ERROR_JS = """stopped => {
  const app = document.querySelector("[data-testid='stApp']");
  if (app && app.dataset.testConnectionState === 'DISCONNECTED_FOREVER') return 'the connection to the server was lost';
  const box = document.querySelector("[data-testid='stException']");
  if (box) return 'exception: ' + box.innerText.trim().slice(0, 300);
  const main = document.querySelector("[data-testid='stMain']");
  if (main && main.textContent.includes(stopped)) {
    const alert = [...main.querySelectorAll("[data-testid='stAlert']")].find(a => a.textContent.includes(stopped));
    return (alert ? alert.innerText : stopped).trim().slice(0, 300);
  }
  return null;
}"""

# Whether the page has finished: the app's script not running (the state Streamlit keeps on its root element; its
# status widget shows only after half a second of running), nothing stale, at least n charts, all drawn.
FINISHED_JS = """n => {
  const app = document.querySelector("[data-testid='stApp']");
  if (!app || app.dataset.testScriptState !== 'notRunning' || app.dataset.testConnectionState !== 'CONNECTED') {
    return false;
  }
  if (document.querySelector("[data-testid='stStatusWidget']")) return false;
  if (document.querySelector("[data-stale='true']")) return false;
  const charts = [...document.querySelectorAll('.js-plotly-plot')];
  return charts.length >= n && charts.every(c => c.querySelector('.main-svg'));
}"""

# The page's answer: the texts of the main area's displayed elements and every chart's traces (numbers rounded;
# plotly's base64 arrays decoded first). Texts come from the DOM's text nodes, not innerText, so that they do not
# depend on how far a busy browser has got in laying the page out.
ANSWER_JS = r"""digits => {
  const round = v => typeof v === 'number' && isFinite(v) ? Number(v.toPrecision(digits)) : v;
  const types = {f8: Float64Array, f4: Float32Array, i4: Int32Array, u4: Uint32Array, i2: Int16Array,
                 u2: Uint16Array, i1: Int8Array, u1: Uint8Array};
  const decode = spec => {
    const bytes = Uint8Array.from(atob(spec.bdata), c => c.charCodeAt(0));
    return {shape: spec.shape || null, values: Array.from(new types[spec.dtype](bytes.buffer), round)};
  };
  const values = v => {
    if (v === undefined || v === null) return null;
    if (ArrayBuffer.isView(v)) return Array.from(v, round);
    if (Array.isArray(v)) return v.map(values);
    if (typeof v === 'object' && typeof v.bdata === 'string') return decode(v);
    return round(v);
  };
  const main = document.querySelector("[data-testid='stMain']") || document.body;
  const kinds = ["h1", "h2", "h3", "[data-testid='stMarkdownContainer']", "[data-testid='stCaptionContainer']",
                 "[data-testid='stImageCaption']", "[data-testid='stMetric']"].join(', ');
  const text = e => {  // its text nodes, read from the DOM (not from the layout, which lags in a busy browser)
    const walker = document.createTreeWalker(e, NodeFilter.SHOW_TEXT);
    const parts = [];
    while (walker.nextNode()) {
      if (!['SCRIPT', 'STYLE'].includes(walker.currentNode.parentElement.tagName)) parts.push(walker.currentNode.data);
    }
    return parts.join(' ').replace(/\s+/g, ' ').trim();
  };
  const texts = [...main.querySelectorAll(kinds)]
    .filter(e => !e.parentElement.closest(kinds) && e.checkVisibility())
    .map(text).filter(t => t);
  const charts = [...main.querySelectorAll('.js-plotly-plot')].map(c => (c.data || []).map(t => ({
    type: t.type || null, name: t.name === undefined ? null : t.name,
    x: values(t.x), y: values(t.y), z: values(t.z)})));
  return {texts, charts};
}"""


# ----- who visits what -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class View:
    """One page with its parameters, as a visitor opens it by URL."""

    page: str
    query: tuple[tuple[str, str], ...]

    def url(self, base: str) -> str:
        return f"{base}/{self.page}?{urlencode(self.query, safe='/,')}"

    def label(self) -> str:
        return f"/{self.page}?{urlencode(self.query, safe='/,')}"


@dataclass(frozen=True)
class Visitor:
    """One visitor's parameters and the pages it opens, in order."""

    index: int
    run: str
    tau: float
    point: str
    image: int
    classes: tuple[int, int]
    pages: tuple[str, ...] = ("activations", "map", "compose")

    def view(self, page: str) -> View:
        shared = (("run", self.run), ("tau", f"{self.tau:.2f}"))
        own = {"activations": (("point", self.point), ("image", str(self.image))),
               "map": (), "compose": (("classes", ",".join(map(str, self.classes))),)}[page]
        return View(page, shared + own)

    def views(self) -> list[View]:
        return [self.view(page) for page in self.pages]


def make_visitors(count: int, seed: int) -> list[Visitor]:
    """``count`` visitors; visitor i's parameters depend on ``seed`` and i only (not on ``count``)."""
    rng = random.Random(seed)
    images = rng.sample(range(TEST_IMAGES), TEST_IMAGES)  # a distinct test image per visitor
    visitors = []
    for index in range(count):
        classes = tuple(sorted(rng.sample(range(CLASSES), 2)))
        visitors.append(Visitor(index, RUNS[index % len(RUNS)], rng.choice(TAUS), rng.choice(POINTS),
                                images[index], classes))
    return visitors


def arrivals(count: int, spread: float, seed: int) -> list[float]:
    """Seconds after the classroom's start at which each of ``count`` visitors arrives."""
    rng = random.Random(f"arrivals-{seed}-{count}")
    return [rng.uniform(0, spread) for _ in range(count)]


def distinct_views(visitors: list[Visitor]) -> list[View]:
    return list(dict.fromkeys(view for visitor in visitors for view in visitor.views()))


# ----- one page visit --------------------------------------------------------------------------------------------


@dataclass
class Visit:
    """What one visitor saw on one view."""

    visitor: int
    view: View
    first_chart: float | None = None  # seconds from navigation start
    errors: list[str] = field(default_factory=list)
    answer: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        return {"visitor": self.visitor, "view": self.view.label(), "first_chart": self.first_chart,
                "errors": self.errors, "answer_digest": digest(self.answer)}


def digest(answer: dict[str, Any] | None) -> str | None:
    import hashlib

    if answer is None:
        return None
    return hashlib.sha256(json.dumps(answer, sort_keys=True).encode()).hexdigest()[:16]


def page_stopped() -> str:
    """The dashboard's message for a page that stopped on an error (``dashboard.ui.PAGE_STOPPED``)."""
    from dashboard.ui import PAGE_STOPPED

    return PAGE_STOPPED


@dataclass
class Rules:
    """What every visit of a classroom (or of the lone visitor) shares."""

    timeout: float  # seconds a page may take, from the start of its navigation to its settled answer
    stopped: str = field(default_factory=page_stopped)
    reference: dict[View, Visit] | None = None  # the lone visitor's answers (to keep evidence of a difference)
    evidence: Path | None = None  # where a visit that errs or differs leaves its screenshot, answer and HTML
    done: Callable[[], None] = lambda: None  # called after every visit (a progress bar's update)


async def wait_for(page: Any, predicate: str, arg: Any, deadline: float, stopped: str) -> str | None:
    """Poll until ``predicate`` holds or the page shows an error; returns the error (None when the predicate held).
    Raises asyncio.TimeoutError past ``deadline`` (time.monotonic())."""
    script = f"([arg, stopped]) => ({ERROR_JS})(stopped) || (({predicate})(arg) ? 'ok' : false)"
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise asyncio.TimeoutError
    handle = await page.wait_for_function(script, arg=[arg, stopped], polling=100, timeout=remaining * 1000)
    state = await handle.json_value()
    return None if state == "ok" else state


async def settled_answer(page: Any, charts: int, deadline: float, stopped: str,
                         expected: dict | None) -> tuple[dict | None, str | None]:
    """The page's answer once it has finished (or the error it shows): at once when it equals ``expected`` (the
    lone visitor's), else once it has read the same for ``QUIET_SECONDS`` (``LONE_QUIET_SECONDS`` without an
    expected answer), read every 0.5 s. A browser starved of CPU can apply the last elements the server sent
    seconds after the app reports its run finished: a wrong answer has to stand that long to count."""
    quiet = LONE_QUIET_SECONDS if expected is None else QUIET_SECONDS
    previous, since = None, time.monotonic()
    while True:
        error = await wait_for(page, FINISHED_JS, charts, deadline, stopped)
        if error:
            return None, error
        answer = await page.evaluate(ANSWER_JS, DIGITS)
        if answer == expected or (answer == previous and time.monotonic() - since >= quiet):
            return answer, None
        if answer != previous:
            previous, since = answer, time.monotonic()
        await asyncio.sleep(0.5)


async def open_view(page: Any, base: str, view: View, visitor: int, rules: Rules) -> Visit:
    """Open ``view`` by URL in ``page`` and record the time to its first chart, its errors and its answer."""
    from playwright.async_api import Error as PlaywrightError
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    visit = Visit(visitor, view)
    deadline = time.monotonic() + rules.timeout
    stage = "the page to load"
    try:
        await page.goto(view.url(base), wait_until="commit", timeout=rules.timeout * 1000)
        stage = "the first chart"
        error = await wait_for(page, "() => window.__firstChart !== null", None, deadline, rules.stopped)
        visit.first_chart = await page.evaluate("() => window.__firstChart === null ? null : window.__firstChart")
        if visit.first_chart is not None:
            visit.first_chart /= 1000
        if error is None:
            stage = "the page to finish"
            lone = (rules.reference or {}).get(view)
            visit.answer, error = await settled_answer(page, PAGES[view.page][1], deadline, rules.stopped,
                                                       lone.answer if lone else None)
        if error:
            visit.errors.append(error)
    except (PlaywrightTimeout, asyncio.TimeoutError):
        visit.errors.append(f"{TIMEOUT_ERROR}waited {rules.timeout:.0f} s for {stage}")
    except PlaywrightError as error:
        visit.errors.append(f"browser error while waiting for {stage}: {str(error).splitlines()[0][:300]}")
    await keep_evidence(page, visit, rules)
    return visit


async def keep_evidence(page: Any, visit: Visit, rules: Rules) -> None:
    """For a visit that erred or whose answer differs from the lone visitor's: a full-page screenshot, the page's
    main area as HTML and both answers, in ``rules.evidence`` (when set)."""
    from playwright.async_api import Error as PlaywrightError

    lone = (rules.reference or {}).get(visit.view)
    why = difference(visit.answer, lone.answer) if lone else None
    if rules.evidence is None or not (visit.errors or why):
        return
    rules.evidence.mkdir(parents=True, exist_ok=True)
    name = rules.evidence / f"visitor{visit.visitor:02d}-{visit.view.page}"
    with contextlib.suppress(PlaywrightError):
        await page.screenshot(path=f"{name}.png", full_page=True, timeout=60_000)
        html = await page.evaluate("() => (document.querySelector(\"[data-testid='stMain']\") || document.body)"
                                   ".outerHTML")
        Path(f"{name}.html").write_text(html)
    Path(f"{name}.json").write_text(json.dumps({"view": visit.view.label(), "errors": visit.errors,
                                                "difference": why, "answer": visit.answer,
                                                "lone_answer": lone.answer if lone else None}, indent=1))


@contextlib.asynccontextmanager
async def tab(browser: Any) -> Any:
    """A fresh browser context (one visitor) with one page that times its first chart."""
    context = await browser.new_context(viewport=VIEWPORT)
    try:
        await context.add_init_script(FIRST_CHART_JS)
        yield await context.new_page()
    finally:
        await context.close()


@contextlib.asynccontextmanager
async def opener(browser: Any) -> Any:
    """How one visitor opens a view: in a browser context of its own (one tab, kept for all its views), or as a
    protocol client when ``browser`` is None. Yields ``open(base, view, visitor, rules) -> Visit``."""
    if browser is None:
        yield open_view_protocol
        return
    async with tab(browser) as page:
        yield lambda base, view, visitor, rules: open_view(page, base, view, visitor, rules)


async def attend(browser: Any, base: str, visitor: Visitor, delay: float, rules: Rules) -> list[Visit]:
    """One visitor: arrive after ``delay`` seconds (in a browser context of its own, or as a protocol client when
    ``browser`` is None), open its pages in turn."""
    await asyncio.sleep(delay)
    visits = []
    async with opener(browser) as open_one:
        for view in visitor.views():
            visits.append(await open_one(base, view, visitor.index, rules))
            rules.done()
    return visits


# ----- a visitor without a browser: Streamlit's own protocol -------------------------------------------------------

# the elements whose text a protocol visitor reads (a widget contributes its label), and those that draw a chart
PROTOCOL_TEXTS = ("heading", "markdown", "alert", "metric", "imgs", "selectbox", "radio", "slider", "number_input",
                  "checkbox", "multiselect", "select_slider", "text_input")
NUMPY_TYPES = {"f8": "<f8", "f4": "<f4", "i4": "<i4", "u4": "<u4", "i2": "<i2", "u2": "<u2", "i1": "i1", "u1": "u1"}


def rounded(value: Any) -> Any:
    """A plotly data field as the browser's answer reads it: numbers to ``DIGITS`` significant digits, plotly's
    base64 arrays decoded."""
    import base64

    import numpy as np

    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.{DIGITS}g}")
    if isinstance(value, list):
        return [rounded(v) for v in value]
    if isinstance(value, dict) and isinstance(value.get("bdata"), str):
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=NUMPY_TYPES[value["dtype"]])
        return {"shape": value.get("shape"), "values": rounded(array.tolist())}
    return value


def element_text(kind: str, element: Any) -> str:
    """The words an element shows (as ``ANSWER_JS`` reads them from the page, up to markup)."""
    if kind == "metric":
        return " ".join(filter(None, (element.label, element.body, element.delta)))
    if kind == "imgs":
        return " ".join(image.caption for image in element.imgs if image.caption)
    return getattr(element, "body", None) or getattr(element, "label", "")


def protocol_answer(tree: dict[tuple[int, ...], Any]) -> dict[str, Any]:
    """The main area's texts and charts, in page order, from the elements a run left."""
    texts, charts = [], []
    for path in sorted(tree):
        element = tree[path]
        if path[0] != 0 or element is None:  # the sidebar, or a block
            continue
        kind = element.WhichOneof("type")
        if kind in PROTOCOL_TEXTS:
            text = " ".join(element_text(kind, getattr(element, kind)).split())
            if text:
                texts.append(text)
        elif kind == "plotly_chart":
            spec = json.loads(element.plotly_chart.spec)
            charts.append([{"type": t.get("type"), "name": t.get("name"), "x": rounded(t.get("x")),
                            "y": rounded(t.get("y")), "z": rounded(t.get("z"))} for t in spec.get("data", [])])
    return {"texts": texts, "charts": charts}


def protocol_error(element: Any, stopped: str) -> str | None:
    """The error an element shows: an exception box or the dashboard's "page stopped" alert."""
    kind = element.WhichOneof("type")
    if kind == "exception":
        return f"exception: {element.exception.type}: {element.exception.message}"[:300]
    if kind == "alert" and stopped in element.alert.body:
        return element.alert.body.strip()[:300]
    return None


async def open_view_protocol(base: str, view: View, visitor: int, rules: Rules) -> Visit:
    """Open ``view`` as a browser would, over Streamlit's websocket (``/_stcore/stream``), without a browser: one
    rerun request with the page's name and query string, then every message the server sends until the run
    finishes. The first chart is the first plotly element received, timed from the start of the connection; the
    answer is read from the elements the run leaves (an element replaced by a later one at its place, a run's
    elements that a rerun did not send again dropped, as the front end does)."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    from websockets.asyncio.client import connect
    from websockets.exceptions import WebSocketException

    visit = Visit(visitor, view)
    request = BackMsg()
    request.rerun_script.query_string = urlencode(view.query, safe="/,")
    request.rerun_script.page_name = view.page
    tree: dict[tuple[int, ...], Any] = {}
    touched: set[tuple[int, ...]] = set()
    stage = "the page to load"
    started = time.perf_counter()
    try:
        async with asyncio.timeout(rules.timeout):
            async with connect(base.replace("http://", "ws://") + "/_stcore/stream", subprotocols=["streamlit"],
                               max_size=None, ping_interval=None) as socket:
                await socket.send(request.SerializeToString())
                stage = "the first chart"
                async for raw in socket:
                    message = ForwardMsg.FromString(raw)
                    kind = message.WhichOneof("type")
                    if kind == "new_session":  # a run starts: what it does not send again goes at its end
                        touched = set()
                    elif kind == "page_not_found":
                        visit.errors.append(f"page not found: {message.page_not_found.page_name}")
                        break
                    elif kind == "delta" and message.delta.WhichOneof("type") in ("new_element", "add_block"):
                        path = tuple(message.metadata.delta_path)
                        for below in [p for p in tree if p[:len(path)] == path and p != path]:
                            del tree[below]
                        element = message.delta.new_element if message.delta.HasField("new_element") else None
                        tree[path] = element
                        touched.add(path)
                        if element is not None:
                            if error := protocol_error(element, rules.stopped):
                                visit.errors.append(error)
                            if element.HasField("plotly_chart") and visit.first_chart is None:
                                visit.first_chart = time.perf_counter() - started
                                stage = "the page to finish"
                    elif kind == "script_finished" and message.script_finished in (
                            ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_WITH_COMPILE_ERROR):
                        tree = {p: e for p, e in tree.items()
                                if p in touched or any(t[:len(p)] == p for t in touched)}
                        break
                else:
                    visit.errors.append(f"the server closed the connection while waiting for {stage}")
    except TimeoutError:
        visit.errors.append(f"{TIMEOUT_ERROR}waited {rules.timeout:.0f} s for {stage}")
    except (OSError, WebSocketException) as error:
        visit.errors.append(f"connection error while waiting for {stage}: {str(error).splitlines()[0][:300]}")
    if not visit.errors:
        visit.answer = protocol_answer(tree)
    return visit


# ----- a τ step while the others browse ----------------------------------------------------------------------------

STEP_FROM = 0.79  # the stepper's τ: below every classroom visitor's (0.80–0.95), so no visitor computes its masks
STEP_PAUSE = 0.5  # seconds between one τ step's heatmap and the next key press
MAX_STEPS = round((STEP_FROM - 0.5) * 100)  # the slider stops at τ = 0.50
STEPPER = View("activations", (("run", RUNS[0]), ("tau", f"{STEP_FROM:.2f}")))
# Before a step: the time the next key press reaches the page, and the time the heatmap's legend names τ.
STEP_WATCH_JS = """expected => {
  window.__pressed = null; window.__shown = null;
  document.addEventListener('keydown', () => { if (window.__pressed === null) window.__pressed = performance.now(); },
                            {capture: true, once: true});
  const shows = () => [...document.querySelectorAll('.js-plotly-plot text')]
    .some(e => e.textContent.includes(expected));
  const watch = new MutationObserver(() => {
    if (window.__pressed !== null && window.__shown === null && shows()) {
      window.__shown = performance.now();
      watch.disconnect();
    }
  });
  watch.observe(document, {childList: true, subtree: true, characterData: true});
}"""


async def tau_steps(browser: Any, base: str, rules: Rules, steps: int, going: Callable[[], bool] = lambda: True,
                    ready: asyncio.Event | None = None) -> tuple[list[float], list[str]]:
    """The lecturer, in a real browser context: opens Activations on the demo's MODA run at τ = ``STEP_FROM``,
    sets ``ready`` once the page has finished, then presses the ← key on the τ slider up to ``steps`` times while
    ``going()`` holds: each step's seconds from the key reaching the page to the heatmap's legend naming the new τ
    (timed inside the page). Returns the steps' seconds and the errors met."""
    from playwright.async_api import Error as PlaywrightError

    times: list[float] = []
    async with tab(browser) as page:
        try:
            opened = await open_view(page, base, STEPPER, -1, Rules(rules.timeout, stopped=rules.stopped))
        finally:
            if ready is not None:
                ready.set()
        if opened.errors:
            return times, [f"the stepper's page: {e}" for e in opened.errors]
        try:
            for step in range(1, min(steps, MAX_STEPS) + 1):
                if not going():
                    break
                deadline = time.monotonic() + rules.timeout
                await page.evaluate(STEP_WATCH_JS, f"rate ≥ τ={STEP_FROM - step / 100:.2f}")
                await page.get_by_role("slider").first.focus()
                await page.keyboard.press("ArrowLeft")
                error = await wait_for(page, "() => window.__shown !== null", None, deadline, rules.stopped)
                if error:
                    return times, [f"τ step {step}: {error}"]
                times.append(await page.evaluate("() => (window.__shown - window.__pressed) / 1000"))
                await asyncio.sleep(STEP_PAUSE)  # as a hand on the slider: the rest of the page may still be drawing
        except (PlaywrightError, asyncio.TimeoutError) as error:
            return times, [f"τ step {len(times) + 1}: {str(error).splitlines()[0][:300] or 'timeout'}"]
    return times, []


# ----- a classroom, a lone visitor ------------------------------------------------------------------------------


async def classroom(browser: Any, base: str, visitors: list[Visitor], delays: list[float], rules: Rules,
                    client: str, steps: int) -> tuple[list[Visit], list[float], list[str]]:
    """The lecturer (the τ stepper, with ``steps``) opens Activations first; once it shows, every visitor arrives
    (each after its delay) while the lecturer steps τ for as long as any visitor is still browsing. Returns the
    visits (visitor by visitor, page by page), the τ steps' seconds and the stepper's errors."""
    browsing = len(visitors)
    ready = asyncio.Event()

    async def one(visitor: Visitor, delay: float) -> list[Visit]:
        nonlocal browsing
        await ready.wait()
        try:
            return await attend(browser if client == "browser" else None, base, visitor, delay, rules)
        finally:
            browsing -= 1

    if steps:
        stepper = tau_steps(browser, base, rules, steps, lambda: browsing > 0, ready)
    else:
        ready.set()
        stepper = asyncio.sleep(0, result=([], []))
    *results, (times, errors) = await asyncio.gather(*(one(v, d) for v, d in zip(visitors, delays, strict=True)),
                                                    stepper)
    return [visit for visits in results for visit in visits], times, errors


async def lone_answers(browser: Any, base: str, views: list[View], rules: Rules, client: str) -> dict[View, Visit]:
    """One visitor alone opens Activations once (to warm the server), then every view in turn."""
    answers = {}
    async with opener(browser if client == "browser" else None) as open_one:
        await open_one(base, View("activations", (("run", RUNS[0]),)), -1, rules)
        for view in views:
            answers[view] = await open_one(base, view, -1, rules)
            rules.done()
    return answers


def difference(answer: dict[str, Any] | None, reference: dict[str, Any] | None) -> str | None:
    """Where two answers first differ, in a few words; None when they are equal."""
    if answer == reference:
        return None
    if answer is None or reference is None:
        return "no answer" if answer is None else "the lone visitor got no answer"
    texts, charts = answer["texts"], answer["charts"]
    if texts != reference["texts"]:
        missing = [t[:200] for t in reference["texts"] if t not in texts]
        extra = [t[:200] for t in texts if t not in reference["texts"]]
        if not missing and not extra:
            return "the same texts as the lone visitor's, in another order or number"
        return f"texts only the lone visitor saw: {missing[:3]}; texts only this visitor saw: {extra[:3]}"
    if len(charts) != len(reference["charts"]):
        return f"{len(charts)} charts where the lone visitor saw {len(reference['charts'])}"
    for i, (a, b) in enumerate(zip(charts, reference["charts"], strict=True)):
        if a != b:
            names = [t["name"] for t in a][:6]
            return f"chart {i} (traces {names}) has other data than the lone visitor's"
    return "answers differ"


def mismatches(visits: list[Visit], reference: dict[View, Visit]) -> dict[int, list[str]]:
    """Per visitor, each page whose answer differs from the lone visitor's (or that had no answer), and how."""
    found: dict[int, list[str]] = {}
    for visit in visits:
        lone = reference.get(visit.view)
        why = difference(visit.answer, lone.answer if lone else None)
        if why:
            found.setdefault(visit.visitor, []).append(f"{visit.view.label()}: {why}")
    return found


# ----- the server and its memory --------------------------------------------------------------------------------


def server_command() -> list[str]:
    """The dashboard as ``make run`` starts it, without the training form ("PORT" is filled in at start)."""
    return [sys.executable, "-m", "dashboard.serve", "--host", "127.0.0.1", "--port", "PORT",
            "--runs-dir", str(ROOT / "assets" / "demo"), "--no-training"]


def server_env() -> dict[str, str]:
    env = dict(os.environ, STREAMLIT_SERVER_FILE_WATCHER_TYPE="none")
    env.pop("MODA_RUNS_DIR", None)
    return env


@contextlib.contextmanager
def served(timeout: float = 120) -> Iterator[Server]:
    """A fresh dashboard server, answering its health check; stopped on exit."""
    with Server("dashboard", server_command(), server_env(), timeout) as server:
        server.wait_healthy()
        yield server


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def rss_of(processes: list[int]) -> int:
    """The summed resident memory (VmRSS) of ``processes``, in bytes (pages they share are counted in each)."""
    total = 0
    for process in processes:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{process}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def memory_available() -> int:
    """The machine's MemAvailable (/proc/meminfo), in bytes."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


class MemorySampler:
    """While in a ``with``, every ``SAMPLE_SECONDS`` (in a thread): the server's resident memory (its process and
    every process below it), the browser's (every process below this one but the server's: Playwright's driver and
    Chromium) and the machine's available memory."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.server: list[int] = []
        self.browser: list[int] = []
        self.available: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def take(self) -> None:
        server = descendants(self.server_pid)
        browser = set(descendants(os.getpid())) - set(server) - {os.getpid()}
        self.server.append(rss_of(server))
        self.browser.append(rss_of(sorted(browser)))
        self.available.append(memory_available())

    def sample(self) -> None:
        while True:
            self.take()
            if self.stop.wait(SAMPLE_SECONDS):
                return

    def __enter__(self) -> MemorySampler:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.take()


# ----- the benchmark ---------------------------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float | None:
    """The nearest-rank percentile (``share`` in (0, 1]); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def progress_bar(total: int, what: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=what, unit="page", file=sys.stderr, mininterval=1.0, leave=True)


async def one_classroom(browser: Any, visitors: list[Visitor], args: argparse.Namespace,
                        reference: dict[View, Visit]) -> dict[str, Any]:
    """A fresh server, the classroom on it, its memory sampled; the round's raw results and summary."""
    delays = arrivals(len(visitors), args.spread, args.seed)
    with served(args.timeout) as server, MemorySampler(server.process.pid) as memory:
        with progress_bar(sum(len(v.pages) for v in visitors), f"{len(visitors)} visitors") as bar:
            started = time.perf_counter()
            rules = Rules(args.timeout, reference=reference, done=bar.update,
                          evidence=args.evidence / f"{len(visitors)}-visitors" if args.evidence else None)
            visits, steps, step_errors = await classroom(browser, server.url, visitors, delays, rules, args.client,
                                                         args.steps)
            seconds = time.perf_counter() - started
        output = server.output()
        tracebacks = output.count("Traceback")
        if args.evidence and tracebacks:
            (args.evidence / f"{len(visitors)}-visitors").mkdir(parents=True, exist_ok=True)
            (args.evidence / f"{len(visitors)}-visitors" / "server.log").write_text(output)
    summary = summarize_round(visitors, visits, reference, memory, seconds, tracebacks)
    summary["first_traceback"] = first_traceback(output)
    summary["tau_steps"], summary["errors"] = steps, summary["errors"] + step_errors
    return summary


def first_traceback(output: str, lines: int = 12) -> str | None:
    """The last ``lines`` lines of the first traceback the server printed (where it was raised, and what)."""
    start = output.find("Traceback")
    if start < 0:
        return None
    block = output[start:].splitlines()
    end = next((i for i, line in enumerate(block[1:], 1) if line and not line.startswith((" ", "Traceback"))), 0)
    return "\n".join(block[max(1, end - lines + 1):end + 1])


def summarize_round(visitors: list[Visitor], visits: list[Visit], reference: dict[View, Visit],
                    memory: MemorySampler, seconds: float, tracebacks: int) -> dict[str, Any]:
    differing = mismatches(visits, reference)
    first_chart = {}
    for page in PAGES:
        times = [v.first_chart for v in visits if v.view.page == page and v.first_chart is not None]
        first_chart[page] = {"p50": percentile(times, 0.5), "p95": percentile(times, 0.95), "count": len(times)}
    return {"visitors": len(visitors), "seconds": seconds,
            "errors": [f"visitor {v.visitor} {v.view.label()}: {e}" for v in visits for e in v.errors],
            "timeouts": sum(e.startswith(TIMEOUT_ERROR) for v in visits for e in v.errors),
            "equal": len(visitors) - len(differing), "differing": differing, "first_chart": first_chart,
            "rss_peak": max(memory.server), "rss_end": memory.server[-1], "browser_rss_peak": max(memory.browser),
            "available_low": min(memory.available), "server_tracebacks": tracebacks,
            "visits": [v.summary() for v in visits]}


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    raw: dict[str, Any] = {"date": datetime.now().isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                           "load_start": load_average(), "spread": args.spread, "seed": args.seed,
                           "client": args.client, "steps": args.steps, "rounds": []}
    visitors = make_visitors(max(args.visitors), args.seed)
    views = distinct_views(visitors)
    warm_file_cache()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            raw["chromium"] = browser.version
            log(f"lone visitor: {len(views)} distinct views on a server of its own")
            with served(args.timeout) as server:
                rules = Rules(args.timeout, evidence=args.evidence / "lone" if args.evidence else None)
                if args.steps:
                    log(f"lone visitor: {args.steps} τ steps on Activations")
                    raw["lone_tau_steps"], step_errors = await tau_steps(browser, server.url, rules, args.steps)
                else:
                    raw["lone_tau_steps"], step_errors = [], []
                with progress_bar(len(views), "lone visitor") as bar:
                    rules.done = bar.update
                    reference = await lone_answers(browser, server.url, views, rules, args.client)
            raw["lone_errors"] = [f"{v.view.label()}: {e}" for v in reference.values() for e in v.errors]
            raw["lone_errors"] += step_errors
            for count in args.visitors:
                log(f"classroom of {count} on a fresh server")
                raw["rounds"].append(await one_classroom(browser, visitors[:count], args, reference))
        finally:
            await browser.close()
    raw["load_end"] = load_average()
    return raw


# ----- the report ------------------------------------------------------------------------------------------------


def seconds_pair(stats: dict[str, Any]) -> str:
    if stats["p50"] is None:
        return "—"
    return f"{stats['p50']:.2f} / {stats['p95']:.2f}"


def table(raw: dict[str, Any]) -> str:
    pages = " | ".join(f"{name} p50 / p95 (s)" for name, _ in PAGES.values())
    lone = percentile(raw.get("lone_tau_steps") or [], 0.5)
    lines = [f"| visitors | errors (timeouts) | answers equal to a lone visitor's | {pages} | τ step p50 / p95 (s), "
             "p50 vs alone | peak server RSS (MB) |",
             "|---:|---:|---:|" + "---:|" * len(PAGES) + "---:|---:|"]
    for r in raw["rounds"]:
        times = " | ".join(seconds_pair(r["first_chart"][page]) for page in PAGES)
        steps = r.get("tau_steps") or []
        step = "—"
        if steps:
            p50 = percentile(steps, 0.5)
            step = f"{p50:.2f} / {percentile(steps, 0.95):.2f} ({len(steps)})"
            if lone:
                step += f", {p50 / lone:.2f}×"
        lines.append(f"| {r['visitors']} | {len(r['errors'])} ({r['timeouts']}) | {r['equal']} of {r['visitors']} | "
                     f"{times} | {step} | {r['rss_peak'] / 1e6:.0f} (end {r['rss_end'] / 1e6:.0f}) |")
    return "\n".join(lines)


def details(raw: dict[str, Any]) -> list[str]:
    """Errors and differing answers, round by round, and the lone visitor's own errors."""
    lines = []
    if raw.get("lone_errors"):
        lines += ["", "The lone visitor's errors (its answers for those pages are missing):"]
        lines += [f"- {e}" for e in raw["lone_errors"]]
    for r in raw["rounds"]:
        lines += ["", f"{r['visitors']} visitors: the classroom took {r['seconds']:.0f} s; the server printed "
                  f"{r['server_tracebacks']} traceback(s); the browser (Playwright's driver and Chromium, resident "
                  f"memory summed over its processes) peaked at {r['browser_rss_peak'] / 1e6:.0f} MB and the "
                  f"machine's available memory fell to {r['available_low'] / 1e6:.0f} MB."]
        lines += [f"- error: {e.splitlines()[0]}" for e in r["errors"]]
        if r.get("first_traceback"):
            lines += ["", "The server's first traceback ends:", "", "```", r["first_traceback"], "```"]
        lines += [f"- visitor {v} differs: {why}" for v, whys in sorted(r["differing"].items()) for why in whys]
    return lines


def report(raw: dict[str, Any]) -> str:
    head = (f"Classroom on one dashboard server (`python -m bench.classroom`), {raw['date']}: Chromium "
            f"{raw['chromium']}, {raw['cpus']} CPU cores shared by the browser and the server, load average "
            f"(1, 5, 15 min) {', '.join(map(str, raw['load_start']))} at the start and "
            f"{', '.join(map(str, raw['load_end']))} at the end. Each visitor count meets a fresh server"
            + ("; the lecturer (one more browser context) opens Activations on it first, then " if raw.get("steps")
               else " that nobody has visited; ")
            + f"visitors arrive within {raw['spread']:g} s (seed {raw['seed']}), "
            + (f"each in its own browser context at {VIEWPORT['width']}×{VIEWPORT['height']}, "
               if raw.get("client", "browser") == "browser" else
               "each a client of Streamlit's websocket protocol (no browser: the server has the cores), ")
            + "and open Activations, the Module map and Compose with parameters of their own. Times: "
            + ("navigation start → first chart drawn. " if raw.get("client", "browser") == "browser" else
               "connection start → first chart received. ")
            + "Answers are compared with a lone visitor's (the same client) on a warm server of its own."
            + (f" τ step: the lecturer presses ← on Activations' τ slider (up to {raw['steps']} times, half a "
               "second after each redraw) while the visitors browse (key press → heatmap redrawn, timed in the "
               "page; number of steps in brackets); alone on a fresh server: "
               f"p50 {percentile(raw['lone_tau_steps'], 0.5):.2f} s, "
               f"p95 {percentile(raw['lone_tau_steps'], 0.95):.2f} s." if raw.get("lone_tau_steps") else ""))
    return "\n".join([head, "", table(raw), *details(raw)]) + "\n"


def main() -> None:
    parser = BenchParser(__doc__, quick={"visitors": [1, 3], "steps": 2}, out="write the Markdown report here")
    parser.add_argument("--visitors", type=int, nargs="+", default=[1, 10, 30], help="classroom sizes, in turn")
    parser.add_argument("--spread", type=float, default=5.0, help="visitors arrive within this many seconds")
    parser.add_argument("--seed", type=int, default=0, help="draws the visitors' parameters and arrival times")
    parser.add_argument("--timeout", type=float, default=300, help="seconds one page may take to finish")
    parser.add_argument("--client", choices=("browser", "protocol"), default="browser",
                        help="each visitor a Chromium context (browser), or a client of Streamlit's websocket "
                        "protocol without a browser (protocol), so that the server has the machine's cores")
    parser.add_argument("--steps", type=int, default=MAX_STEPS, help="at most this many τ steps by the lecturer, "
                        "alone and in each classroom (0: no lecturer; the visitors then meet a server nobody has "
                        "visited)")
    parser.add_argument("--evidence", type=Path, help="a folder where every visit that erred or whose answer "
                        "differs leaves a screenshot, its main area's HTML and both answers")
    args = parser.parse_args()
    if CHROMIUM is None:
        sys.exit("bench.classroom needs Chromium (Debian: apt-get install chromium)")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        sys.exit("bench.classroom needs the playwright Python package (the browser is Debian's chromium, never "
                 "`playwright install`)")
    try:
        raw = asyncio.run(measure(args))
    except BenchError as error:
        sys.exit(f"bench.classroom: {error}")
    text = report(raw)
    if args.out:
        write_result(args.out, text)
    show(args, raw, text)
    if any(r["errors"] or r["differing"] for r in raw["rounds"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
