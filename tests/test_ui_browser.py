"""The MLflow UI after a tiny search, in a real headless Chromium (Debian's `chromium` and `chromium-driver`).

Opens the link `metaopt ui` prints and finds, without a click, the experiment in MLflow's model-training
view, the champion's method, each trial's state and validation score; the search's run with its
leaderboard and champion decision; the registered model's description. Screenshots go to
``$METAOPT_TEST_ARTIFACTS`` (default ``test-artifacts/``) under ``ui/``.
"""

from __future__ import annotations

import os
import shutil
import threading
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


@pytest.fixture(scope="session")
def searched(recorded_search):
    """The shared tiny search with finished and pruned trials (``conftest.recorded_search``)."""
    return recorded_search.summary, recorded_search.uri, recorded_search.experiment_id


@pytest.fixture(scope="session")
def ui(ui_server_process):
    """`metaopt ui` on that store (``conftest.ui_server_process``): its address and the links it printed."""
    address, links, _ = ui_server_process
    return address, links


@pytest.fixture(scope="session")
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


# -- the landing page of three keys: regression, classification, RL with its exact limit --------------------------

LANDING_JOBS = {
    "regression": {"family": {"name": "sine", "shots": 5, "queries": 5}, "methods": ["maml", "fomaml"],
                   "budget": {"trials": 3, "meta_iterations": 20, "eval_interval": 10, "val_tasks": 20,
                              "test_tasks": 50}},
    "classification": {"family": {"name": "glyphs", "ways": 3, "shots": 1, "queries": 3}, "methods": ["protonet"],
                       "search_space": None, "backbone": {"name": "conv4", "hidden": 8}, "compile": "never",
                       "space": {"protonet": {"outer_lr": 0.003, "meta_batch": 2}},
                       "budget": {"trials": 1, "meta_iterations": 10, "eval_interval": 5, "val_tasks": 20,
                                  "test_tasks": 60}},
    # Bayes-optimal is the bandit's exact limit; ucb1 tried twice with one setting: a tie, broken toward the champion
    "rl": {"family": {"name": "bandit", "arms": 5, "pulls": 10},
           "methods": ["random", "greedy", "ucb1", "bayes_optimal"], "search_space": None,
           "space": {"ucb1": {"c": {"type": "float", "low": 0.05, "high": 0.2}}},
           "pruner": {"type": "median", "n_startup_trials": 2},
           "enqueue": [{"method": "random"}, {"method": "ucb1", "c": 0.1}, {"method": "greedy"},
                       {"method": "ucb1", "c": 0.1}],
           "budget": {"trials": 5, "meta_iterations": 10, "eval_interval": 10, "val_tasks": 200, "test_tasks": 300}},
}


@pytest.fixture(scope="session")
def landing(tmp_path_factory, empty_store):
    """One store with a search of each kind of key, and `metaopt ui` on it: {kind: summary}, the UI's address."""
    from tests.conftest import metaopt_ui
    from tests.search.jobs import search_in, tiny_job

    folder = tmp_path_factory.mktemp("landing")
    shutil.copyfile(empty_store, folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    summaries = {kind: search_in(folder, tiny_job(name=kind, **job), f"{kind}.yaml")
                 for kind, job in LANDING_JOBS.items()}
    with metaopt_ui(uri) as (base, links, _):
        yield summaries, uri, base


def _first_rows(driver, count: int) -> list[str]:
    """The text of the runs table's first ``count`` rows, top to bottom (the grid draws a row's pinned and scrolled
    columns as two elements with one ``row-index``)."""
    cells: dict[int, list[str]] = {}
    for row in driver.find_elements("css selector", ".ag-row[row-index]"):
        cells.setdefault(int(row.get_attribute("row-index")), []).append(row.text.replace("\n", " "))
    return [" ".join(cells[i]) for i in sorted(cells)[:count]]


@pytest.mark.parametrize("kind", ["regression", "classification", "rl"])
def test_the_landing_page_says_who_won_by_how_much_and_with_which_settings(kind, landing, browser):
    from metaopt.tracking.board import settings
    from metaopt.tracking.store import experiment_link

    summaries, uri, base = landing
    summary = summaries[kind]
    client = MlflowClient(uri)
    champion = client.get_run(summary.decision.best.run_id)
    metric = summary.metric
    test = metric.show_ci(champion.data.metrics[f"test_{metric.name}"], champion.data.metrics[f"test_{metric.name}_ci95"])
    if metric.percent:
        assert test.endswith("%")
    experiment = client.get_experiment_by_name(f"metaopt-{summary.key}")
    shown = settings(champion.data.params)
    needles = ["01 champion", test, shown[:40], f"Champion: {summary.decision.best.method}"]
    if kind == "rl":
        needles.append("02 limit (reference)")
    _page(browser, experiment_link(base, experiment.experiment_id), *needles, shot=f"landing_{kind}")
    first, *rest = _first_rows(browser, 2)
    assert "01 champion" in first and test in first and summary.decision.best.method in first, first
    if kind == "rl":  # the exact limit is a labelled reference row, second, and never the champion
        assert summary.decision.best.method != "bayes_optimal"
        assert "02 limit (reference)" in rest[0] and "bayes_optimal" in rest[0], rest


def test_ties_put_the_scored_champion_first(landing):
    from metaopt.tracking.store import RANK_TAG

    summaries, uri, _ = landing
    summary = summaries["rl"]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(f"metaopt-{summary.key}")
    runs = client.search_runs([experiment.experiment_id], "tags.`metaopt.role` = 'trial'",
                              order_by=[f"tags.`{RANK_TAG}` ASC"])
    ucb1 = [r for r in runs if r.data.params["method"] == "ucb1"]
    assert len(ucb1) == 2 and ucb1[0].data.metrics["val_reward"] == ucb1[1].data.metrics["val_reward"]  # a tie
    ranked = [r for r in ucb1 if RANK_TAG in r.data.tags]
    assert len(ranked) == 1 and "test_reward" in ranked[0].data.metrics  # the scored one of the two is ranked
    assert runs[0].info.run_id == summary.decision.best.run_id and runs[0].data.tags[RANK_TAG] == "01 champion"


SLOW = threading.Event()


def test_a_running_search_shows_its_progress(landing, browser, tmp_path):
    from metaopt.learners import LEARNERS
    from metaopt.learners.maml import MAML
    from metaopt.search import load_job
    from metaopt.search.executors import InProcessExecutor
    from metaopt.search.runner import run_search
    from metaopt.tracking import MlflowSearchTracker
    from tests.search.jobs import tiny_job, write_job

    summaries, uri, base = landing

    class Waits(MAML):
        name = "waits-maml"

        def meta_step(self, batch):
            SLOW.wait(timeout=120)
            return super().meta_step(batch)

    LEARNERS.register(Waits)
    job = tiny_job(name="progress", methods=["maml", "waits-maml"], search_space=None,
                   enqueue=[{"method": "maml"}, {"method": "waits-maml"}],
                   budget={"trials": 2, "meta_iterations": 10, "eval_interval": 5, "val_tasks": 10, "test_tasks": 20})
    outcome = {}
    search = threading.Thread(target=lambda: outcome.setdefault("summary", run_search(
        load_job(write_job(tmp_path, job)), executor=InProcessExecutor(), tracker=MlflowSearchTracker(uri),
        workdir=tmp_path / "work")))
    SLOW.clear()
    search.start()
    try:
        client = MlflowClient(uri)
        deadline = time.monotonic() + 120
        while True:
            running = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                         "tags.`metaopt.role` = 'search' AND attributes.status = 'RUNNING' AND "
                                         "tags.`metaopt.progress` != ''")
            if running:
                break
            assert time.monotonic() < deadline and search.is_alive(), "the search never recorded its progress"
            time.sleep(0.5)
        (parent,) = running
        text = _page(browser, run_link(base, parent.info.experiment_id, parent.info.run_id), "Running",
                     "1 of 2 trials done", "best so far maml", shot="search_run_progress")
        assert "about" in text and "left" in text  # the time left, from the pace so far
    finally:
        SLOW.set()
        search.join(timeout=120)
        LEARNERS.unregister("waits-maml")
    assert outcome["summary"].parent_run_id == parent.info.run_id
