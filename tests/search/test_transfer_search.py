"""Every leaderboard answers "does meta-learning pay?": the transfer baselines beside the meta-learners, one verdict."""

from __future__ import annotations

import re

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from metaopt.search import ConfigError, load_job
from metaopt.search.evaluation import TaskScores
from metaopt.search.executors import RayExecutor
from metaopt.search.runner import run_search
from metaopt.search.selection import Candidate, transfer_verdict
from metaopt.tasks.metrics import REGRESSION
from metaopt.tracking import MlflowSearchTracker
from tests.search.jobs import tiny_job, write_job

MSE = REGRESSION[0]


def _candidate(method: str, losses: torch.Tensor) -> Candidate:
    return Candidate(method, f"run-{method}", TaskScores("sine-5shot", {"loss": losses.tolist()}))


@pytest.mark.parametrize("shift, verdict", [
    (-0.5, "meta-learning pays on this family: maml beats the best baseline beyond its CI"),
    (0.5, "meta-learning does not pay on this family: the baseline pretrain beats the best meta-learner beyond its CI"),
    (0.0, "meta-learning does not pay on this family: the best meta-learner does not beat the baseline pretrain"),
])
def test_the_verdict_pairs_the_best_meta_learner_with_the_best_baseline(shift, verdict):
    baseline = torch.rand(200, generator=torch.Generator().manual_seed(0)) + 1
    noise = 0.01 * torch.randn(200, generator=torch.Generator().manual_seed(1))
    said = transfer_verdict(_candidate("maml", baseline + shift + noise), _candidate("pretrain", baseline), MSE)
    assert said.startswith(verdict) and "over 200 paired tasks" in said
    assert transfer_verdict(None, _candidate("pretrain", baseline), MSE) is None


def test_a_search_ranks_every_kind_of_learner_and_the_baselines_on_one_leaderboard(ray_session, tmp_path):
    # On one glyphs key: a gradient learner, a metric learner, two model-based learners (SNAIL, a neural process)
    # and a transformer that learns in context, with the transfer baselines; a small Conv-4 keeps it to seconds.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    learners = ["maml", "protonet", "snail", "cnp", "icl"]
    small = {"maml": {"inner_lr": 0.4, "inner_steps": 1}, "protonet": {"distance": "euclidean"},
             "snail": {"filters": 8, "key_size": 8, "value_size": 8, "max_shots": 4},
             "cnp": {"width": 16, "layers": 1}, "icl": {"width": 16, "depth": 1, "heads": 2}}
    space = {m: {"outer_lr": {"type": "float", "low": 0.001, "high": 0.01, "log": True}, "meta_batch": 2, **fixed}
             for m, fixed in small.items()}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    job = tiny_job(family={"name": "glyphs", "ways": 3, "shots": 1, "queries": 3}, methods=learners, baselines=None,
                   compile="never",
                   search_space=str(tmp_path / "space.yaml"), backbone={"name": "conv4", "hidden": 8},
                   enqueue=[{"method": m, "outer_lr": 0.003} for m in learners],
                   budget={"trials": 7, "meta_iterations": 30, "eval_interval": 15, "val_tasks": 20, "test_tasks": 100},
                   space={"pretrain": {"adapt_steps": 10}, "scratch": {"steps": 10}})
    del job["baselines"]  # the default: scratch and pretrain join every supervised search
    loaded = load_job(write_job(tmp_path, job))
    assert loaded.job.methods == [*learners, "scratch", "pretrain"]
    assert loaded.job.baselines == ["scratch", "pretrain"]
    with RayExecutor(cpus_per_trial=1) as executor:
        summary = run_search(loaded, executor=executor, tracker=MlflowSearchTracker(uri), workdir=tmp_path / "work")
    rows = {row.method: row for row in summary.rows}
    states = [(r.method, r.state, r.reason) for r in summary.results]
    assert set(rows) == {*learners, "scratch", "pretrain"}, states
    accuracies = [row.test_mean("accuracy") for row in summary.rows]
    assert all(a is not None for a in accuracies), (states, summary.notes)
    validation = [row.best_val for row in summary.rows]
    assert validation == sorted(validation, reverse=True), validation  # one ranking, the best by validation first
    assert summary.verdict is not None and summary.verdict.startswith("meta-learning ")
    assert any(m in summary.verdict for m in learners) and ("scratch" in summary.verdict or "pretrain" in summary.verdict)
    parent = MlflowClient(uri).get_run(summary.parent_run_id)
    assert parent.data.tags["metaopt.verdict"] == summary.verdict
    assert "**Does meta-learning pay?** Meta-learning" in parent.data.tags["mlflow.note.content"]


@pytest.mark.parametrize("baselines, message", [
    (["maml"], "baselines: maml is a meta-learner: list it in methods (allowed: scratch, pretrain"),
    (["bogus"], "baselines: unknown method 'bogus' (allowed: scratch, pretrain"),
])
def test_a_wrong_baseline_is_one_line(tmp_path, baselines, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_job(write_job(tmp_path, tiny_job(baselines=baselines)))


def test_no_baselines_when_asked_and_none_on_rl_families(tmp_path):
    assert load_job(write_job(tmp_path, tiny_job(baselines=[]))).job.methods == ["maml", "fomaml", "reptile"]
    rl = {**tiny_job(), "family": {"name": "bandit"}, "methods": ["rl2"], "search_space": None}
    del rl["baselines"]
    assert load_job(write_job(tmp_path, rl, "rl.yaml")).job.baselines == []
