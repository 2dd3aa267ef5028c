"""The web page end to end in Debian's headless Chromium, driven by Playwright."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from apiserver import LiveServer, live_server
from images import art_page, photo

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling out of this closed network.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path("/tmp/smartthumb-web.png")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("data"), api_tokens="page-token") as running:
        yield running


@pytest.fixture
def page(tmp_path: Path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        context = browser.new_context(viewport={"width": 1100, "height": 900})
        tab = context.new_page()
        tab.set_default_timeout(60_000)
        yield tab
        browser.close()


def loaded_size(image) -> tuple[int, int]:
    image.wait_for()
    image.evaluate("img => img.decode()")
    return image.evaluate("img => [img.naturalWidth, img.naturalHeight]")


def test_upload_watch_preview_download(page, server: LiveServer, tmp_path: Path) -> None:
    picture = tmp_path / "astronaut.jpg"
    photo("astronaut").save(picture, quality=90)
    page.goto(server.url)

    # Auth is on and no token is entered yet: the page shows the API's message.
    page.set_input_files("#files", str(picture))
    page.click("#submit")
    card = page.locator(".job").first
    card.locator(".detail", has_text="missing bearer token").wait_for()

    page.click("details summary")
    page.fill("#token", "page-token")
    page.select_option("#mode", "crop")
    page.fill("#width", "240")
    page.fill("#height", "180")
    page.select_option("#format", "png")
    page.click("#submit")
    done = page.locator(".job.done")
    done.wait_for()
    assert loaded_size(done.locator("img.result")) == [240, 180]
    download = done.locator("a.download")
    assert "240x180 png" in download.inner_text()
    with page.expect_download() as event:
        download.click()
    assert event.value.suggested_filename.endswith(".png")
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_pair_of_pages_makes_one_thumbnail(page, server: LiveServer, tmp_path: Path) -> None:
    pages = []
    for index, name in enumerate(("coffee", "chelsea", "rocket")):
        path = tmp_path / f"page-{index}.jpg"
        art_page(name).save(path, quality=88)
        pages.append(str(path))
    page.goto(server.url)
    page.click("details summary")
    page.fill("#token", "page-token")
    page.set_input_files("#files", pages)
    page.select_option("#mode", "pair")
    page.click("#submit")
    done = page.locator(".job.done")
    done.wait_for()
    assert page.locator(".job").count() == 1
    assert loaded_size(done.locator("img.result")) == [1200, 675]
