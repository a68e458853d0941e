"""Text from a runs folder (folder and run names, class names, error messages) is shown as plain text on every
page: never as Markdown, a Streamlit directive, KaTeX, a link, an image or HTML, in Streamlit's elements
(AppTest: what the server sends) and in plotly's figures; and in the real browser no element comes from a run's
name and no request leaves the server's origin."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from helpers import APP, CHROMIUM, CHROMIUM_ARGS, DEMO, TIMEOUT, ServedDashboard, charts, open_page

from dashboard.plain_text import WORD_JOINER, code, html_escape, plain

# What a hostile runs folder may hold: Markdown emphasis, a Streamlit colour directive, KaTeX, a link, an
# image from another origin, code spans and HTML. A folder name cannot hold "/", so its link and image reach
# the other host through backslashes (which the browser reads as slashes); a backtick first lets it leave the
# code span the dashboard shows run names in.
FOLDER_NAME = ("x` **b** :red[x] $x^2$ ![e](http:\\\\\\\\example.invalid\\\\e.gif) [l](http:example.invalid) "
               "<b>x<br> www.example.invalid `y")
CLASS_NAMES = ["**b**", ":red[x]", "$x^2$", "[l](http://example.invalid/l)", "![e](http://example.invalid/e.gif)",
               "`t` <b>x</b> <a href='http://example.invalid/a'>a</a> www.example.invalid"]
# markup that must never reach a Markdown body outside a code span, nor a figure
PAYLOADS = ["**b**", ":red[", "$x", "](http", "<b>", "<a ", "www.example"]


def hostile_runs_folder(root: Path) -> Path:
    """A runs folder with a complete run whose class names are hostile, a copy of it whose folder name is
    hostile too, and a broken run (its config.json does not parse) with a hostile folder name."""
    folder = root / "hostile"
    shutil.copytree(DEMO / "swap-weak", folder / "classes", ignore=shutil.ignore_patterns("checkpoints"))
    config = json.loads((folder / "classes" / "config.json").read_text())
    config["data"]["class_names"] = CLASS_NAMES
    (folder / "classes" / "config.json").write_text(json.dumps(config))
    shutil.copytree(folder / "classes", folder / FOLDER_NAME)
    (folder / f"{FOLDER_NAME} broken").mkdir()
    (folder / f"{FOLDER_NAME} broken" / "config.json").write_text("{not json [l](http://example.invalid/x)")
    return folder


# ----- the helpers ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [*CLASS_NAMES, FOLDER_NAME, "a\nb", "``", "` `", "WWW.x.y a@b.c HTTPS://x"])
def test_plain_escapes_every_markdown_special(text):
    escaped = plain(text)
    assert "\n" not in escaped
    # every special character is escaped: removing the escapes (and the word joiners that keep autolinks
    # apart) gives the text back, line breaks as spaces
    assert re.sub(r"\\(.)", r"\1", escaped).replace(WORD_JOINER, "") == text.replace("\n", " ")
    assert not re.search(r"(?<!\\)[*`\[\]<>$:!]", escaped.replace("\\\\", ""))
    assert not re.search(r"(?i)www\\\.|https?\\:/|@\w", escaped)  # no autolink either


@pytest.mark.parametrize("text", [*CLASS_NAMES, FOLDER_NAME, "a``b", "`x`", "plain"])
def test_code_spans_cannot_be_left(text):
    span = code(text)
    fence = re.match(r"`+", span).group()
    assert span.endswith(fence) and fence not in span[len(fence):-len(fence)]
    inner = span[len(fence):-len(fence)]
    assert inner.strip(" ") == text.strip(" ")
    assert code("demo/vgg11-moda") == "`demo/vgg11-moda`"  # an ordinary name looks as it always did


def test_html_escape_leaves_no_tags():
    assert html_escape("<b>x</b> & <a href='h'>") == "&lt;b&gt;x&lt;/b&gt; &amp; &lt;a href='h'&gt;"


# ----- the pages (AppTest: what the server sends) -------------------------------------------------------------

MARKDOWN_ELEMENTS = ("markdown", "caption", "info", "warning", "error", "success", "title", "subheader")


def outside_code_and_escapes(body: str) -> str:
    """A Markdown body as the renderer reads it for markup: code spans and backslash-escaped characters left
    out (each replaced by a space)."""
    out, i = [], 0
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            out.append(" ")
            i += 2
        elif body[i] == "`":
            fence = re.match(r"`+", body[i:]).group()
            close = re.compile(rf"(?<!`){fence}(?!`)").search(body, i + len(fence))
            if close is None:  # no closing fence: the backticks are text
                out.append(fence)
                i += len(fence)
            else:
                out.append(" ")
                i = close.end()
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def markdown_bodies(app) -> list[str]:
    """Every Markdown body and label the page sends (texts, callouts, expander, widget and metric labels)."""
    bodies = [e.value for kind in MARKDOWN_ELEMENTS for e in app.get(kind)]
    bodies += [e.label for e in app.expander]
    for kind in ("selectbox", "multiselect", "button", "number_input", "slider", "radio", "text_input"):
        bodies += [e.label for e in app.get(kind)]
    bodies += [e.label for e in app.get("metric")]
    bodies += [image.caption for e in app.get("image") for image in e.proto.imgs if image.caption]
    return bodies


def assert_plain(app) -> str:
    """No hostile markup outside code spans in any Markdown body, none in any figure; the bodies, joined."""
    bodies = markdown_bodies(app)
    for body in bodies:
        outside_code = outside_code_and_escapes(body)
        for payload in PAYLOADS:
            assert payload not in outside_code, f"{payload!r} rendered as Markdown in {body!r}"
    for figure in charts(app).values():
        text = json.dumps(figure)
        assert "<b>" not in text and "<a " not in text, "HTML from a name in a figure"
    return "\n".join(bodies)


PAGES = ("runs", "activations", "modules", "evolution", "tau", "compose", "swap")


@pytest.mark.usefixtures("dashboard_pages")
def test_names_and_errors_from_a_runs_folder_are_sent_as_plain_text(monkeypatch, tmp_path):
    folder = hostile_runs_folder(tmp_path)
    monkeypatch.setenv("MODA_RUNS_DIR", str(folder))
    seen = []
    app = open_page("runs")
    for spec in app.selectbox(key="runs_run").options:  # the hostile folder name too, if it is listed complete
        open_page("runs", app).selectbox(key="runs_run").set_value(spec).run()
        for page in PAGES:
            open_page(page, app)
            seen.append(assert_plain(app))
    shown = "\n".join(seen)
    # the names are shown (escaped), not dropped
    assert f"true: {plain(CLASS_NAMES[0])}" in shown  # the test image's caption
    assert f"classes {plain(CLASS_NAMES[0])}, {plain(CLASS_NAMES[1])} in that order" in shown  # Compose
    assert "could not be loaded" in shown and "broken" in shown  # the broken run's expander and its warning
    assert code(f"hostile/{FOLDER_NAME} broken") in shown  # the broken run is named, in a code span it cannot leave
    figures = json.dumps(list(charts(open_page("activations", app)).values()))
    assert html_escape(CLASS_NAMES[5]) in figures  # a heatmap's row, as text


@pytest.mark.usefixtures("dashboard_pages")
def test_hostile_url_parameters_are_quoted_as_plain_text(demo_env):
    from streamlit.testing.v1 import AppTest

    from dashboard.ui import PAGE_STOPPED

    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    hostile = "x` **b** ![e](http://h.invalid/e) <b>x</b> :red[x] $x$"  # short enough to be quoted whole
    app.query_params.update({"run": hostile, "tau": hostile, "point": hostile, "image": hostile})
    app.switch_page("views/activations.py")
    app.run()
    assert not app.exception and not [e for e in app.error if e.value.startswith(PAGE_STOPPED)]
    notes = [i.value for i in app.info]
    assert len(notes) == 4, notes  # the run, τ, point and image each get their note
    assert all(code(hostile) in note for note in notes), notes
    assert_plain(app)


# ----- the real browser -----------------------------------------------------------------------------------

# elements a name must never become: links, images, emphasis, KaTeX, Streamlit's coloured text
LEAKS_JS = """() => {
  const found = [];
  for (const e of document.querySelectorAll('img')) {
    if (!e.src.startsWith(location.origin) && !e.src.startsWith('data:') && !e.src.startsWith('blob:'))
      found.push('img ' + e.src);
  }
  for (const e of document.querySelectorAll('a')) {
    const href = e.getAttribute('href') || e.getAttribute('xlink:href') || '';
    if (href.includes('example.invalid') || e.textContent.includes('example.invalid') || e.textContent === 'l')
      found.push('a ' + href + ' ' + e.textContent);
  }
  for (const e of document.querySelectorAll('strong, b, em, del, s, .katex, [class*="Colored"]')) {
    if (/^(b|x|t|x\\^2)$/.test(e.textContent.trim())) found.push(e.tagName + ' ' + e.textContent);
  }
  for (const e of document.querySelectorAll('svg tspan')) {
    if ((e.getAttribute('style') || '').includes('bold') && e.textContent.trim() === 'x')
      found.push('bold tspan ' + e.textContent);
  }
  return found;
}"""


# a text each page shows once it has drawn the parts that show names
LAST_TEXT = {"runs": "Train a new run", "activations": "predicted: ", "modules": "Where the overlap lives",
             "evolution": "Not computed yet", "tau": "Not computed yet", "compose": "Download the composed module",
             "swap": "a swap repairs one model"}  # both pickers open on the same run: the page says why it stops


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt-get install chromium)")
def test_no_element_comes_from_a_name_and_nothing_is_fetched_from_elsewhere(tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright python package is missing")
    import os

    folder = hostile_runs_folder(tmp_path)
    env = dict(os.environ, MODA_RUNS_DIR=str(folder), STREAMLIT_SERVER_FILE_WATCHER_TYPE="none")
    with ServedDashboard(env, ("--host", "127.0.0.1"), start_timeout=60) as served, \
            playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1900})
            page.set_default_timeout(120_000)
            requests: list[str] = []
            page.on("request", lambda request: requests.append(request.url))
            for name in PAGES:
                page.goto(f"{served.url}/{name}")
                page.get_by_text(LAST_TEXT[name]).first.wait_for()
                page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')")
                page.wait_for_timeout(1000)  # figures and images draw after the run
                assert page.locator("[data-testid='stException']").count() == 0, name
                assert page.get_by_text("This page stopped").count() == 0, name
                assert page.evaluate(LEAKS_JS) == [], name
                text = page.evaluate("() => document.body.textContent")
                if name == "runs":  # the broken run's warning, in its collapsed expander, shows the name as written
                    assert FOLDER_NAME in text, text[:3000]
                if name == "activations":  # class names as written: in the image caption and the figures
                    assert "true: " in text and ("**b**" in text or ":red[x]" in text), text[:3000]
                    assert "<b>x</b>" in text
            outside = [u for u in requests if not u.startswith(served.url) and not u.startswith(("data:", "blob:"))]
            assert outside == [], outside
        finally:
            browser.close()
