"""How fast the dashboard answers in a real browser, next to a bare Streamlit app served the same way in the same run.

Both servers start on a free port of 127.0.0.1 with the same serving flags (``dashboard.serve.streamlit_command``:
headless, no usage statistics, no error details, viewer toolbar; no file watcher) and the repository as the folder
they start in: the dashboard as ``python -m dashboard.serve --runs-dir assets/demo`` (what ``make run`` starts), the
bare app as ``python -m streamlit run bare.py``, a title, a τ slider and a plotly heatmap of 10×128 random cells
redrawn from the slider's value (no torch). Debian's Chromium, driven with Playwright (the browser test's executable
and flags, ``bench/browser.py``), opens each at 1280×800 in a fresh browser context and measures:

- start: process start → the landing page's first heading visible (and → its first chart drawn), the median of
  ``--starts`` starts of each app, alternating; ratio dashboard / bare.
- τ slider step: on Activations (demo ``vgg11-moda``, τ = 0.90) the slider is focused and ArrowLeft pressed; the
  time until the heatmap shows the new τ (its legend "rate ≥ τ=0.89"); on the bare app until the heatmap's title
  shows it. The median of ``--steps`` steps, the app left to finish its run between steps.
- page switch: a sidebar link clicked (How → Activations → Modules → Modules over training → τ trade-off → Compose
  → Runs & training → How), timed until the new page's heading is shown, nothing of the previous page is left and a
  chart drawn after the click is on screen; once on a server that has not shown the page yet (first visit), once
  again (warm caches). The headline is the warm round's slowest page.
- Compose export: on Compose (demo ``vgg11-moda``, τ = 0.90, classes 0 and 1), "Export as .pt2" clicked → the
  "Download module" button visible.

Before the first start, one interpreter imports streamlit, plotly and torch, so that both apps start from a warm
file cache. The load average is printed at the start and the end: the targets (start ≤ 1.5× the bare app's, a
slider step ≤ 0.3 s and ≤ 2× the bare app's, page switch ≤ 1 s, export ≤ 2 s) are meant for a quiet 2-core machine.
The committed table is bench/results/dashboard.md (``--out bench/results/dashboard.md``); ``--quick``: one start
of each app and 2 slider steps. Never installs a browser (no Chromium or Playwright: it says so and stops).

    python -m bench.dashboard [--starts 3] [--steps 7] [--timeout 120] [--quick] [--json] [--out FILE]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.browser import CHROMIUM, CHROMIUM_ARGS, free_port, stop_process
from bench.common import ROOT, BenchParser, log, show, write_result
from dashboard.serve import APP, streamlit_command

VIEWPORT = {"width": 1280, "height": 800}
DEMO_RUN = "demo/vgg11-moda"
TAU = 0.90
DASHBOARD_HEADING = "How MODA works"  # the landing page ("/")
BARE_HEADING = "Bare Streamlit app"
# sidebar links, in the order they are clicked (starting from the landing page)
PAGES = ["Activations", "Modules", "Modules over training", "τ trade-off", "Compose", "Runs & training",
         "How MODA works"]
TARGETS = {"start": "ratio ≤ 1.5", "slider": "≤ 0.3 s and ratio ≤ 2", "switch": "≤ 1 s", "export": "≤ 2 s"}

BARE_APP = '''"""A bare Streamlit app: a title, a slider and a heatmap redrawn from its value (bench/dashboard.py)."""
import numpy as np
import plotly.graph_objects as go
import streamlit as st

st.title("Bare Streamlit app")
tau = st.slider("Threshold τ", min_value=0.5, max_value=1.0, value=0.9, step=0.01)
cells = np.random.default_rng(round(tau * 100)).random((10, 128))
figure = go.Figure(go.Heatmap(z=cells, zmin=0, zmax=1, colorscale="Viridis"))
figure.update_layout(title=f"random cells, rate ≥ τ={tau:.2f}", height=360)
st.plotly_chart(figure)
'''

# the page's first heading (st.title), or "" while there is none
HEADING_JS = """() => { const h = document.querySelector("[data-testid='stMain'] h1");
                        return h ? h.innerText.trim() : ''; }"""
# remember every chart drawn so far (plotly replaces a chart's _fullLayout each time it draws it)
MARK_CHARTS_JS = """() => { window.__benchSeen = new Set([...document.querySelectorAll('.js-plotly-plot')]
                                                         .map(chart => chart._fullLayout)); }"""
# a new page: another first heading, nothing of the previous run left (stale), a chart drawn since MARK_CHARTS_JS
SWITCHED_JS = """previous => {
  const h = document.querySelector("[data-testid='stMain'] h1");
  if (!h || h.innerText.trim() === previous) return false;
  if (document.querySelector("[data-stale='true']")) return false;
  const seen = window.__benchSeen || new Set();
  return [...document.querySelectorAll('.js-plotly-plot')]
    .some(chart => chart.querySelector('.main-svg') && chart._fullLayout && !seen.has(chart._fullLayout));
}"""
CHART_DRAWN_JS = "() => [...document.querySelectorAll('.js-plotly-plot')].some(c => c.querySelector('.main-svg'))"
READY_JS = "() => !document.querySelector(\"[data-testid='stStatusWidget']\")"


class BenchError(RuntimeError):
    """A measurement that could not be made (a server that did not start, a wait that timed out)."""


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


class Server:
    """One Streamlit server in a subprocess (its output to a log file), stopped on exit whatever happens."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], timeout: float) -> None:
        self.name, self.command, self.env, self.timeout = name, command, env, timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.log = tempfile.TemporaryFile()
        command = [part if part != "PORT" else str(self.port) for part in self.command]
        self.started = time.perf_counter()
        self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        return self

    def wait_healthy(self) -> float:
        """Seconds from process start until the health check answers."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - self.started
            except OSError:
                pass
            if self.process.poll() is not None:
                raise BenchError(f"the {self.name} exited with {self.process.returncode} before answering:\n"
                                 f"{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise BenchError(f"the {self.name} did not answer on {self.url} within {self.timeout:.0f} s:\n"
                                 f"{self.output()[-3000:]}")
            time.sleep(0.05)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def __exit__(self, *_exc: object) -> None:
        stop_process(self.process)
        self.log.close()


def commands(bare_file: Path) -> dict[str, list[str]]:
    """The two servers' command lines ("PORT" filled in at start): the dashboard as ``make run`` starts it, the
    bare app with the very flags ``dashboard.serve`` hands Streamlit (its app path swapped for the bare one)."""
    bare = [str(bare_file) if part == str(APP) else part for part in streamlit_command("127.0.0.1", 0)]
    bare[bare.index("--server.port") + 1] = "PORT"
    dashboard = [sys.executable, "-m", "dashboard.serve", "--host", "127.0.0.1", "--port", "PORT",
                 "--runs-dir", str(ROOT / "assets" / "demo")]
    return {"dashboard": dashboard, "bare": bare}


@contextlib.contextmanager
def browser_page(browser: Any, timeout_ms: float) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.set_default_timeout(timeout_ms)
        yield page
    finally:
        context.close()


def waited(page: Any, what: str, timeout_ms: float, function: str, arg: Any = None) -> None:
    """``page.wait_for_function``, failing with a sentence that says what did not happen."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(function, arg=arg, timeout=timeout_ms, polling="raf")
    except PlaywrightTimeout as error:
        raise BenchError(f"timed out after {timeout_ms / 1000:.0f} s waiting for {what} "
                         f"(the page shows heading {page.evaluate(HEADING_JS)!r})") from error


def wait_visible(locator: Any, what: str, timeout_ms: float) -> None:
    """``locator.first.wait_for``, failing with a sentence that says what did not show."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        locator.first.wait_for(timeout=timeout_ms)
    except PlaywrightTimeout as error:
        raise BenchError(f"timed out after {timeout_ms / 1000:.0f} s waiting for {what} (the page shows heading "
                         f"{locator.page.evaluate(HEADING_JS)!r})") from error


def wait_text(page: Any, text: str, timeout_ms: float) -> None:
    wait_visible(page.get_by_text(text), f"the text {text!r}", timeout_ms)


# a chart's text (title, legend) that contains the argument; checked on every animation frame: a locator's wait
# polls less and less often (every 500 ms after the first few tries), which would round a slow step up by as much
CHART_TEXT_JS = "t => [...document.querySelectorAll('.js-plotly-plot text')].some(e => e.textContent.includes(t))"
BUTTON_JS = "t => [...document.querySelectorAll('button')].some(b => b.innerText.includes(t) && b.checkVisibility())"


def wait_ready(page: Any, timeout_ms: float) -> None:
    """The app has finished its run (no running indicator) and shows no exception."""
    waited(page, "the app to finish its run (Streamlit's status widget to go)", timeout_ms, READY_JS)
    exception = page.locator("[data-testid='stException']")
    if exception.count():
        raise BenchError(f"the page shows an exception: {exception.first.inner_text()[:500]}")
    if page.get_by_text("This page stopped").count():
        raise BenchError(f"the page stopped: {page.get_by_text('This page stopped').first.inner_text()[:500]}")


def measure_start(browser: Any, name: str, command: list[str], env: dict[str, str], heading: str,
                  timeout: float) -> dict[str, float]:
    """Start a server, open "/" in a fresh context: seconds from process start to health, heading, first chart."""
    with Server(name, command, env, timeout) as server, browser_page(browser, timeout * 1000) as page:
        health = server.wait_healthy()
        page.goto(f"{server.url}/", wait_until="commit")
        waited(page, f"the heading {heading!r}", timeout * 1000, "h => [...document.querySelectorAll('h1')]"
               ".some(e => e.innerText.trim() === h && e.checkVisibility())", heading)
        first_heading = time.perf_counter() - server.started
        waited(page, "the first chart", timeout * 1000, CHART_DRAWN_JS)
        first_chart = time.perf_counter() - server.started
        wait_ready(page, timeout * 1000)
    return {"health": health, "heading": first_heading, "chart": first_chart}


def slider_steps(page: Any, steps: int, timeout_ms: float) -> list[float]:
    """Press ArrowLeft on the first slider ``steps`` times from τ = 0.90: seconds until "rate ≥ τ=NEW" shows."""
    times = []
    for step in range(1, steps + 1):
        expected = f"rate ≥ τ={TAU - step / 100:.2f}"
        page.get_by_role("slider").first.focus()
        pressed = time.perf_counter()
        page.keyboard.press("ArrowLeft")
        waited(page, f"a chart showing {expected!r}", timeout_ms, CHART_TEXT_JS, expected)
        times.append(time.perf_counter() - pressed)
        wait_ready(page, timeout_ms)
    return times


def page_switches(page: Any, timeout_ms: float, times: dict[str, float]) -> dict[str, float]:
    """Click each sidebar link of PAGES in turn: seconds until that page's heading and a freshly drawn chart show
    (into ``times``, by link)."""
    for link in PAGES:
        previous = page.evaluate(HEADING_JS)
        page.evaluate(MARK_CHARTS_JS)
        clicked = time.perf_counter()
        page.get_by_role("link", name=link, exact=True).click()
        waited(page, f"the {link!r} page (after the sidebar click) with a chart drawn", timeout_ms, SWITCHED_JS,
               previous)
        times[link] = time.perf_counter() - clicked
        shown = page.evaluate(HEADING_JS)
        if shown != link:
            log(f"  note: the {link!r} link opened a page headed {shown!r}")
        wait_ready(page, timeout_ms)
    return times


def measure_dashboard(browser: Any, command: list[str], env: dict[str, str], steps: int, timeout: float,
                      attempt: Callable[[str, Callable[[], Any]], Any]) -> dict[str, Any]:
    """Page switches (first visit, then again), the τ slider on Activations and the Compose export, on one server;
    each through ``attempt``, so that one that fails leaves the others measured."""
    result: dict[str, Any] = {}
    ms = timeout * 1000
    query = f"run={DEMO_RUN}&tau={TAU:.2f}"
    with Server("dashboard", command, env, timeout) as server, browser_page(browser, ms) as page:
        if attempt("dashboard start", server.wait_healthy) is None:
            return result

        def landing() -> bool:
            page.goto(f"{server.url}/?{query}")
            waited(page, f"the heading {DASHBOARD_HEADING!r}", ms, "h => [...document.querySelectorAll('h1')]"
                   ".some(e => e.innerText.trim() === h)", DASHBOARD_HEADING)
            wait_ready(page, ms)
            return True

        if attempt("dashboard landing page", landing):
            for round_name in ("first_visit", "again"):
                log(f"dashboard: page switches ({round_name.replace('_', ' ')})")
                switches = result[f"switch_{round_name}"] = {}  # what was measured stays, should a page fail
                attempt(f"page switches ({round_name.replace('_', ' ')})",
                        lambda switches=switches: page_switches(page, ms, switches))

        def slider() -> list[float]:
            page.goto(f"{server.url}/activations?{query}")
            wait_text(page, f"rate ≥ τ={TAU:.2f}", ms)
            wait_ready(page, ms)
            return slider_steps(page, steps, ms)

        log("dashboard: τ slider on Activations")
        result["slider"] = attempt("dashboard slider", slider)

        def export() -> float:
            page.goto(f"{server.url}/compose?{query}")
            wait_text(page, "Accuracy on these classes", ms)
            wait_ready(page, ms)
            clicked = time.perf_counter()
            page.get_by_role("button", name="Export as .pt2").click()
            waited(page, "the 'Download module' button", ms, BUTTON_JS, "Download module")
            elapsed = time.perf_counter() - clicked
            wait_ready(page, ms)
            return elapsed

        log("dashboard: Compose export")
        result["export"] = attempt("Compose export", export)
    return result


def measure_bare(browser: Any, command: list[str], env: dict[str, str], steps: int, timeout: float) -> list[float]:
    ms = timeout * 1000
    with Server("bare app", command, env, timeout) as server, browser_page(browser, ms) as page:
        server.wait_healthy()
        page.goto(f"{server.url}/")
        wait_text(page, f"rate ≥ τ={TAU:.2f}", ms)
        wait_ready(page, ms)
        return slider_steps(page, steps, ms)


def warm_file_cache() -> None:
    """Import what the two apps import once, so that neither start pays for a cold disk."""
    subprocess.run([sys.executable, "-c", "import streamlit.web.cli, plotly.graph_objects, pandas, torch"],
                   cwd=ROOT, check=True, capture_output=True)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers from the raw timings (medians and maxima; None where a measure failed)."""
    def median(values: list[float] | None) -> float | None:
        return statistics.median(values) if values else None

    starts = raw.get("starts", {})
    out: dict[str, Any] = {}
    for key in ("heading", "chart", "health"):
        dash = median([s[key] for s in starts.get("dashboard", [])])
        bare = median([s[key] for s in starts.get("bare", [])])
        out[f"start_{key}"] = {"dashboard": dash, "bare": bare, "ratio": ratio(dash, bare)}
    dash, bare = median(raw.get("dashboard", {}).get("slider")), median(raw.get("bare_slider"))
    out["slider_step"] = {"dashboard": dash, "bare": bare, "ratio": ratio(dash, bare)}
    for round_name in ("first_visit", "again"):
        switches = raw.get("dashboard", {}).get(f"switch_{round_name}") or {}
        out[f"page_switch_{round_name}"] = {"pages": switches, "max": max(switches.values()) if switches else None}
    out["compose_export"] = raw.get("dashboard", {}).get("export")
    return out


def seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def factor(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def table(raw: dict[str, Any], summary: dict[str, Any]) -> str:
    s = summary
    start, slider = s["start_heading"], s["slider_step"]
    rows = [
        ("server start → first heading (s)", start["dashboard"], start["bare"], start["ratio"], TARGETS["start"]),
        ("server start → first chart (s)", s["start_chart"]["dashboard"], s["start_chart"]["bare"],
         s["start_chart"]["ratio"], ""),
        ("server start → health check answers (s)", s["start_health"]["dashboard"], s["start_health"]["bare"],
         s["start_health"]["ratio"], ""),
        (f"τ slider step → heatmap redrawn (s, median of {raw['steps']})", slider["dashboard"], slider["bare"],
         slider["ratio"], TARGETS["slider"]),
        ("page switch → chart drawn, slowest page, warm (s)", s["page_switch_again"]["max"], None, None,
         TARGETS["switch"]),
        ("page switch → chart drawn, slowest page, first visit (s)", s["page_switch_first_visit"]["max"], None, None,
         ""),
        ("Compose export → Download button (s)", s["compose_export"], None, None, TARGETS["export"]),
    ]
    lines = ["| measure | MODA Studio | bare Streamlit | ratio | target |", "|---|---:|---:|---:|---|"]
    lines += [f"| {name} | {seconds(d)} | {seconds(b)} | {factor(r)} | {t} |" for name, d, b, r, t in rows]
    warm, first = s["page_switch_again"]["pages"], s["page_switch_first_visit"]["pages"]
    if warm or first:
        lines += ["", "Page switches (sidebar click → that page's chart drawn), seconds:", "",
                  "| page | first visit | again |", "|---|---:|---:|"]
        lines += [f"| {p} | {seconds(first.get(p))} | {seconds(warm.get(p))} |" for p in PAGES]
    return "\n".join(lines)


def report(raw: dict[str, Any], summary: dict[str, Any]) -> str:
    load_start, load_end = raw["load_start"], raw["load_end"]
    head = [f"Dashboard response in Chromium {raw['chromium']} at {VIEWPORT['width']}×{VIEWPORT['height']} "
            f"(`python -m bench.dashboard`), {raw['date']}: {raw['cpus']} CPU cores, load average (1, 5, 15 min) "
            f"{', '.join(map(str, load_start))} at the start and {', '.join(map(str, load_end))} at the end; "
            f"Streamlit {raw['streamlit']}, Python {raw['python']}. Medians of {raw['starts_count']} starts of each "
            f"app and {raw['steps']} slider steps.", ""]
    tail = ["", "Errors: " + "; ".join(raw["errors"])] if raw["errors"] else []
    return "\n".join(head) + "\n" + table(raw, summary) + "\n" + "\n".join(tail)


def run(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sys.exit("bench.dashboard needs the playwright Python package (pip install playwright; the browser is "
                 "Debian's chromium, never `playwright install`)")
    if CHROMIUM is None:
        sys.exit("bench.dashboard needs Chromium (Debian: apt-get install chromium)")
    import streamlit

    raw: dict[str, Any] = {"date": datetime.now().isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                           "load_start": load_average(), "streamlit": streamlit.__version__,
                           "python": platform.python_version(), "starts_count": args.starts, "steps": args.steps,
                           "errors": [], "starts": {"dashboard": [], "bare": []}}
    log(f"load average at the start: {raw['load_start']}")
    env = dict(os.environ, STREAMLIT_SERVER_FILE_WATCHER_TYPE="none")
    env.pop("MODA_RUNS_DIR", None)

    def attempt(what: str, function: Callable[[], Any]) -> Any:
        try:
            return function()
        except BenchError as error:
            message = f"{what}: {error}"
            log(f"FAILED {message}")
            raw["errors"].append(message.splitlines()[0])
            return None

    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        bare_file = Path(folder) / "bare.py"
        bare_file.write_text(BARE_APP)
        command = commands(bare_file)
        warm_file_cache()
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        raw["chromium"] = browser.version
        try:
            for index in range(args.starts):
                for name, heading in (("bare", BARE_HEADING), ("dashboard", DASHBOARD_HEADING)):
                    result = attempt(f"{name} start", lambda n=name, h=heading: measure_start(
                        browser, n, command[n], env, h, args.timeout))
                    if result:
                        log(f"{name} start {index + 1}/{args.starts}: health {result['health']:.2f} s, heading "
                            f"{result['heading']:.2f} s, chart {result['chart']:.2f} s")
                        raw["starts"][name].append(result)
            log("bare app: slider steps")
            raw["bare_slider"] = attempt("bare slider", lambda: measure_bare(
                browser, command["bare"], env, args.steps, args.timeout))
            raw["dashboard"] = measure_dashboard(browser, command["dashboard"], env, args.steps, args.timeout,
                                                 attempt)
        finally:
            browser.close()
    raw["load_end"] = load_average()
    log(f"load average at the end: {raw['load_end']}")
    return raw, summarize(raw)


def main() -> None:
    parser = BenchParser(__doc__, quick={"starts": 1, "steps": 2}, out="write the Markdown report here")
    parser.add_argument("--starts", type=int, default=3, help="starts of each app (the median is reported)")
    parser.add_argument("--steps", type=int, default=7, help="τ slider steps on each app (the median is reported)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds any one wait may take")
    args = parser.parse_args()
    raw, summary = run(args)
    text = report(raw, summary)
    if args.out:
        write_result(args.out, text)
    show(args, {"summary": summary, "raw": raw}, text)
    if raw["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
