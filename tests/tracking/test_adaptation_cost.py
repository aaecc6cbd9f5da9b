"""What adapting costs, on every leaderboard: each method's best trial records the time to adapt to one new task and
predict its queries (median, 90th percentile); `select --max-adapt-ms` picks the best method within a budget."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from metaopt.tracking.champion import recorded_scores, select_champion
from tests.search.jobs import search_in, tiny_job


@pytest.fixture(scope="module")
def searched(tmp_path_factory, empty_store):
    import shutil

    folder = tmp_path_factory.mktemp("cost")
    shutil.copyfile(empty_store, folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    # The same Conv-4: ProtoNet embeds the support once; MAML takes five gradient steps on it first.
    job = tiny_job(family={"name": "glyphs", "ways": 3, "shots": 1, "queries": 3}, methods=["protonet", "maml"],
                   search_space=None, backbone={"name": "conv4", "hidden": 8}, compile="never",
                   space={"protonet": {"meta_batch": 2}, "maml": {"inner_steps": 1, "test_steps": 5, "meta_batch": 2}},
                   budget={"trials": 2, "meta_iterations": 6, "eval_interval": 3, "val_tasks": 10, "test_tasks": 30})
    return search_in(folder, job), uri


def test_every_method_records_what_adapting_costs_and_a_metric_learner_costs_less_than_maml(searched):
    summary, uri = searched
    client = MlflowClient(uri)
    cost = {}
    for row in summary.rows:
        metrics = client.get_run(row.run_id).data.metrics
        assert 0 < metrics["test_adapt_ms"] <= metrics["test_adapt_ms_p90"]
        assert recorded_scores(client, row.run_id).extra["adapt_ms"] == metrics["test_adapt_ms"]  # with the scores
        cost[row.method] = metrics["test_adapt_ms"]
        assert client.get_run(row.run_id).data.tags["metaopt.adapt"].endswith(" ms)")  # the landing page's column
    assert cost["protonet"] < cost["maml"]  # an order, not a time: no gradient step against five


def test_select_within_an_adaptation_budget(searched):
    summary, uri = searched
    client = MlflowClient(uri)
    cost = {row.method: client.get_run(row.run_id).data.metrics["test_adapt_ms"] for row in summary.rows}
    between = (cost["protonet"] + cost["maml"]) / 2
    chosen = select_champion(summary.key, tracking_uri=uri, max_adapt_ms=between, apply=False)
    assert [c.method for c in chosen.candidates] == ["protonet"] and chosen.decision.best.method == "protonet"
    with pytest.raises(LookupError, match="adapts within"):
        select_champion(summary.key, tracking_uri=uri, max_adapt_ms=cost["protonet"] / 10, apply=False)
