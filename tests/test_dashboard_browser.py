"""The dashboard as its owner sees it: a local job's ``/status`` in a real (headless) Chromium.

The page's HTML alone (tests/test_dashboard.py) says nothing of the plots: bokeh draws them in
the browser, from a document its websocket session sends after the page has loaded, through the
gate (the websocket must bring the cookie the token bought). So a browser opens the owner's link,
the test waits (bounded) until bokeh says it has drawn, and checks what was drawn: the plots'
canvases have a size, the picture of the plot area is not blank, and nothing came from
elsewhere than the dashboard (compute nodes are often offline).
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from hpcbridge import scheduler_file
from hpcbridge.client.bridge import connect
from hpcbridge.job import submit as jobs
from tests.headless_browser import HeadlessChromium, find_chromium

CHROMIUM = find_chromium()
# Where a copy of the screenshot goes for a person to look at, if set (else it stays in the test's temporary folder).
KEEP_SCREENSHOT = os.environ.get("HPCBRIDGE_DASHBOARD_SCREENSHOT")

# Bokeh 3 draws each plot in canvases inside shadow roots: walk them all.
CANVASES = """(() => {
  const found = [];
  const walk = (root) => {
    for (const element of root.querySelectorAll('*')) {
      if (element.tagName === 'CANVAS') {
        const box = element.getBoundingClientRect();
        found.push([Math.round(box.width), Math.round(box.height)]);
      }
      if (element.shadowRoot) walk(element.shadowRoot);
    }
  };
  walk(document);
  return found;
})()"""
RENDERED = "Bokeh items were rendered successfully"
# What the page loaded, or tried to load, from anywhere but the dashboard itself.
ELSEWHERE = """[...document.scripts].map(s => s.src)
  .concat([...document.querySelectorAll('link[rel=stylesheet]')].map(l => l.href))
  .concat(performance.getEntriesByType('resource').map(e => e.name))
  .filter(url => url && !url.startsWith(location.origin + '/'))"""


def shares(png: bytes, top: int) -> tuple[float, float]:
    """Of the pixels below ``top`` (the navigation bar): the share that differs from the page's background
    (axes, grid lines and titles: the plots are drawn), and the share in strong colour (bars and task
    rectangles: data is drawn)."""
    area = Image.open(io.BytesIO(png)).convert("RGB")
    area = area.crop((0, top, area.width, area.height))
    colours = area.getcolors(area.width * area.height)
    background = max(colours)[1]  # the commonest colour
    drawn = sum(count for count, colour in colours if max(abs(a - b) for a, b in zip(colour, background)) > 24)
    coloured = sum(count for count, colour in colours if max(colour) - min(colour) > 60)
    return drawn / (area.width * area.height), coloured / (area.width * area.height)


def sleep_a_little(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium here (make system-packages installs "
                                               "chromium-headless-shell)")
def test_the_owners_link_shows_the_status_plots_drawn_in_a_real_browser(local_spec, local_jobs, monkeypatch,
                                                                         tmp_path) -> None:
    # The owner's environment asks bokeh for its CDN, and this machine is offline like many compute
    # nodes: the dashboard serves its JavaScript itself all the same.
    monkeypatch.setenv("BOKEH_RESOURCES", "cdn")
    job = jobs.submit(local_spec(ntasks_per_node=2))
    local_jobs.append(job)
    with connect(job=job, n_workers=2, timeout=60) as bridge:
        recorded = scheduler_file.read(job.scheduler_file).dashboard
        with HeadlessChromium(CHROMIUM) as browser:
            browser.open(bridge.dashboard_link)
            assert browser.evaluate("location.href") == f"http://127.0.0.1:{recorded.port}/status"  # token dropped
            assert browser.wait_for(f"{CANVASES}.filter(([w, h]) => w > 50 && h > 50).length >= 5", 30), (
                browser.console, browser.evaluate(ELSEWHERE), browser.evaluate(CANVASES))
            # Dask's task stream records tasks from the time a page shows it: run the map now.
            done = bridge.map(sleep_a_little, [0.1] * 40, name="sleep-a-little", progress=False)
            assert sum(bridge.gather(done)) == pytest.approx(4.0)
            time.sleep(2)  # bokeh's periodic updates (100 ms to 1 s apart) bring the map's tasks to the page
            png = browser.screenshot()
            console = list(browser.console)
            canvases = browser.evaluate(CANVASES)
            elsewhere = browser.evaluate(ELSEWHERE)
    screenshot = Path(KEEP_SCREENSHOT or tmp_path / "dashboard-status.png")
    screenshot.write_bytes(png)
    assert elsewhere == [], elsewhere
    assert any(RENDERED in line for line in console), console
    assert len([size for size in canvases if size[0] > 50 and size[1] > 50]) >= 5, canvases
    drawn, coloured = shares(png, top=50)
    assert drawn > 0.005 and coloured > 0.005, f"plots {drawn:.2%} drawn, {coloured:.2%} in colour: {screenshot}"
