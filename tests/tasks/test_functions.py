"""The ``functions`` family (Garg et al. 2022) and its classic estimators: the classes draw what they say, the
metric is error / dim, and the posterior mean is the linear class's exact limit, enqueued by the family."""

from __future__ import annotations

import re

import pytest
import torch

from metaopt.learners.checkpoint import build_learner
from metaopt.search import ConfigError, load_job
from metaopt.tasks import FAMILIES
from metaopt.tasks.functions import Functions, FunctionsOptions
from tests.search.jobs import tiny_job, write_job

ESTIMATORS = ["least_squares", "posterior_mean", "ridge", "lasso", "knn", "averaging", "support_net", "boosted_trees"]


def _estimator(method: str, dim: int, **hparams):
    return build_learner(method, hparams, backbone={"name": "mlp"}, task_kind="regression", input_shape=(dim,),
                         output_size=1)


def _error(family: Functions, method: str, batch, **hparams) -> float:
    return float(family.score_learner(_estimator(method, family.dim, **hparams), batch)["loss"].mean())


def test_keys_name_what_changes_the_tasks_and_options_are_checked():
    assert Functions.key(FunctionsOptions()) == "functions-linear-d5-k10-q10"
    assert Functions.key(FunctionsOptions(function="sparse-linear", dim=20, sparsity=3, noise=0.5)) == \
        "functions-sparse-linear-d20-s3-k10-q10-noise0.5"
    with pytest.raises(ValueError, match=re.escape("sparsity (6) must be <= dim (5)")):
        FunctionsOptions(function="sparse-linear", dim=5, sparsity=6)
    with pytest.raises(ValueError, match="function"):
        FunctionsOptions(function="quadratic")


def test_splits_are_reproducible_and_disjoint_and_the_classes_draw_what_they_say():
    family = Functions(function="sparse-linear", dim=8, points=20, queries=5, sparsity=3)
    a = family.sample(50, "train", torch.Generator().manual_seed(0))
    assert torch.equal(a.support_y, family.sample(50, "train", torch.Generator().manual_seed(0)).support_y)
    assert not torch.allclose(a.support_y, family.sample(50, "test", torch.Generator().manual_seed(0)).support_y)
    assert a.support_x.shape == (50, 20, 8) and a.support_y.shape == (50, 20, 1) and a.query_y.shape == (50, 5, 1)
    w = torch.linalg.lstsq(a.support_x, a.support_y).solution[..., 0]  # exact: no noise, more points than dim
    assert ((w.abs() > 1e-4).sum(1) == 3).all()
    tree = Functions(function="tree", dim=4, points=60, queries=1).sample(20, "val", torch.Generator().manual_seed(1))
    assert all(len(task.unique()) <= 16 for task in tree.support_y)  # a depth-4 tree has 16 leaves
    scale = Functions(function="relu-net", dim=10, points=200, queries=1).sample(200, "val", torch.Generator())
    assert 0.7 < float(scale.support_y.var() / 10) < 1.3  # the paper's scaling: variance about dim


def test_the_metric_is_squared_error_over_dim_and_predicting_zero_scores_about_one():
    family = Functions(dim=10, points=5, queries=50)
    batch = family.sample(200, "test", torch.Generator().manual_seed(2))
    zeros = torch.zeros_like(batch.query_y)
    assert family.metrics[0].label == "MSE / dim"
    assert 0.9 < float(family.score(zeros, batch)["loss"].mean()) < 1.1


@pytest.mark.parametrize("method", ESTIMATORS)
def test_every_estimator_predicts_each_task_from_its_own_support_set(method):
    family = Functions(dim=3, points=12, queries=4)
    batch = family.sample(3, "test", torch.Generator().manual_seed(3))
    hparams = {"steps": 50} if method == "support_net" else {"trees": 10} if method == "boosted_trees" else {}
    learner = _estimator(method, 3, **hparams)
    predictions = learner.predict(batch)
    assert predictions.shape == batch.query_y.shape and torch.isfinite(predictions).all()
    one = learner.adapt(batch.support_x[1], batch.support_y[1])(batch.query_x[1])
    assert torch.allclose(one, predictions[1], atol=1e-4)  # alone as in the batch: nothing shared across tasks


def test_the_posterior_mean_is_the_exact_limit_of_noisy_linear_functions():
    noise = 0.5
    family = Functions(dim=5, points=5, queries=20, noise=noise)
    batch = family.sample(2000, "test", torch.Generator().manual_seed(4))
    limit = _error(family, "posterior_mean", batch, noise=noise)
    # No other linear estimator does better, whatever its penalty (least squares interpolates the noise).
    for method, hparams in [("least_squares", {}), ("ridge", {"alpha": 0.05}), ("ridge", {"alpha": 1.0}),
                            ("averaging", {}), ("posterior_mean", {"noise": 0.1})]:
        assert limit < _error(family, method, batch, **hparams), (method, hparams)
    assert _error(family, "least_squares", Functions(dim=5, points=10).sample(100, "test", torch.Generator())) < 1e-8
    # Below dim points without noise, the minimum-norm solution is the posterior mean: (1 - k/d) of the variance left.
    few = Functions(dim=10, points=4, queries=50)
    assert abs(_error(few, "least_squares", few.sample(2000, "test", torch.Generator().manual_seed(5))) - 0.6) < 0.05


def test_the_family_enqueues_its_limit_with_its_own_noise(tmp_path):
    job = tiny_job(family={"name": "functions", "dim": 4, "points": 8, "noise": 0.3},
                   methods=["icl", "posterior_mean"], search_space=None, baselines=["least_squares"])
    loaded = load_job(write_job(tmp_path, job))
    assert {"method": "posterior_mean"} in loaded.job.enqueue and {"method": "least_squares"} in loaded.job.enqueue
    assert loaded.space.spaces["posterior_mean"] == {"noise": 0.3, "prior_std": 1.0}  # fixed: the family's own
    assert {"posterior_mean", "least_squares"} <= set(loaded.space.fixed_methods())
    assert FAMILIES["functions"].limit(FunctionsOptions(function="tree")) is None
    bandit = {**tiny_job(), "family": {"name": "bandit", "arms": 5, "pulls": 10}, "methods": ["bayes_optimal"],
              "search_space": None}
    assert load_job(write_job(tmp_path, bandit, "bandit.yaml")).job.enqueue == [{"method": "bayes_optimal"}]


def test_an_estimator_on_a_classification_family_is_one_line(tmp_path):
    job = tiny_job(family={"name": "glyphs", "ways": 3, "shots": 1}, methods=["least_squares"], search_space=None)
    with pytest.raises(ConfigError, match="least_squares learns regression tasks"):
        load_job(write_job(tmp_path, job))
