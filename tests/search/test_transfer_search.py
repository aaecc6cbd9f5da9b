"""Every leaderboard answers "does meta-learning pay?": the transfer baselines beside the meta-learners, one verdict."""

from __future__ import annotations

import re

import pytest
import torch
from mlflow.tracking import MlflowClient

from metaopt.search import ConfigError, load_job
from metaopt.search.evaluation import TaskScores
from metaopt.search.executors import RayExecutor
from metaopt.search.runner import run_search
from metaopt.search.selection import Candidate, transfer_verdict
from metaopt.tasks.metrics import REGRESSION
from metaopt.tracking import MlflowSearchTracker
from tests.search.jobs import GOOD, tiny_job, write_job

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


def test_a_search_ranks_meta_learners_and_baselines_on_one_leaderboard(ray_session, tmp_path):
    # A gradient learner, a transformer that learns in context and a model-based learner, with the baselines.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    learners = ["maml", "icl", "metanet"]
    job = tiny_job(methods=learners, baselines=None,
                   enqueue=[GOOD, {"method": "icl", "width": 32, "depth": 2, "heads": 2, "curriculum": 0.0, "meta_batch": 16},
                            {"method": "metanet", "hidden": 32, "key_size": 32, "meta_hidden": 10, "meta_batch": 8}],
                   budget={**tiny_job()["budget"], "trials": 5, "meta_iterations": 40, "eval_interval": 20},
                   space={"pretrain": {"adapt_steps": 20}, "scratch": {"steps": 20}})
    del job["baselines"]  # the default: scratch and pretrain join every supervised search
    loaded = load_job(write_job(tmp_path, job))
    assert loaded.job.methods == [*learners, "scratch", "pretrain"]
    assert loaded.job.baselines == ["scratch", "pretrain"]
    with RayExecutor(cpus_per_trial=1) as executor:
        summary = run_search(loaded, executor=executor, tracker=MlflowSearchTracker(uri), workdir=tmp_path / "work")
    rows = {row.method: row for row in summary.rows}
    states = [(r.method, r.state, r.reason) for r in summary.results]
    assert set(rows) == {*learners, "scratch", "pretrain"}, states
    assert all(r.test_mean("loss") is not None for r in rows.values()), (states, summary.notes)
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
