"""The MLflow UI after a tiny search, in a real headless Chromium (Debian's `chromium` and `chromium-driver`).

Opens the link `metaopt ui` prints and finds, without a click, the experiment in MLflow's model-training
view, the champion's method, each trial's state and validation score; the search's run with its
leaderboard and champion decision; the registered model's description. Screenshots go to
``$METAOPT_TEST_ARTIFACTS`` (default ``test-artifacts/``) under ``ui/``.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from metaopt.tracking.store import model_link, run_link
from tests.search.jobs import REPO

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
ARTIFACTS = Path(os.environ.get("METAOPT_TEST_ARTIFACTS", REPO / "test-artifacts")) / "ui"

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="no chromium and chromedriver here (Debian: apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def searched(recorded_search):
    """The shared tiny search with finished and pruned trials (``conftest.recorded_search``)."""
    return recorded_search.summary, recorded_search.uri, recorded_search.experiment_id


@pytest.fixture(scope="module")
def ui(ui_server_process):
    """`metaopt ui` on that store (``conftest.ui_server_process``): its address and the links it printed."""
    address, links, _ = ui_server_process
    return address, links


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=2200,1200"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def _page(driver, url: str, *needles: str, shot: str, timeout: float = 60, expand: bool = False) -> str:
    """Open ``url`` and wait until the page's text holds every needle; save a screenshot; the text.

    ``expand``: click "Show more" once (MLflow folds a long run description).
    """
    driver.get(url)
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        if expand:
            for button in driver.find_elements("xpath", "//*[normalize-space(text())='Show more']"):
                button.click()
                expand = False
        text = driver.find_element("tag name", "body").text
        if all(n in text for n in needles):
            break
        time.sleep(0.5)
    driver.save_screenshot(str(ARTIFACTS / f"{shot}.png"))
    _small(ARTIFACTS / f"{shot}.png")
    missing = [n for n in needles if n not in text]
    assert not missing, f"{missing} not on {url} (screenshot {ARTIFACTS / shot}.png):\n{text[:3000]}"
    return text


def _small(path: Path) -> None:
    """A small copy for the README (``docs/ui/``): the page without MLflow's assistant panel, 1000 px wide."""
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
        cropped = image.crop((0, 0, int(width * 0.745), min(height, 900)))
        scale = 1000 / cropped.width
        cropped.resize((1000, int(cropped.height * scale)), Image.Resampling.LANCZOS).convert("P", palette=Image.ADAPTIVE) \
            .save(path.with_name(f"small_{path.name}"), optimize=True)


def test_the_printed_link_opens_the_runs_table_a_person_can_read(searched, ui, browser):
    summary, uri, experiment_id = searched
    base, links = ui
    assert links and links[0].startswith(f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
    client = MlflowClient(uri)
    trials = client.search_runs([experiment_id], "tags.`metaopt.role` = 'trial'")
    needles = ["Model training", "Model registry", "method", "metaopt.state", "val_loss", summary.champion.method,
               *{r.data.tags["metaopt.state"] for r in trials},
               *{f"{r.data.metrics['val_loss']:.4f}"[:5] for r in trials if "val_loss" in r.data.metrics}]
    text = _page(browser, links[0], *needles, shot="experiment")
    assert "Traces" not in text.split("Model registry")[0] or "Overview" not in text  # not the GenAI overview


def test_the_search_run_tells_who_won_and_the_leaderboard(searched, ui, browser):
    summary, _, experiment_id = searched
    base, _ = ui
    metric = summary.metric
    _page(browser, run_link(base, experiment_id, summary.parent_run_id),
          f"Best of this search: {summary.champion.method}", "Champion", "rank", f"val {metric.label}",
          *[row.method for row in summary.rows], shot="search_run", expand=True)


def test_a_trial_shows_its_curves(searched, ui, browser):
    summary, _, experiment_id = searched
    base, _ = ui
    url = run_link(base, experiment_id, summary.champion.run_id).replace("?", "/model-metrics?")
    _page(browser, url, "val_loss", "train_loss", shot="trial_curves")


def test_the_registered_model_describes_itself(searched, ui, browser):
    summary, _, _ = searched
    base, _ = ui
    name = f"metaopt-{summary.key}"
    _page(browser, model_link(base, name), f"Champions of {summary.key}", "champion", shot="registered_model")
