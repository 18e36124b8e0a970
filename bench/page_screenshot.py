"""Regenerate docs/search-page.png: the demo index served, a query typed, a filter applied.

Needs Debian's chromium and chromium-driver (tests/test_page.py installs them) and CJK
fonts for the picture (apt-get install fonts-noto-cjk). Usage: python bench/page_screenshot.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from siamsearch.demo import run_demo  # noqa: E402
from tests.serving import running  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "search-page.png"


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        index_dir = run_demo(work).index_dir
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                     "--disable-background-networking", "--window-size=900,820", "--lang=zh-CN"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
        try:
            with running(index_dir) as url:
                driver.get(url + "/")
                wait = WebDriverWait(driver, 20)
                wait.until(lambda d: "documents" in d.find_element(By.ID, "ready").text)
                driver.find_element(By.ID, "filter-input").send_keys("topic=退款", Keys.ENTER)
                driver.find_element(By.ID, "q").send_keys("退的钱几天能回到卡上")
                wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "li.hit")) >= 5)
                driver.save_screenshot(str(OUT))
        finally:
            driver.quit()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
