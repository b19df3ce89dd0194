"""mlflow ui as users read it: a real tiny sweep, a real ``mlflow ui``, real headless Chromium.

Locally without Chromium these tests are skipped with the command that installs it; CI sets
``REQUIRE_BROWSER=1`` (in .ci/run), where a missing browser fails them instead. The screenshots
go to ``outputs/screenshots/`` (the docs' come from there, reduced, in docs/img/).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, run_cli, runs_by_name

from src.loadtest.servers import free_port, serving
from src.tracking import store

pytestmark = [pytest.mark.slow, pytest.mark.browser]

INSTALL = "apt-get install -y chromium chromium-driver (as root), then make install (selenium)"
SHOTS = ROOT / "outputs" / "screenshots"
RENDER_SECONDS = 90  # MLflow's UI takes tens of seconds to draw its charts on 2 cores
WINDOW = (1600, 1000)


def _browser_or_skip() -> tuple[str, str]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        chromium = None
    if chromium and driver:
        return chromium, driver
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"REQUIRE_BROWSER=1 but no Chromium, chromedriver or selenium: {INSTALL}")
    pytest.skip(f"no Chromium, chromedriver or selenium here: {INSTALL}")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A tiny real sweep (nearest and transpose, seeds 0 and 1, with its report) served by
    ``mlflow ui``; yields (Chromium options, driver service, ui url, printed link, store uri)."""
    chromium, driver_path = _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    tmp = tmp_path_factory.mktemp("ui")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    result = run_cli(
        "--multirun",
        "upsampler=nearest,transpose",
        "seed=0,1",
        "train.epochs=2",
        "data.limit=1024",
        "eval.samples=1000",
        f"tracking.uri={uri}",
        f"hydra.sweep.dir={tmp / 'sweep'}",
        f"paths.checkpoint_dir={tmp / 'ck'}",
        f"paths.reports_dir={tmp / 'reports'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    printed = re.search(r"^open the results: (\S+)", result.stdout, re.MULTILINE).group(1)
    url = f"http://127.0.0.1:{free_port()}"
    port = url.rsplit(":", 1)[1]
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "ui",
        "--host",
        "127.0.0.1",
        "--port",
        port,
        "--backend-store-uri",
        uri,
    ]
    options = webdriver.ChromeOptions()
    options.binary_location = chromium  # Debian's, not one selenium would download
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):
        options.add_argument(argument)
    with serving(command, url, tmp / "ui.log"):
        yield options, Service(driver_path), url, printed, uri


@pytest.fixture
def browser(site):
    """A new headless Chromium with a fresh profile (as a new user's), per test."""
    from selenium import webdriver

    options, service, url, printed, uri = site
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver, url, printed, uri
    finally:
        driver.quit()


def _wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, RENDER_SECONDS, poll_frequency=1).until(condition, what)


def _open(driver, link: str, close_assistant: bool = True) -> None:
    """Load ``link``; close MLflow's assistant panel (a third of the page) unless told not to."""
    from selenium.webdriver.common.by import By

    driver.get(link)
    _wait(driver, lambda d: "upsamplers" in d.find_element(By.TAG_NAME, "body").text, "page")
    if not close_assistant:
        return
    for button in driver.find_elements(
        By.CSS_SELECTOR, "button[data-component-id='mlflow.assistant.chat_panel.close']"
    ):
        button.click()


def _shot(driver, name: str) -> Path:
    """Save a screenshot, reduced to a small palette PNG for docs/img."""
    from PIL import Image

    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    image = Image.open(path).convert("RGB")
    image = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.LANCZOS)
    image.quantize(colors=128).save(path, optimize=True)
    return path


def test_printed_link_opens_the_training_view_of_the_sweep(browser):
    from selenium.webdriver.common.by import By

    driver, url, printed, _ = browser
    assert printed.startswith("http://127.0.0.1:5000/#/experiments/")
    assert "workflowType=machine_learning" in printed and "searchFilter=tags.sweep_id" in printed
    _open(driver, printed.replace("http://127.0.0.1:5000", url))
    body = lambda d: d.find_element(By.TAG_NAME, "body").text  # noqa: E731
    _wait(driver, lambda d: "transpose-s0" in body(d) and "nearest-s0" in body(d), "runs listed")
    text = body(driver)
    assert "5 matching runs" in text  # the sweep's four runs and its report, nothing else
    # The training view's side bar: no GenAI sections (Observability, Prompts), a model registry.
    assert "Observability" not in text and "Prompts" not in text and "Model registry" in text
    # The Dataset, Source and Models columns are filled for training runs.
    _wait(driver, lambda d: "mnist10-area-first1024" in body(d), "dataset column")
    assert "train.py" in text and "generator" in text
    _shot(driver, "runs")


def test_run_page_shows_the_sample_grid_inside_its_card(browser):
    from selenium.webdriver.common.by import By

    driver, url, _, uri = browser
    run = runs_by_name(uri)["nearest-s0"]
    link = store.run_link(uri, run.info.experiment_id, run.info.run_id)  # as train prints it
    # As a new browser shows it: with the assistant panel open, the card is ~290 px wide. Its
    # view is 250 px tall, and MLflow centres the image in a square as wide as the card, so a
    # wider card (panel closed) pushes even a wide grid below the view (docs/mlflow-ui.md).
    _open(driver, link.replace(store.UI_ADDRESS, url), close_assistant=False)
    assert "Observability" not in driver.find_element(By.TAG_NAME, "body").text  # training view
    search = _wait(
        driver,
        lambda d: d.find_element(By.CSS_SELECTOR, "input[placeholder='Search metric charts']"),
        "chart search",
    )
    search.send_keys("samples")  # only the image card is left, at the top
    grid = "img[src*='get-artifact'][src*='samples']"
    image = _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, grid), "samples image")
    _wait(
        driver,
        lambda d: d.execute_script("return arguments[0].naturalWidth", image) > 0,
        "samples image loaded",
    )
    # Inside the visible part of the card: the nearest scrolling ancestor holds it whole.
    inside = driver.execute_script(
        """const image = arguments[0], box = image.getBoundingClientRect();
        let card = image.parentElement;
        while (card && !/(auto|scroll)/.test(getComputedStyle(card).overflowY)) {
            card = card.parentElement;
        }
        const view = card.getBoundingClientRect();
        return [box.top, box.bottom, view.top, view.bottom];""",
        image,
    )
    _shot(driver, "run-samples")
    top, bottom, view_top, view_bottom = inside
    assert view_top <= top < bottom <= view_bottom, inside


def test_report_run_description_renders_its_table(browser):
    from selenium.webdriver.common.by import By

    driver, url, _, uri = browser
    (report,) = [run for name, run in runs_by_name(uri).items() if name.startswith("report-")]
    link = store.run_link(uri, report.info.experiment_id, report.info.run_id)
    _open(driver, link.replace(store.UI_ADDRESS, url).replace("/model-metrics", ""))
    header = "//table//th[normalize-space(.)='upsampler']"
    table = _wait(driver, lambda d: d.find_element(By.XPATH, header), "report table")
    for more in driver.find_elements(By.XPATH, "//*[normalize-space(.)='Show more']"):
        more.click()  # the description starts collapsed
    rows = table.find_elements(By.XPATH, "ancestor::table//tr")
    cells = [r.get_attribute("textContent").split() for r in rows[1:]]
    assert [row[0] for row in cells] == ["nearest", "transpose"], cells
    figures = "img[src*='get-artifact'][src*='losses.png']"
    losses = _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, figures), "report figure")
    assert report.info.run_id in losses.get_attribute("src")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", table)
    time.sleep(2)
    _shot(driver, "report")


def _chart_search(driver):
    from selenium.webdriver.common.by import By

    return _wait(
        driver,
        lambda d: d.find_element(By.CSS_SELECTOR, "input[placeholder='Search metric charts']"),
        "chart search",
    )


def test_runs_grouped_by_upsampler_chart_losses_with_bands(browser):
    """What docs/mlflow-ui.md shows: group by the ``upsampler`` tag, then the chart view draws each
    group's mean with a band over its seeds."""
    from selenium.webdriver.common.by import By

    driver, url, printed, _ = browser
    link = printed.replace("http://127.0.0.1:5000", url)
    _open(driver, link)
    group = _wait(
        driver, lambda d: d.find_element(By.XPATH, "//button[contains(., 'Group by')]"), "group by"
    )
    group.click()
    option = "//*[@role='menuitemcheckbox'][normalize-space(.)='upsampler']"
    _wait(driver, lambda d: d.find_element(By.XPATH, option), "upsampler tag").click()
    body = lambda d: d.find_element(By.TAG_NAME, "body").text  # noqa: E731
    _wait(driver, lambda d: "Group: nearest" in body(d) and "Group: transpose" in body(d), "groups")
    _open(driver, f"{link}&compareRunsMode=CHART")  # the grouping is kept
    _chart_search(driver).send_keys("loss/")
    _wait(driver, lambda d: "nearest (loss/d_loss)" in body(d), "grouped loss chart")
    assert "transpose (loss/g_loss)" in body(driver)
    time.sleep(5)  # the bands are drawn after the lines
    _shot(driver, "grouped-losses")


def test_image_grid_chart_shows_every_run_of_the_sweep(browser):
    """The compare view's image grid (its step slider below): one sample grid per run."""
    from selenium.webdriver.common.by import By

    driver, url, printed, uri = browser
    _open(driver, printed.replace("http://127.0.0.1:5000", url) + "&compareRunsMode=CHART")
    _chart_search(driver).send_keys("samples")
    grid = "img[src*='get-artifact'][src*='samples']"
    image = _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, grid), "image chart")
    card = image.find_element(
        By.XPATH, "ancestor::*[.//button[@data-component-id='fullscreen_button_chartcard']][1]"
    )
    card.find_element(
        By.CSS_SELECTOR, "button[data-component-id='fullscreen_button_chartcard']"
    ).click()
    in_dialog = f"[role='dialog'] {grid}"
    loaded = "return arguments[0].filter(i => i.naturalWidth > 0).length"
    expected = len([name for name in runs_by_name(uri) if not name.startswith("report-")])
    _wait(
        driver,
        lambda d: d.execute_script(loaded, d.find_elements(By.CSS_SELECTOR, in_dialog)) == expected,
        "a loaded grid per run, side by side",
    )
    _shot(driver, "image-grid")
