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


def killed_while_scoring_seeds(search_id: str) -> int:
    """A driver (its own process: ``tests.drivers``) killed with SIGKILL as it records the second seed's test
    scores: the first seed is trained and scored, the second trained only."""
    import os
    import signal

    from metaopt.search import load_job
    from metaopt.search.launch import Launch
    from metaopt.tracking import MlflowSearchTracker

    seen = []

    class KilledAt(MlflowSearchTracker):
        def record_test(self, run_id, scores):
            if self.client.get_run(run_id).data.tags.get("metaopt.role") == "seed":
                seen.append(run_id)
                if len(seen) == 2:
                    os.kill(os.getpid(), signal.SIGKILL)
            super().record_test(run_id, scores)

    launch = Launch(tracking_uri="sqlite:///" + os.path.abspath("mlflow.db"), in_process=True)
    launch.start(load_job("job.yaml"), tracker=KilledAt(launch.tracking_uri), search_id=search_id)
    return 0


def test_a_resumed_search_reuses_the_seeds_scored_before_its_driver_stopped(tmp_path, monkeypatch, capsys):
    from tests import drivers
    from tests.search.jobs import write_job
    from tests.test_cli_edges import _main

    write_job(tmp_path, tiny_job(methods=["maml", "fomaml"], budget={**tiny_job()["budget"], "trials": 2, "seeds": 2},
                                 enqueue=[{"method": "maml"}, {"method": "fomaml"}]))
    killed = drivers.run(killed_while_scoring_seeds, "seeds-killed", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": ""})
    assert killed.returncode == -9, killed.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("metaopt-sine-5shot").experiment_id
    before = client.search_runs([experiment], "tags.`metaopt.role` = 'seed'")
    scored = [r.info.run_id for r in before if "test_loss" in r.data.metrics]
    assert len(before) == 2 and len(scored) == 1

    done, _ = _main(["resume", "seeds-killed", "--in-process"], tmp_path, monkeypatch, capsys)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    after = client.search_runs([experiment], "tags.`metaopt.role` = 'seed'")
    finished = [r for r in after if r.info.status == "FINISHED"]
    assert len(finished) == 2 and scored[0] in {r.info.run_id for r in finished}  # the scored seed reused
    assert all("test_loss" in r.data.metrics for r in finished)
    unscored = [r for r in after if r.info.run_id not in {f.info.run_id for f in finished}]
    assert len(unscored) == 1 and unscored[0].info.status == "FAILED"  # trained, never scored: trained again
    assert "resume trained it again" in unscored[0].data.tags["metaopt.reason"]
    assert not [r for r in client.search_runs([experiment], "") if r.info.status == "RUNNING"]
    board = {r.method: r for r in leaderboard("sine-5shot", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")}
    assert all(board[m].test["test_seeds"] == 2 and board[m].test["test_loss_seed_sd"] > 0 for m in board)
