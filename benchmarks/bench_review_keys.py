"""The machine's share of a keyboard review: how long `faceclean review` takes, in headless
chromium, from a key press to the decision saved and shown, over the N most doubtful
removals of a clean folder (a person's own time per face comes on top; it is not measured).

    python benchmarks/bench_review_keys.py CLEAN_DIR [--decisions 100]

It starts `faceclean review CLEAN_DIR --port 0`, opens the removals, presses k/d
alternately, waits each time until the item shows the decision, follows the pages, and
prints the median and 95th percentile per decision (key press to the decision shown, as
Selenium sees it, its own round trips included), the save's round trip as the browser
timed it (Resource Timing), each page's load, and the total.
CLEAN_DIR's review.parquet is moved aside first and put back at the end.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

SAVES = (
    "return performance.getEntriesByType('resource')"
    ".filter(e => e.name.endsWith('/decide')).map(e => e.duration)"
)


def shown(item, decision: str) -> bool:
    """The item shows the decision, or is gone: after the last item of a page the app
    saves, then moves to the next page by itself."""
    try:
        return item.get_attribute("data-decision") == decision
    except StaleElementReferenceException:
        return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clean_dir", type=Path)
    ap.add_argument("--decisions", type=int, default=100)
    args = ap.parse_args()
    review = args.clean_dir / "review.parquet"
    aside = args.clean_dir.parent / f".{args.clean_dir.name}.review-bench.parquet"
    if review.exists():
        shutil.move(review, aside)
    proc = subprocess.Popen(
        [sys.executable, "-m", "faceclean.cli", "review", str(args.clean_dir), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        opts.add_argument(a)
    opts.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
    per, loads, posts = [], [], []
    try:
        url = re.search(r"http://\S+/", proc.stdout.readline()).group(0)
        t = time.perf_counter()
        driver.get(url + "q/removals")
        loads.append(time.perf_counter() - t)
        start = time.perf_counter()
        while len(per) < args.decisions:
            items = driver.find_elements(By.CSS_SELECTOR, "main .item")
            cur = [i for i, e in enumerate(items) if "cur" in e.get_attribute("class")][0]
            if items[cur].get_attribute("data-decision"):
                break  # the end of the queue
            key, want = ("k", "keep") if len(per) % 2 else ("d", "drop")
            page = driver.current_url
            t = time.perf_counter()
            driver.find_element(By.TAG_NAME, "body").send_keys(key)
            wait = WebDriverWait(driver, 10, poll_frequency=0.005)
            wait.until(lambda d, el=items[cur], w=want: shown(el, w))
            per.append(time.perf_counter() - t)
            if cur < len(items) - 1:  # the save's own round trip, as the browser timed it
                posts.append(driver.execute_script(SAVES)[-1])
            if cur == len(items) - 1:  # the last of the page: the next page loads itself
                t = time.perf_counter()
                WebDriverWait(driver, 10).until(lambda d, p=page: d.current_url != p)
                WebDriverWait(driver, 10).until(
                    lambda d: d.execute_script("return document.readyState") == "complete"
                )
                loads.append(time.perf_counter() - t)
        total = time.perf_counter() - start
    finally:
        driver.quit()
        proc.kill()
        proc.wait()
        if aside.exists():
            shutil.move(aside, review)
        else:
            review.unlink(missing_ok=True)
    per_sorted = sorted(per)
    print(f"decisions                 {len(per)}")
    print(f"per decision, median      {1000 * statistics.median(per):.1f} ms")
    print(f"per decision, 95th pct    {1000 * per_sorted[int(0.95 * (len(per) - 1))]:.1f} ms")
    print(f"save (POST /decide), median {statistics.median(posts):.1f} ms over {len(posts)}")
    print(f"save, slowest             {max(posts):.1f} ms")
    print(f"page loads (s)            {', '.join(f'{x:.2f}' for x in loads)}")
    print(f"total machine time        {total:.1f} s for {len(per)} decisions")


if __name__ == "__main__":
    main()
