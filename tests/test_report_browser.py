"""report.html in a real browser, offline: no network request, no console error, the
forest plot drawn. Needs /usr/bin/chromium and Playwright for Python; skipped without.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from report_fixtures import make_run

from benchmark.report import build_report
from benchmark.report.document import FOREST_DIV_ID

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
]
SCREENSHOT = Path(os.environ.get("REPORT_SCREENSHOT", "/tmp/report.png"))

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> Any:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    try:
        pw = sync_api.sync_playwright().start()
    except Exception as err:  # noqa: BLE001 - any start failure means "no browser here"
        pytest.skip(f"playwright failed to start: {err}")
    try:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    except Exception as err:  # noqa: BLE001
        pw.stop()
        pytest.skip(f"chromium failed to launch: {err}")
    yield browser
    browser.close()
    pw.stop()


def test_report_renders_offline_without_errors(browser: Any, tmp_path: Path) -> None:
    run, dataset = make_run(tmp_path)
    report = build_report(run, dataset, engine="pandoc")

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    network: list[str] = []
    errors: list[str] = []

    def guard(route: Any) -> None:
        url = route.request.url
        if url.startswith(("file:", "data:", "blob:", "about:")):
            route.continue_()
        else:
            network.append(url)
            route.abort()

    page.route("**/*", guard)
    page.on("request", lambda req: None if req.url.startswith(("file:", "data:", "blob:",
                                                                "about:"))
            else network.append(req.url))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(report.as_uri(), wait_until="load")
    page.wait_for_selector(".js-plotly-plot svg.main-svg", timeout=20_000)

    assert network == [], f"the report tried to reach the network: {network}"
    assert errors == [], f"console errors: {errors}"
    plot = page.locator(f"div#{FOREST_DIV_ID}.js-plotly-plot")
    assert plot.locator("svg.main-svg").count() >= 1
    # drawn at its own height, inside its container (nothing overlaps the text below)
    box, svg = plot.bounding_box(), plot.locator("svg.main-svg").first.bounding_box()
    assert box is not None and svg is not None
    assert abs(box["height"] - svg["height"]) < 2
    # every gallery image decoded (naturalWidth is 0 for a broken image)
    widths = page.eval_on_selector_all("figure.gallery img", "els => els.map(e => e.naturalWidth)")
    assert widths and all(w > 0 for w in widths)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    page.close()
