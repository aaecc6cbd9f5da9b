"""The key's landing page in the MLflow UI: the runs table a ``metaopt ui`` link opens answers who won, by how much
and with which settings without a click.

Each method's best trial (the key's leaderboard, across searches) gets the tags the table shows: ``metaopt.rank``
(``01 champion`` first, then ``02 limit (reference)`` where the family has an exact limit, then the others by
validation; the table sorts by it), ``metaopt.test`` (test score ± 95% CI in the family's format, and the spread
across training seeds where there are several), ``metaopt.settings`` (the trial's hyperparameters in one column)
and ``metaopt.adapt`` (what adapting to one task costs). Runs that left the board lose them. The key's description
leads with the champion line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlflow.tracking import MlflowClient

from metaopt.search.results import MethodRow
from metaopt.tasks.metrics import Metric
from metaopt.tracking.store import ADAPT_TAG, RANK_TAG, SETTINGS_TAG, TEST_TAG

CHAMPION, LIMIT = "champion", "limit (reference)"


@dataclass(frozen=True)
class Place:
    """One line of the landing page: the run, its label (champion, limit or none) and its row."""

    run_id: str
    label: str
    row: MethodRow | None  # None: a champion from an earlier search that is no longer its method's best trial


def order(rows: list[MethodRow], champion_run_id: str | None, limit: str | None) -> list[Place]:
    """The page's order: the champion, the family's limit (a reference, never a candidate), then each method's best
    trial by validation (``rows``' order). On a tie the scored run is first, as the board's own ranking keeps it."""
    places: list[Place] = []
    if champion_run_id:
        row = next((r for r in rows if r.run_id == champion_run_id), None)
        places.append(Place(champion_run_id, CHAMPION, row))
    places += [Place(r.run_id, LIMIT, r) for r in rows
               if r.method == limit and r.run_id and r.run_id != champion_run_id]
    places += [Place(r.run_id, "", r) for r in rows
               if r.run_id and r.method != limit and r.run_id != champion_run_id and r.best_val is not None]
    return places


def settings(params: dict[str, Any]) -> str:
    """A trial's hyperparameters in one readable line, those away from the method's defaults only:
    ``inner_lr=0.4 · inner_steps=1 (others default)``; every one where the method is not installed here."""
    from metaopt.learners import LEARNERS

    method = params.get("method")
    try:
        declared = LEARNERS[method].hyperparameters if method else {}
    except ValueError:  # a plugin not installed where the store is read
        declared = {}
    shown = {k: _logged(v) for k, v in sorted(params.items()) if k != "method"
             and not (k in declared and _logged(v) == _logged(declared[k].default))}
    line = " · ".join(f"{k}={v}" for k, v in shown.items())
    if declared and len(shown) < len(params) - 1:
        line = f"{line} (others default)" if line else "defaults"
    return line or "-"


def _logged(value: Any) -> str:
    """A value as a trial's run logs it (``MlflowTrialLog.log_params``)."""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def write_board(client: MlflowClient, key: str) -> None:
    """Label and rank the key's runs table and lead its description with the champion (see the module)."""
    from metaopt.tracking.champion import read_champion
    from metaopt.tracking.leaderboard import leaderboards
    from metaopt.tracking.store import NOTE_TAG, experiment_name, key_note, registered_model_name

    (board,) = leaderboards(key, tracking_uri=client.tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name(key))
    limit = board.limit
    champion = read_champion(client, key)
    places = order(board.rows, champion.run_id if champion else None, limit)
    metric = board.metric
    keep = set()
    for i, place in enumerate(places, 1):
        run = client.get_run(place.run_id)
        tags = {RANK_TAG: f"{i:02d} {place.label}".rstrip(), TEST_TAG: _test(run.data.metrics, metric),
                SETTINGS_TAG: settings(run.data.params), ADAPT_TAG: adapt_cost(run.data.metrics)}
        for tag, value in tags.items():
            if run.data.tags.get(tag) != value:
                client.set_tag(place.run_id, tag, value)
        keep.add(place.run_id)
    for run in client.search_runs([experiment.experiment_id], f"tags.`{RANK_TAG}` != ''", max_results=1000):
        if run.info.run_id not in keep:  # off the board now (beaten by a later trial of its method)
            for tag in (RANK_TAG, TEST_TAG, SETTINGS_TAG, ADAPT_TAG):
                client.delete_tag(run.info.run_id, tag)
    lines = []
    if places and places[0].label == CHAMPION:
        first = client.get_run(places[0].run_id)
        name = registered_model_name(key)
        lines.append(f"**Champion: {first.data.tags.get('metaopt.method', '?')}**, test {metric.label} "
                     f"{_test(first.data.metrics, metric)} on {first.data.tags.get('metaopt.test_tasks', '?')} "
                     f"held-out tasks; settings {settings(first.data.params)}; `{name}@champion`.")
    for place in places:
        if place.label == LIMIT:
            run = client.get_run(place.run_id)
            lines.append(f"**Exact limit ({limit})**, a reference and not a candidate: test {metric.label} "
                         f"{_test(run.data.metrics, metric)}.")
    note = "\n\n".join([*lines, key_note(key, board.family, metric)])
    if experiment.tags.get(NOTE_TAG) != note:
        client.set_experiment_tag(experiment.experiment_id, NOTE_TAG, note)


def adapt_cost(metrics: dict[str, float]) -> str:
    """``14 ms (p90 26 ms)``: what adapting to one new task and predicting its queries costs; ``-`` unmeasured."""
    median, p90 = metrics.get("test_adapt_ms"), metrics.get("test_adapt_ms_p90")
    if median is None:
        return "-"
    return f"{median:.3g} ms" + (f" (p90 {p90:.3g} ms)" if p90 is not None else "")


def _test(metrics: dict[str, float], metric: Metric) -> str:
    shown = metric.show_ci(metrics.get(f"test_{metric.name}"), metrics.get(f"test_{metric.name}_ci95"))
    spread = metrics.get(f"test_{metric.name}_seed_sd")
    if spread is not None and metrics.get("test_seeds", 1) > 1:  # budget.seeds: the mean over seeds, and their spread
        shown += f" ({int(metrics['test_seeds'])} seeds, sd {metric.show(spread)})"
    return shown
