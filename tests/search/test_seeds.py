"""`budget.seeds`: each method's best configuration trained again with other training seeds, scored on the same
test tasks; the leaderboard shows the mean and the spread across seeds, and the champion decision pairs the mean."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from metaopt.tracking import leaderboard
from metaopt.tracking.champion import recorded_scores
from tests.search.jobs import search_in, tiny_job


def test_two_seeds_give_two_runs_per_method_and_a_spread(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    job = tiny_job(methods=["maml", "fomaml"], budget={**tiny_job()["budget"], "trials": 2, "seeds": 2},
                   enqueue=[{"method": "maml"}, {"method": "fomaml"}])
    summary = search_in(tmp_path, job)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("metaopt-sine-5shot").experiment_id
    seeds = client.search_runs([experiment], "tags.`metaopt.role` = 'seed'")
    rows = {row.method: row for row in summary.rows}
    assert sorted(r.data.tags["metaopt.seed_of"] for r in seeds) == sorted(row.run_id for row in rows.values())
    assert all(r.info.status == "FINISHED" and "test_loss" in r.data.metrics for r in seeds)
    assert all(r.data.tags["mlflow.parentRunId"] == r.data.tags["metaopt.seed_of"] for r in seeds)  # nested
    for method, row in rows.items():
        seed = next(r for r in seeds if r.data.tags["metaopt.seed_of"] == row.run_id)
        own = recorded_scores(client, seed.info.run_id).mean_ci("loss")[0]
        assert row.test["test_seeds"] == 2 and row.test["test_loss_seed_sd"] > 0  # another seed, another model
        single = recorded_scores(client, row.run_id)  # the best trial's record: the mean over both seeds
        assert single.extra["seeds"] == 2
        # the mean of two seeds m and o, with o this seed's own: sd = |m_first - o| / sqrt 2 = sqrt 2 |mean - o|
        assert abs(row.test["test_loss_seed_sd"] - 2 ** 0.5 * abs(row.test["test_loss"] - own)) < 1e-9
    board = {r.method: r for r in leaderboard("sine-5shot", tracking_uri=uri)}
    assert set(board) == {"maml", "fomaml"}  # seed runs never become a method's best trial
    assert all(board[m].test["test_loss_seed_sd"] == rows[m].test["test_loss_seed_sd"] for m in board)
