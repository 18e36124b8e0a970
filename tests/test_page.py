"""The search page in a real headless browser: Debian's Chromium driven by selenium.

The set-up installs ``chromium`` and ``chromium-driver`` with apt where it can (as root, with
apt-get), and the test says why it skips where it cannot.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from siamsearch import Encoder, SearchIndex, read_corpus
from siamsearch.demo import SAMPLE_FAQ

from .serving import running

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
INSTALL_TIMEOUT_S = 600


def install_chromium() -> str | None:
    """None once Chromium and its driver are there, else why they are not."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver, as root)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"]):
            subprocess.run(command, check=True, capture_output=True, env=env, timeout=INSTALL_TIMEOUT_S)
    except (subprocess.SubprocessError, OSError) as e:
        return f"could not install chromium and chromium-driver with apt-get ({e})"
    return None if CHROMIUM.exists() and CHROMEDRIVER.exists() else "apt-get did not install /usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    why = install_chromium()
    if why:
        pytest.skip(why)
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1000,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    faq = read_corpus(SAMPLE_FAQ, text_column="question")
    path = tmp_path_factory.mktemp("page") / "faq"
    SearchIndex.build(faq.texts, Encoder.load(), ids=faq.ids, metadata=faq.metadata).save(path)
    with running(path) as url:
        yield url


def results(driver) -> list[dict]:
    return driver.execute_script(
        "return [...document.querySelectorAll('li.hit')].map(li => ({id: li.dataset.id, "
        "text: li.querySelector('.text').textContent, answer: (li.querySelector('.answer') || {}).textContent, "
        "topic: ((li.querySelector('.meta button[data-field=topic]') || {}).textContent || '')}))")


def test_type_a_query_see_the_faq_entry_then_filter(browser, page_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 20)
    browser.get(page_url + "/")
    wait.until(lambda d: "200 documents" in d.find_element(By.ID, "ready").text)
    box = browser.find_element(By.ID, "q")
    assert browser.switch_to.active_element == box  # focused on load: type straight away
    box.send_keys("退款多久能到账")  # search as you type: no Enter
    wait.until(lambda d: results(d) and results(d)[0]["id"] == "faq-101")
    top = results(browser)[0]
    assert top["text"] == "退款多久能到账"
    assert top["answer"].startswith("退款审核通过后，银行卡1到5个工作日到账")  # the FAQ's answer, in Chinese
    assert "generation" in browser.find_element(By.ID, "status").text

    field = browser.find_element(By.ID, "filter-input")  # a filter typed as field=value
    field.send_keys("topic=物流", Keys.ENTER)
    wait.until(lambda d: results(d) and all(r["topic"] == "topic: 物流" for r in results(d)))
    assert len(results(browser)) == 10  # k hits: the filter is applied before ranking
    chip = browser.find_element(By.CSS_SELECTOR, "#filters .chip")
    assert "topic = 物流" in chip.text

    chip.click()  # removing it brings the unfiltered answer back
    wait.until(lambda d: results(d) and results(d)[0]["id"] == "faq-101")
    browser.find_element(By.CSS_SELECTOR, "li.hit .meta button[data-field=topic]").send_keys(Keys.ENTER)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#filters .chip"))  # a metadata value, by keyboard
    wait.until(lambda d: results(d) and all(r["topic"] == "topic: 退款" for r in results(d)))  # searched again
    assert "topic = 退款" in browser.find_element(By.CSS_SELECTOR, "#filters .chip").text

    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    wait.until(lambda d: not results(d) and not d.find_elements(By.CSS_SELECTOR, "#filters .chip"))
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_each_hit_shows_its_match_first_and_its_score_in_one_format(browser, page_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 20)
    browser.get(page_url + "/")
    wait.until(lambda d: "200 documents" in d.find_element(By.ID, "ready").text)
    browser.find_element(By.ID, "q").send_keys("退款多久能到账")
    wait.until(lambda d: results(d) and results(d)[0]["id"] == "faq-101")
    shown = browser.execute_script("return [...document.querySelectorAll('li.hit .scores')].map(s => "
                                   "[...s.children].map(c => c.textContent))")
    assert len(shown) == 10
    for match, score, *rest in shown:
        assert re.fullmatch(r"\d{1,3} % match", match), match  # first, as a person reads it
        assert re.fullmatch(r"score \d\.\d\de[-+]\d+", score), score  # one fixed format, whatever the size
        assert not rest  # no BM25 in dense mode


def test_a_filter_applies_as_it_is_typed_and_says_when_it_matches_nothing(browser, page_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 20)
    browser.get(page_url + "/")
    wait.until(lambda d: "200 documents" in d.find_element(By.ID, "ready").text)
    browser.find_element(By.ID, "q").send_keys("东西坏了")
    wait.until(lambda d: len(results(d)) == 10)
    field = browser.find_element(By.ID, "filter-input")
    field.send_keys("topic=订单")  # no Enter
    wait.until(lambda d: results(d) and all(r["topic"] == "topic: 订单" for r in results(d)))
    assert "applied; Enter keeps it" in browser.find_element(By.ID, "pending-filter").text
    field.clear()
    field.send_keys("topic=不存在")
    wait.until(lambda d: "no documents match the filter" in d.find_element(By.ID, "status").text)
    assert not results(browser)
    field.clear()
    field.send_keys("nofield=1")
    wait.until(lambda d: "no document has the metadata field 'nofield'" in d.find_element(By.ID, "error").text)
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]  # read, so later tests start clean
    assert all("status of 400" in e["message"] for e in errors), errors  # the refused filter, nothing else


def test_the_ranking_toggle_searches_by_keywords_or_both(browser, page_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 20)
    browser.get(page_url + "/")
    wait.until(lambda d: "200 documents" in d.find_element(By.ID, "ready").text)
    browser.find_element(By.ID, "q").send_keys("发票")
    wait.until(lambda d: results(d) and "dense" in d.find_element(By.ID, "status").text)
    for mode in ("lexical", "hybrid"):
        browser.find_element(By.CSS_SELECTOR, f"input[name=mode][value={mode}]").click()
        wait.until(lambda d, m=mode: results(d) and f"· {m} ·" in d.find_element(By.ID, "status").text)
        assert all("发" in r["text"] or "票" in r["text"] for r in results(browser)[:3])
        assert browser.find_elements(By.CSS_SELECTOR, "li.hit .scores .score:nth-child(3)")  # bm25 shown
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


@pytest.mark.parametrize("route", ["/docs", "/redoc"])
def test_api_docs_render_offline_from_the_service_alone(browser, page_url, route):
    """Issue 36, point 4: Swagger UI and ReDoc render with every asset from 127.0.0.1 (a CDN
    script would leave a blank page offline); the one outside address ReDoc's script asks for,
    its logo, is refused by the page's Content-Security-Policy, never fetched."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(page_url + route)  # the operations' paths appear only once the script has rendered the schema
    WebDriverWait(browser, 30).until(lambda d: "/v1/search" in d.execute_script("return document.body.innerText"))
    fetched = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => [e.name, e.responseStatus])")
    assert fetched and all(status == 200 for url, status in fetched if url.startswith(page_url)), fetched
    blocked = " ".join(e["message"] for e in browser.get_log("browser") if "has been blocked" in e["message"])
    elsewhere = [url for url, _ in fetched if not url.startswith(page_url)]  # ReDoc's logo: refused, never fetched
    assert all(url in blocked for url in elsewhere), (elsewhere, blocked)
