"""A review in a real browser (Debian's chromium through Selenium), by the keyboard, with the
server killed halfway and restarted; then `clean --review` applies what was decided."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import run
from review_fixtures import make_clean

from faceclean.review.store import REVIEW_FILE

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover  (selenium is in the dev extra)
    webdriver = None

pytestmark = [
    pytest.mark.slow,  # starts chromium twice, ~20 s on a 2-core machine
    pytest.mark.skipif(
        not (CHROMIUM and DRIVER and webdriver),
        reason="needs chromium, chromedriver and selenium (apt-get install chromium "
        "chromium-driver; pip install -e '.[dev]')",
    ),
]


def start_server(clean_dir: Path) -> tuple[subprocess.Popen, str]:
    """`faceclean review CLEAN_DIR --port 0` in a process; (process, address it printed)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "faceclean.cli", "review", str(clean_dir), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)},
    )
    line = proc.stdout.readline()
    found = re.search(r"http://127\.0\.0\.1:\d+/", line)
    assert found, line + proc.stdout.read() if proc.poll() is not None else line
    return proc, found.group(0)


def browser():
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    opts.add_argument("--window-size=1400,1000")
    opts.binary_location = CHROMIUM
    return webdriver.Chrome(options=opts, service=Service(DRIVER))


def press(driver, key: str, item: int, expect: str) -> None:
    """Press ``key`` and wait until item ``item``'s badge reads ``expect`` (saved)."""
    driver.find_element(By.TAG_NAME, "body").send_keys(key)
    badge = f".item:nth-of-type({item + 1}) .badge"

    def shown(d):
        return (
            d.find_elements(By.CSS_SELECTOR, "main .item")[item]
            .find_element(By.CSS_SELECTOR, ".badge")
            .text
            == expect
        )

    WebDriverWait(driver, 10).until(shown, f"{badge} never read {expect}")


def current(driver) -> int:
    items = driver.find_elements(By.CSS_SELECTOR, "main .item")
    return [i for i, e in enumerate(items) if "cur" in e.get_attribute("class")][0]


def shoot(driver, folder: Path, name: str) -> None:
    driver.save_screenshot(str(folder / f"{name}.png"))


def test_review_by_keyboard_survives_a_kill(tmp_path):
    clean_dir = make_clean(tmp_path, tau_intra=1.0)
    shots = Path(os.environ.get("REVIEW_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    removals = pq.read_table(clean_dir / "scores.parquet")["keep"].to_pylist().count(False)
    assert removals >= 4
    driver = browser()
    proc, url = start_server(clean_dir)
    try:
        driver.get(url)
        shoot(driver, shots, "overview")
        driver.get(url + "q/removals")
        assert current(driver) == 0
        press(driver, "k", 0, "keep")
        press(driver, "d", 1, "drop")
        press(driver, "d", 2, "drop")
        press(driver, "u", 2, "undecided")  # undo the last: item 2 is undecided again
        assert current(driver) == 2
        assert driver.find_element(By.ID, "n-removals").text == "2"  # the header counts
        shoot(driver, shots, "removals")
        saved = pq.read_table(clean_dir / REVIEW_FILE)
        assert sorted(saved["decision"].to_pylist()) == ["drop", "keep"]
        proc.send_signal(signal.SIGKILL)  # mid-review, no goodbye
        proc.wait()
        proc, url = start_server(clean_dir)
        driver.get(url + "q/removals")  # resumes at the first undecided item
        assert current(driver) == 2
        for i in range(2, removals):
            press(driver, "k" if i % 2 else "d", i, "keep" if i % 2 else "drop")
        driver.get(url + "q/borderline")
        shoot(driver, shots, "borderline")
        driver.get(url + "q/merges")
        link = driver.find_element(By.CSS_SELECTOR, "div[data-link='0']")
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys("r")  # reject the weakest link, then take it back with r again
        WebDriverWait(driver, 10).until(lambda d: "rej" in link.get_attribute("class"))
        body.send_keys("r")
        WebDriverWait(driver, 10).until(lambda d: "rej" not in link.get_attribute("class"))
        press(driver, "s", 0, "split")
        shoot(driver, shots, "merges")
        driver.get(url + "q/duplicates")
        card = driver.find_element(By.CSS_SELECTOR, ".card[data-link='1']")
        card.find_element(By.TAG_NAME, "button").click()  # drop one file by mouse...
        WebDriverWait(driver, 10).until(lambda d: "rej" in card.get_attribute("class"))
        shoot(driver, shots, "duplicates")
        assert "id_0003/06.png" in pq.read_table(clean_dir / REVIEW_FILE)["key"].to_pylist()
        card.find_element(By.TAG_NAME, "button").click()  # ...and take it back
        WebDriverWait(driver, 10).until(lambda d: "rej" not in card.get_attribute("class"))
        press(driver, "a", 0, "accept")
        driver.get(url)
        assert driver.find_element(By.ID, "n-removals").text == str(removals)
    finally:
        driver.quit()
        proc.kill()
        proc.wait()
    review = pq.read_table(clean_dir / REVIEW_FILE).to_pylist()
    faces = {r["file"]: r["decision"] for r in review if r["kind"] == "removals"}
    assert len(faces) == removals
    expected_keep = {f for f, d in faces.items() if d == "keep"}
    assert len(expected_keep) == 1 + (removals - 2) // 2
    assert {(r["kind"], r["decision"]) for r in review if r["file"] is None} == {
        ("merges", "split"),
        ("duplicates", "accept"),
    }
    res = run(
        "clean", tmp_path / "emb.parquet", "-o", tmp_path / "again", "--tau-intra", "1.0",
        "--tau-inter", "0.6", "--review", clean_dir / REVIEW_FILE,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    listed = set(pq.read_table(tmp_path / "again" / "clean.parquet")["path"].to_pylist())
    removed = {f for f, d in faces.items() if d == "drop"} | {"id_0003/06.png"}
    assert expected_keep <= listed and not removed & listed
    assert len(listed) == 48 - len(removed)
