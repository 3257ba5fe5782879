"""The serve page in a real headless Chromium (Debian's chromium and chromium-driver).

A folder of images stands in for the camera: the page must show its frames and a
label, an uploaded image must show its result, and a camera that goes away must be
reported. Set ``SERVE_SCREENSHOT=PATH``
to keep a screenshot of the page (the README's is made this way).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                "(pip install -e '.[dev]')")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from henet_edge.device.classify import DEFAULT_BUNDLE, Classifier  # noqa: E402
from henet_edge.device.serve.app import create_app  # noqa: E402
from henet_edge.device.serve.live import LiveCamera  # noqa: E402
from henet_edge.device.serve.pool import ClassifierPool  # noqa: E402

from .conftest import skip_unless_ci  # noqa: E402
from .serve_helpers import Server  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = skip_unless_ci(
    None if CHROMIUM and DRIVER else
    "Chromium or its driver is missing: apt install chromium chromium-driver")


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=960,720"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_a_token_in_an_old_query_link_also_works_and_a_reload_keeps_it(browser):
    with Server(create_app(ClassifierPool(Classifier(DEFAULT_BUNDLE)), token="t0k")) as server:
        wait = WebDriverWait(browser, 20)
        base = f"http://127.0.0.1:{server.port}/"
        browser.get(base + "?token=t0k")
        for _ in range(2):  # the first load, then a reload of the clean URL
            wait.until(lambda d: "XNNPACK" in d.find_element(By.ID, "model").text)
            assert browser.current_url == base
            browser.refresh()


def test_page_shows_live_frames_a_label_and_an_upload_result(browser, tmp_path, monkeypatch):
    shot = os.environ.get("SERVE_SCREENSHOT")
    shot_path = Path(shot).resolve() if shot else None
    golden = sorted((DEFAULT_BUNDLE / "golden").glob("*.png"))
    frames = tmp_path / "camera"
    frames.mkdir()
    for image in golden[:4]:
        shutil.copy(image, frames / image.name)
    classifier = Classifier(DEFAULT_BUNDLE)
    pool = ClassifierPool(classifier)
    monkeypatch.chdir(tmp_path)  # the page names the source as given: "camera"
    camera = LiveCamera("camera", pool.classify_rgb, every=0.2)
    with Server(create_app(pool, camera=camera, token="t0k")) as server:
        camera.start()
        try:
            wait = WebDriverWait(browser, 20)
            browser.get(f"http://127.0.0.1:{server.port}/#token=t0k")
            wait.until(lambda d: d.find_element(By.ID, "live").is_displayed())
            assert browser.current_url == f"http://127.0.0.1:{server.port}/"  # token out
            wait.until(lambda d: d.execute_script(
                "const i = document.getElementById('frame');"
                "return i.complete && i.naturalWidth > 0;"))  # an MJPEG frame was drawn
            # Read in one script call: the list is redrawn with every frame, so an element
            # found in one call can be stale by the next.
            first = wait.until(lambda d: d.execute_script(
                "const li = document.querySelector('#live-top li');"
                "return li && li.innerText;"))
            assert first.split()[0] in classifier.labels and "%" in first
            assert "invoke" in browser.find_element(By.ID, "live-timings").text
            assert "fps" in browser.find_element(By.ID, "live-fps").text
            model = browser.find_element(By.ID, "model").text
            assert classifier.precision in model and "XNNPACK" in model
            assert browser.find_element(By.ID, "camera-status").text == "running"

            browser.find_element(By.ID, "file").send_keys(str(golden[5]))
            browser.find_element(By.ID, "upload-button").click()
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload-top li"))
            expected = classifier.classify_file(golden[5]).label
            uploaded = browser.find_element(By.CSS_SELECTOR, "#upload-top li").text
            assert uploaded.split()[0] == expected
            assert golden[5].name in browser.find_element(By.ID, "upload-timings").text
            if shot_path is not None:
                browser.execute_script("window.scrollTo(0, 0)")
                shot_path.write_bytes(browser.get_screenshot_as_png())

            for image in frames.iterdir():  # the camera goes away: the page says so
                image.unlink()
            wait.until(lambda d: "failed" in d.find_element(By.ID, "camera-status").text)
            status = browser.find_element(By.ID, "camera-status")
            text = status.text.lower()  # a frame's file vanished, or the folder is empty
            assert "no such file" in text or "no jpeg" in text, text
            assert status.get_attribute("class") == "bad"
        finally:
            camera.stop()
