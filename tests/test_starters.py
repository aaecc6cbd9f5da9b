"""`metaopt init` on every kind of family: the methods and baselines that fit it, a budget it can honour."""

from __future__ import annotations

import re

import pytest
import yaml

from metaopt.discovery import starter, write_starter
from metaopt.search import ConfigError, load_job
from metaopt.search.executors import InProcessExecutor
from metaopt.search.runner import run_search
from metaopt.tasks.movielens import MovieLens
from tests.tasks.test_movielens import write_movielens


def test_a_movielens_starter_searches_melu_against_the_mean_ratings_on_every_new_user_once(tmp_path):
    root = write_movielens(tmp_path / "ml", "grouplens")
    job_path, space_path = write_starter("movielens", {"root": str(root)}, tmp_path / "jobs", trials=6,
                                         meta_iterations=20)
    job = yaml.safe_load(job_path.read_text())
    assert job["methods"] == ["melu", "maml"] and job["backbone"] == {"name": "melu"}
    assert job["baselines"] == ["scratch", "pretrain", "global_mean", "item_mean", "user_mean"]
    family = MovieLens(root=str(root))
    assert (job["budget"]["val_tasks"], job["budget"]["test_tasks"]) == (family.distinct_tasks("val"),
                                                                        family.distinct_tasks("test"))
    assert set(yaml.safe_load(space_path.read_text())) == {"melu", "maml"}
    loaded = load_job(job_path)
    summary = run_search(loaded, executor=InProcessExecutor(), workdir=tmp_path / "work")
    ran = [r.method for r in summary.results]
    assert ran[:5] == job["baselines"] and ran[5] in ("melu", "maml"), ran  # the baselines first, once each
    assert {row.method for row in summary.rows} >= {"user_mean", ran[5]}
    assert summary.verdict is not None


def test_rl_starters_list_the_classic_policies_that_play_the_family():
    bandit, space = starter("bandit", {})
    assert bandit["methods"] == ["rl2", "maml"] and "bayes_optimal" in bandit["baselines"]
    assert "psrl" not in bandit["baselines"] and {"epsilon_greedy", "ucb1"} <= set(space)
    assert bandit["budget"]["trials"] == 12 + len(bandit["baselines"]) and bandit["budget"]["test_tasks"] == 1000
    mdp, _ = starter("tabular-mdp", {})
    assert mdp["name"] == "tabular-mdp" and mdp["baselines"] == ["random", "psrl"]
    long, _ = starter("bandit", {"pulls": 100})  # past what the exact DP solves in seconds
    assert "bayes_optimal" not in long["baselines"] and "ucb1" in long["baselines"]


def test_a_job_asking_the_exact_dp_of_a_long_bandit_fails_at_load_in_one_line(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text("name: long\nfamily: {name: bandit, pulls: 100}\nmethods: [bayes_optimal]\n"
                    "budget: {trials: 1, meta_iterations: 1, eval_interval: 1}\n")
    with pytest.raises(ConfigError, match=re.escape("bayes_optimal solves bandits of about 20 pulls of 5 arms at "
                                                    "most; bandit has 100 pulls of 5 arms")):
        load_job(path)
