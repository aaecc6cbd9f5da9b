"""Meta-RL is searched like any other family: RL² and the classic policies on Ray, pruned, tracked, selected."""

from __future__ import annotations

import re

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from metaopt.search import ConfigError, load_job
from metaopt.search.executors import RayExecutor
from metaopt.search.runner import run_search
from metaopt.tracking import MlflowSearchTracker
from metaopt.tracking.models import load_learner
from tests.search.jobs import write_job

JOB = {
    "name": "bandits",
    "family": {"name": "bandit", "arms": 5, "pulls": 10},
    "methods": ["rl2", "maml", "random", "greedy", "ucb1"],
    "space": {"rl2": {"hidden": 32, "outer_lr": {"type": "float", "low": 0.002, "high": 0.004, "log": True},
                      "meta_batch": 256},
              "maml": {"inner_lr": {"type": "float", "low": 0.3, "high": 1.0, "log": True}, "meta_batch": 128},
              "ucb1": {"c": {"type": "float", "low": 0.01, "high": 1.0, "log": True}}},
    "budget": {"trials": 6, "meta_iterations": 40, "eval_interval": 20, "val_tasks": 200, "test_tasks": 500},
    "pruner": {"type": "median", "n_startup_trials": 5, "n_warmup_steps": 0},
    "enqueue": [{"method": "rl2"}, {"method": "random"}, {"method": "greedy"}, {"method": "ucb1", "c": 0.1},
                {"method": "maml", "inner_lr": 0.5}, {"method": "random"}],
}


def test_rl2_maml_and_the_classic_policies_search_on_ray_with_a_pruner_and_land_in_mlflow(ray_session, tmp_path,
                                                                                       monkeypatch, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # One trial at a time: the first five (never pruned: start-up trials) finish before the sixth reports.
    with RayExecutor(cpus_per_trial=1, max_concurrent=1) as executor:
        summary = run_search(load_job(write_job(tmp_path, JOB)), executor=executor, tracker=MlflowSearchTracker(uri),
                             workdir=tmp_path / "work")
    assert summary.key == "bandit-10x5" and summary.metric.name == "reward" and summary.metric.higher_is_better
    # The sixth, a second random trial past the pruner's start-up, is worse than the median at its one report:
    # that report is its last (a classic policy is evaluated once, at the end), and a last report is never pruned.
    assert len(summary.results) == 6 and [r.state for r in summary.results] == ["complete"] * 6
    rows = {row.method: row for row in summary.rows}
    assert rows["greedy"].test_mean("reward") > rows["random"].test_mean("reward") + 1.0
    assert abs(rows["random"].test_mean("reward") - 5.0) < 3 * rows["random"].test_ci("reward")
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("metaopt-bandit-10x5").experiment_id],
                              "tags.`metaopt.role` = 'trial'")
    assert len(runs) == 6 and all(run.info.status == "FINISHED" for run in runs), [(r.data.tags.get("metaopt.state"), r.data.tags.get("metaopt.reason")) for r in runs]
    rl2 = next(run for run in runs if run.data.params["method"] == "rl2" and run.data.tags["metaopt.state"] == "complete")
    assert [m.step for m in client.get_metric_history(rl2.info.run_id, "val_reward")] == [20, 40]
    assert "test_regret" in rl2.data.metrics or rows["rl2"].run_id != rl2.info.run_id
    learner = load_learner(rows["rl2"].run_id, tracking_uri=uri)  # a trained policy loads and plays a new task
    from metaopt.tasks import Bandit

    played = learner.play(Bandit().sample(3, "test", torch.Generator().manual_seed(0)), torch.Generator())
    assert played["actions"].shape == (3, 10) and played["rewards"].shape == (3, 10)
    from tests.test_cli_edges import _main

    printed, _ = _main(["leaderboard", "bandit-10x5", "--tracking-uri", uri], tmp_path, monkeypatch, capsys)
    lines = printed.stdout.splitlines()
    assert printed.returncode == 0 and max(len(line) for line in lines) <= 80, printed.stdout  # a terminal's width
    assert all(any(line.lstrip("│ ").startswith(f"{m} ") for line in lines) for m in JOB["methods"]), printed.stdout
    assert "regret" not in printed.stdout  # the reward shifted by a constant: recorded, not repeated
    maml = next(run for run in runs if run.data.params["method"] == "maml")
    assert maml.data.tags["metaopt.state"] == "complete" and "val_reward" in maml.data.metrics
    policy = mlflow.pyfunc.load_model(client.get_run(rl2.info.run_id).data.tags["metaopt.model_uri"])
    history = np.zeros((4, 7), dtype=np.float32)  # one task's first four observations: arm 2 paid three times
    history[1:, 2] = history[1:, 5] = 1
    assert policy.predict({"history": history}).shape == (1,)


@pytest.mark.parametrize("methods, message", [
    (["protonet"], "methods: protonet learns classification tasks; family bandit has rl tasks (allowed for it: maml, fomaml, rl2"),
    (["psrl"], "methods: psrl plays tabular-mdp only, not bandit"),
])
def test_a_method_that_cannot_learn_the_family_is_one_line(tmp_path, methods, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_job(write_job(tmp_path, {**JOB, "methods": methods, "space": {}, "enqueue": []}))


def test_a_method_takes_the_hyperparameters_of_the_family_kind(tmp_path):
    # snail is a sequence classifier on supervised families and RL²'s PPO with a SNAIL policy on RL families.
    rl = {**JOB, "methods": ["snail"], "space": {"snail": {"entropy": 0.02, "filters": 16, "horizon": 16}},
          "enqueue": [{"method": "snail", "entropy": 0.02}]}
    assert load_job(write_job(tmp_path, rl)).space.declared("snail")["gae_lambda"].default == 0.3
    sine = {**rl, "family": {"name": "sine"}, "enqueue": []}
    with pytest.raises(ConfigError, match=re.escape("space.snail.entropy: unknown hyperparameter for snail")):
        load_job(write_job(tmp_path, sine, "sine.yaml"))
