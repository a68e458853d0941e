"""Real-browser test: a classroom of 8 on one freshly started dashboard, as bench/classroom.py measures it.

Eight visitors, each in its own browser context of one Chromium, arrive within about a second on a cold server
(``python -m dashboard.serve --runs-dir assets/demo --no-training``) and open Activations, each with a test image of
its own (the demo ``vgg11-moda`` at τ = 0.90, point ``features.7.relu``), then the Module map. No visitor may see an
error (an exception box, "This page stopped", or a page that does not finish), and each page's answer (its visible
texts and its charts' data: ``bench.classroom.ANSWER_JS``) must equal a lone visitor's for the same page and
parameters, taken first on a server of its own. Skips with the reason when Chromium or Playwright is missing.
"""
from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
from helpers import CHROMIUM, CHROMIUM_ARGS

from bench.classroom import (
    RUNS,
    Rules,
    View,
    Visit,
    Visitor,
    arrivals,
    classroom,
    distinct_views,
    lone_answers,
    mismatches,
    served,
)

pytestmark = [pytest.mark.browser, pytest.mark.long,
              pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt-get install chromium)")]

IMAGES = (3, 17, 42, 101, 256, 512, 777, 999)  # one test image per visitor
SPREAD = 1.0  # seconds within which the visitors arrive
TIMEOUT = 180  # seconds one page may take to finish


def visitors() -> list[Visitor]:
    return [Visitor(index, RUNS[0], 0.90, "features.7.relu", image, (0, 1), pages=("activations", "map"))
            for index, image in enumerate(IMAGES)]


def last_traceback(output: str) -> str:
    """The server's last traceback, if it printed one (a few lines, for the failure message)."""
    found = [m.start() for m in re.finditer("Traceback", output)]
    return output[found[-1]:][:2000] if found else ""


async def lone_then_classroom(group: list[Visitor], evidence: Path) -> tuple[dict[View, Visit], list[Visit], str]:
    """The lone visitor's answers (a server of its own), then the classroom on a fresh server; and what the
    classroom's server printed. Visits that err or differ leave their evidence in ``evidence``."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            with served(TIMEOUT) as server:
                reference = await lone_answers(browser, server.url, distinct_views(group), Rules(TIMEOUT), "browser")
            with served(TIMEOUT) as server:
                rules = Rules(TIMEOUT, reference=reference, evidence=evidence)
                visits, _, _ = await classroom(browser, server.url, group, arrivals(len(group), SPREAD, 0), rules,
                                               "browser", steps=0)
                output = server.output()
        finally:
            await browser.close()
    return reference, visits, output


def test_a_classroom_sees_what_a_lone_visitor_sees(tmp_path: Path) -> None:
    pytest.importorskip("playwright.async_api", reason="the playwright python package is missing")
    started = time.perf_counter()
    reference, visits, output = asyncio.run(lone_then_classroom(visitors(), tmp_path))
    print(f"\nclassroom test: {time.perf_counter() - started:.0f} s; first chart (s): "
          + ", ".join(f"{v.visitor}{v.view.page[0]}={v.first_chart or 0:.1f}" for v in visits))
    lone_errors = [f"{view.label()}: {e}" for view, visit in reference.items() for e in visit.errors]
    assert not lone_errors, f"the lone visitor saw errors: {lone_errors}"
    evidence = f"(screenshots, HTML and answers in {tmp_path})"
    errors = [f"visitor {v.visitor} {v.view.label()}: {e}" for v in visits for e in v.errors]
    assert not errors, "\n".join([f"{len(errors)} error(s) in the classroom {evidence}:", *errors,
                                  last_traceback(output)])
    differing = mismatches(visits, reference)
    assert not differing, "\n".join([f"answers that differ from a lone visitor's {evidence}:",
                                     *(f"visitor {v}: {why}" for v, whys in differing.items() for why in whys)])
