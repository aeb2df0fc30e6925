"""The web viewer in a real headless Chromium: upload an image, click, and the heatmap appears.
.ci/run installs Debian's chromium and chromium-driver; without them this test skips and says why."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (in the dev extra)")

CHROMIUM, DRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url():
    from dl_backtrace.server import create_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.skipif(DRIVER is None or not Path(CHROMIUM).exists(),
                    reason="no chromium/chromedriver here (apt-get install chromium chromium-driver)")
def test_upload_shows_heatmap(server_url: str, tmp_path: Path) -> None:
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    img = tmp_path / "digit.png"
    Image.fromarray((np.random.rand(24, 24) * 255).astype("uint8")).save(img)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=opts)
    try:
        driver.get(server_url)
        WebDriverWait(driver, 20).until(lambda d: "digits" in d.find_element(By.ID, "model").text)
        driver.find_element(By.ID, "file").send_keys(str(img))
        driver.find_element(By.ID, "explain").click()
        heat = WebDriverWait(driver, 60).until(ec.presence_of_element_located((By.ID, "heatmap")))
        assert heat.get_attribute("src").startswith("data:image/png;base64,")
        assert "conservation error" in driver.find_element(By.ID, "summary").text
    finally:
        driver.quit()
