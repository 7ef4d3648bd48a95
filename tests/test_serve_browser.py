"""The page at `/` in a real browser: a real `tunesmith serve` process (uvicorn on 127.0.0.1, a free port)
driven by Playwright and Debian's chromium (`apt-get install chromium`; scripts/setup.sh installs it when
root; a browser is never downloaded). What the page shows must be what `predict` answers."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import tunesmith

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)
if CHROMIUM is None and os.environ.get("CI"):  # in CI a missing browser fails, never skips
    pytest.fail("chromium is not installed: scripts/setup.sh installs Debian's chromium when root", pytrace=False)
if CHROMIUM is None:
    pytest.skip("no chromium binary (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")

import test_serve  # noqa: E402

text_run, image_run = test_serve.text_run, test_serve.image_run  # the endpoint tests' tiny runs, as fixtures

READY_SECONDS = 120  # loading the run, then uvicorn's start-up, on a busy 2-core machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(run: Path, log: Path):
    """Start `tunesmith serve run` in its own process; wait (bounded) until /readyz answers; yield its URL;
    always stop it."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tunesmith", "serve", str(run), "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + READY_SECONDS
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited ({proc.returncode}) before it was ready:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:  # not listening yet
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server was not ready within {READY_SECONDS} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def text_server(text_run, tmp_path_factory):
    yield from _serve(text_run, tmp_path_factory.mktemp("browser") / "text-server.log")


@pytest.fixture(scope="module")
def image_server(image_run, tmp_path_factory):
    yield from _serve(image_run, tmp_path_factory.mktemp("browser") / "image-server.log")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 900, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))  # an uncaught script error fails the test
    yield page
    context.close()
    assert not errors, errors


def _shown(page) -> tuple[str, list[str]]:
    """(the label shown, the labels of the score bars in order) once an answer is on the page."""
    sync_api.expect(page.locator("#answer #label")).to_be_visible(timeout=30_000)
    return page.inner_text("#answer #label"), page.locator("#answer .bar .name").all_inner_texts()


def _screenshot(page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    assert path.is_file() and path.stat().st_size > 0 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_page_classifies_a_typed_text_as_predict_does(text_server, text_run, page, tmp_path):
    text = "loved it, a wonderful film"
    expected = tunesmith.load(text_run).predict(text)[0]
    page.goto(text_server + "/")
    page.get_by_label("Input text").fill(text)
    page.get_by_role("button", name="Predict").click()
    label, bars = _shown(page)
    assert label == expected["label"]
    assert sorted(bars) == sorted(expected["scores"]) and bars[0] == expected["label"]  # best first
    assert page.locator("#answer .bar .fill").count() == len(expected["scores"])
    _screenshot(page, tmp_path / "text.png")


def test_the_page_classifies_an_uploaded_image_as_predict_does(image_server, image_run, image_folders, page, tmp_path):
    train, _ = image_folders
    path = sorted(Path(train).rglob("*.png"))[0]
    expected = tunesmith.load(image_run).predict([path.read_bytes()])[0]
    page.goto(image_server + "/")
    page.get_by_label("Input file").set_input_files(str(path))
    preview = page.locator("#preview")
    sync_api.expect(preview).to_be_visible()
    page.wait_for_function("() => document.getElementById('preview').naturalWidth > 0")  # decoded, not a broken icon
    page.get_by_role("button", name="Predict").click()
    label, bars = _shown(page)
    assert label == expected["label"]
    assert sorted(bars) == sorted(expected["scores"]) and bars[0] == expected["label"]
    _screenshot(page, tmp_path / "image.png")
