"""The page of ``psearch serve`` in a real headless Chromium (Playwright driving the system
browser, no download): draw a box with the mouse, search, click the top sighting, and check the
video plays from the sighting's start."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="psearch serve needs fastapi (pip install psearch[serve])")
pytest.importorskip("uvicorn", reason="psearch serve needs uvicorn (pip install psearch[serve])")
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="the browser test needs playwright (pip install playwright)")
from serve_world import FIRST, FPS, build_world  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (CI "
                                "installs it with apt-get; see .ci/run)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    from psearch.serve.app import create_app

    world = build_world(tmp_path_factory.mktemp("browser"))
    port = free_port()
    config = uvicorn.Config(create_app(world.gallery), host="127.0.0.1", port=port,
                            log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", world
    server.should_exit = True
    thread.join(10)


def test_draw_search_and_play_a_sighting(server, tmp_path):
    url, world = server
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=FLAGS, headless=True,
            viewport={"width": 1100, "height": 760})  # a fresh --user-data-dir
        try:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_function("document.querySelectorAll('#source option').length > 4")
            page.select_option("#source", label="walk.webm")
            page.select_option("#frame", value="12")
            page.wait_for_function("document.getElementById('canvas').dataset.ready"
                                   "?.includes('frame=12')")
            # draw the walker's box (image pixels x 2 on the canvas) with the mouse
            x1, y1, x2, y2 = (float(v) for v in world.video_boxes[12])
            rect = page.locator("#canvas").bounding_box()
            scale = rect["width"] / 160
            page.mouse.move(rect["x"] + x1 * scale, rect["y"] + y1 * scale)
            page.mouse.down()
            page.mouse.move(rect["x"] + (x1 + x2) / 2 * scale, rect["y"] + y2 / 2 * scale)
            page.mouse.move(rect["x"] + x2 * scale, rect["y"] + y2 * scale)
            page.mouse.up()
            drawn = page.inner_text("#box")
            assert drawn.startswith("box "), drawn
            page.click("#search")
            page.wait_for_selector(".hit")
            first = page.locator(".hit").first
            assert "walk.webm" in first.inner_text()
            assert "0:00:00.800 - 0:00:01.900" in first.inner_text()  # frames 8..19
            shot = os.environ.get("PSEARCH_SCREENSHOT")
            first.locator("img").click()
            page.wait_for_function(
                "(() => { const v = document.getElementById('player');"
                " return v.readyState >= 2 && !v.seeking &&"
                f" Math.abs(v.currentTime - {FIRST / FPS}) < 0.05; }})()",
                timeout=10000)
            current = page.evaluate("document.getElementById('player').currentTime")
            assert current == pytest.approx(FIRST / FPS, abs=0.05)
            page.screenshot(path=str(tmp_path / "page.png"))
            assert (tmp_path / "page.png").stat().st_size > 1000
            if shot:
                Path(shot).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=shot, full_page=True)
        finally:
            browser.close()
