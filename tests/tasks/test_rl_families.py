"""Bandits and tabular MDPs: vectorised environments, the classic baselines against Duan et al.'s table, the exact DP."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metaopt.learners.bandit_baselines import BASELINES, BayesOptimal, rollout, tuned, ucb1
from metaopt.learners.mdp_baselines import run_psrl, run_random
from metaopt.tasks.bandit import Bandit
from metaopt.tasks.tabular_mdp import TabularMDP

TASKS = 2000
ROUNDING = 0.05  # the table gives one decimal


def _mean_ci(values: torch.Tensor) -> tuple[float, float]:
    return values.mean().item(), 1.96 * values.std().item() / math.sqrt(len(values))


def test_splits_draw_from_disjoint_seed_streams_and_batches_are_stacked():
    family = Bandit(arms=5, pulls=10)
    a = family.sample(4, "train", torch.Generator().manual_seed(0))
    b = family.sample(4, "test", torch.Generator().manual_seed(0))
    assert a.probs.shape == (4, 5) and not torch.equal(a.probs, b.probs)
    assert torch.equal(a.probs, family.sample(4, "train", torch.Generator().manual_seed(0)).probs)
    assert Bandit.key(Bandit.Options(arms=5, pulls=100)) == "bandit-100x5"
    mdp = TabularMDP().sample(3, "val", torch.Generator().manual_seed(1))
    assert mdp.transitions.shape == (3, 10, 5, 10) and torch.allclose(mdp.transitions.sum(-1), torch.ones(3, 10, 5))


def test_the_vectorised_mdp_step_equals_a_plain_loop_over_tasks():
    batch = TabularMDP(states=4, actions=3).sample(50, "train", torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(3)
    states = torch.randint(0, 4, (50,), generator=g)
    actions = torch.randint(0, 3, (50,), generator=g)
    noise, u = torch.randn(50, generator=g), torch.rand(50, generator=g)
    rewards, nxt = batch.step(states, actions, g, draws=(noise, u))
    for t in range(50):
        s, a = int(states[t]), int(actions[t])
        assert math.isclose(float(rewards[t]), float(batch.mean_reward[t, s, a] + noise[t]), rel_tol=1e-6)
        cumulative, expected = 0.0, 3
        for nxt_state, p in enumerate(batch.transitions[t, s, a].tolist()):
            cumulative += p
            if float(u[t]) <= cumulative:
                expected = nxt_state
                break
        assert int(nxt[t]) == expected


def test_the_bandit_environment_is_what_a_recurrent_policy_sees():
    batch = Bandit(arms=3, pulls=2).sample(4, "train", torch.Generator().manual_seed(0))
    env = batch.environment(torch.Generator().manual_seed(1))
    assert torch.equal(env.reset(), torch.zeros(4, 5))
    obs, rewards = env.step(torch.tensor([0, 1, 2, 0]))
    assert torch.equal(obs[:, :3], torch.eye(3)[[0, 1, 2, 0]]) and torch.equal(obs[:, 3], rewards)
    assert obs[:, 4].sum() == 0 and env.step(torch.zeros(4, dtype=torch.long))[0][:, 4].eq(1).all()


@pytest.mark.parametrize("name, published", [("random", 5.0), ("greedy", 6.6), ("thompson", 5.7), ("ucb1", 6.7),
                                             ("epsilon_greedy", 6.6)])
def test_each_baseline_matches_its_published_column_at_ten_pulls_of_five_arms(name, published):
    batch = Bandit(arms=5, pulls=10).sample(TASKS, "test", torch.Generator().manual_seed(0))
    policy, _ = tuned(name, 5, 10)
    mean, ci = _mean_ci(rollout(policy, batch, 10, torch.Generator().manual_seed(1)))
    assert abs(mean - published) <= ci + ROUNDING, (name, mean, ci)


def test_random_is_half_the_pulls_in_expectation():
    batch = Bandit(arms=10, pulls=100).sample(TASKS, "test", torch.Generator().manual_seed(4))
    mean, ci = _mean_ci(rollout(BASELINES["random"](), batch, 100, torch.Generator().manual_seed(5)))
    assert abs(mean - 50.0) <= ci


def test_textbook_ucb1_pulls_every_arm_first():
    s = torch.tensor([[1.0, 0.0, 0.0]])
    f = torch.tensor([[0.0, 0.0, 0.0]])
    assert int(ucb1(prior=False)(s, f, 2, torch.Generator().manual_seed(0))) in (1, 2)


def _brute_force_value(arms: int, pulls: int, grid: int = 400) -> float:
    """Expectimax over raw histories, each arm's predictive by numerical integration over p (no Beta algebra)."""
    p = (np.arange(grid) + 0.5) / grid

    def value(history: tuple[tuple[int, int], ...], remaining: int) -> float:
        if remaining == 0:
            return 0.0
        best = -1.0
        for arm in range(arms):
            outcomes = [r for a, r in history if a == arm]
            likelihood = np.prod([p if r else 1 - p for r in outcomes], axis=0) if outcomes else np.ones(grid)
            predictive = float((p * likelihood).sum() / likelihood.sum())
            q = predictive * (1 + value(history + ((arm, 1),), remaining - 1)) \
                + (1 - predictive) * value(history + ((arm, 0),), remaining - 1)
            best = max(best, q)
        return best

    return value((), pulls)


def test_the_exact_dp_equals_brute_force_and_no_policy_beats_it():
    assert math.isclose(BayesOptimal(2, 3).value, _brute_force_value(2, 3), abs_tol=1e-4)
    optimal = BayesOptimal(5, 10)
    assert 6.6 <= optimal.value <= 6.7  # Gittins' column: 6.6
    batch = Bandit(arms=5, pulls=10).sample(TASKS, "test", torch.Generator().manual_seed(0))
    for name in BASELINES:
        mean, ci = _mean_ci(rollout(tuned(name, 5, 10)[0], batch, 10, torch.Generator().manual_seed(1)))
        assert optimal.value >= mean - ci, name
    mean, ci = _mean_ci(rollout(optimal, batch.slice(0, 1000), 10, torch.Generator().manual_seed(2)))
    assert abs(mean - optimal.value) <= ci  # acting on it earns its value


def test_mdp_baselines_random_and_psrl():
    family = TabularMDP(episodes=10)
    batch = family.sample(1000, "test", torch.Generator().manual_seed(0))
    random_mean, random_ci = _mean_ci(run_random(batch, 10, 10, torch.Generator().manual_seed(1)))
    assert abs(random_mean - 100.1) <= random_ci + ROUNDING  # 10 episodes x 10 steps x E[mu] = 1
    psrl_mean, psrl_ci = _mean_ci(run_psrl(batch, 10, 10, torch.Generator().manual_seed(1)))
    assert psrl_mean - psrl_ci > random_mean + random_ci + 20  # posterior sampling learns the MDP within a task


def _learns_a_bandit(cls, hparams: dict, steps: int) -> None:
    """``steps`` meta-steps of a fresh policy take it from random play (5.0) to above 5.5 on 1,000 test bandits."""
    torch.manual_seed(0)
    family = Bandit(arms=5, pulls=10)
    learner = cls.for_family(family.input_shape[0], family.output_size, hparams)
    test = family.sample(1000, "test", torch.Generator().manual_seed(5))
    before = learner.total_reward(test, torch.Generator().manual_seed(1)).mean().item()
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        learner.meta_step(family.sample(hparams["meta_batch"], "train", g))
    after, ci = _mean_ci(learner.total_reward(test, torch.Generator().manual_seed(1)))
    assert abs(before - 5.0) < 0.3 and after - ci > 5.5, (before, after)


def test_rl2_learns_to_explore_and_exploit_in_a_short_run():
    from metaopt.learners.rl2 import RL2

    _learns_a_bandit(RL2, {"hidden": 32, "meta_batch": 256, "outer_lr": 3e-3}, steps=60)


def test_snail_learns_to_explore_and_exploit_in_a_short_run():
    from metaopt.learners.snail_rl import SnailRL

    _learns_a_bandit(SnailRL, {"filters": 8, "key_size": 8, "value_size": 8, "horizon": 16, "meta_batch": 128,
                               "outer_lr": 3e-3, "ppo_epochs": 2}, steps=80)


def test_the_snail_policy_reads_only_the_past_and_its_steps_equal_the_whole_history():
    from metaopt.learners.snail_rl import SnailPolicy

    torch.manual_seed(0)
    policy = SnailPolicy(observation_size=7, actions=5, filters=8, key_size=8, value_size=8, horizon=16)
    history = torch.randn(3, 12, 7)
    logits, values = policy(history)
    changed = history.clone()
    changed[:, 6:] = torch.randn(3, 6, 7)  # another future
    assert torch.allclose(policy(changed)[0][:, :6], logits[:, :6], atol=1e-6)
    state = None
    for t in range(12):
        step_logits, step_value, state = policy.step(history[:, t], state)
        assert torch.allclose(step_logits, logits[:, t], atol=1e-5) and torch.allclose(step_value, values[:, t], atol=1e-5)


@pytest.mark.parametrize("family, length", [({"name": "bandit", "arms": 5, "pulls": 10}, 10),
                                            ({"name": "tabular-mdp", "states": 5, "actions": 5, "horizon": 10,
                                              "episodes": 3}, 30)])
def test_a_snail_trial_covers_the_tasks_length_unless_the_job_says(family, length):
    from metaopt.search.config import Job
    from metaopt.search.trial import new_learner

    job = Job.model_validate({"name": "t", "family": family, "methods": ["snail"], "search_space": None,
                              "budget": {"trials": 1, "meta_iterations": 2, "eval_interval": 1}})
    built = job.family.build()
    assert new_learner(job, built, "snail", {}, torch.device("cpu")).hparams["horizon"] == length
    assert new_learner(job, built, "snail", {"horizon": 64}, torch.device("cpu")).hparams["horizon"] == 64
