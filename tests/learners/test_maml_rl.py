"""MAML on RL tasks: a policy-gradient inner step on the task's first episodes, through the functional core."""

from __future__ import annotations

import math

import torch

from metaopt.learners.checkpoint import build_learner, load_checkpoint, make_checkpoint
from metaopt.learners.maml_rl import PolicyGradientFOMAML, PolicyGradientMAML, advantages, explore_steps
from metaopt.learners.maml import MAML
from metaopt.tasks.bandit import Bandit
from metaopt.tasks.rl import taken_in
from metaopt.tasks.tabular_mdp import TabularMDP

BACKBONE = {"name": "mlp", "hidden": [32, 32]}


def _learner(method: str, family, **hparams):
    return build_learner(method, {"meta_batch": 128, "outer_lr": 0.003, "inner_lr": 0.5, **hparams}, backbone=BACKBONE,
                         task_kind="rl", input_shape=family.input_shape, output_size=family.output_size)


def test_maml_and_fomaml_on_rl_tasks_are_the_policy_gradient_variants():
    assert MAML.for_task_kind("classification") is MAML
    torch.manual_seed(0)
    maml, fomaml = _learner("maml", Bandit()), _learner("fomaml", Bandit())
    assert type(maml) is PolicyGradientMAML and not maml.first_order and maml.name == "maml"
    assert type(fomaml) is PolicyGradientFOMAML and fomaml.first_order and fomaml.name == "fomaml"


def test_the_inner_step_comes_after_whole_episodes_and_leaves_some_to_play_adapted():
    assert explore_steps(10, 1) == 5 and explore_steps(100, 10) == 50 and explore_steps(30, 10) == 20
    assert explore_steps(20, 10) == 10 and explore_steps(10, 10) == 0  # one episode: nothing to adapt for


def test_advantages_are_reward_to_go_in_the_episode_less_the_mean_at_that_step():
    rewards = torch.tensor([[1.0, 0.0, 3.0, 2.0]])  # two episodes of two steps
    centred = torch.tensor([[1.0 - 3.0, 0.0 - 1.0, 5.0 - 3.0, 2.0 - 1.0]])  # to go: 1, 0 | 5, 2
    assert torch.allclose(advantages(rewards, 2), centred / centred.std(unbiased=False), atol=1e-5)


def test_what_was_played_reads_back_from_the_observations():
    batch = TabularMDP(states=4, actions=3, horizon=2, episodes=2).sample(5, "train", torch.Generator().manual_seed(0))
    env = batch.environment(torch.Generator().manual_seed(1))
    seen, played, paid = [env.reset()], [], []
    for _ in range(env.steps):
        action = torch.randint(0, 3, (5,))
        obs, reward = env.step(action)
        seen.append(obs)
        played.append(action)
        paid.append(reward)
    actions, rewards = taken_in(torch.stack(seen, 1), 3)
    assert torch.equal(actions, torch.stack(played, 1)) and torch.allclose(rewards, torch.stack(paid, 1))


def test_second_order_meta_gradient_differs_from_first_order_and_both_learn():
    family = Bandit(arms=5, pulls=10)
    test = family.sample(1000, "test", torch.Generator().manual_seed(5))
    after = {}
    for method in ("maml", "fomaml"):
        torch.manual_seed(0)
        learner = _learner(method, family)
        start = {k: v.detach().clone() for k, v in learner.params.items()}
        g = torch.Generator().manual_seed(0)
        learner.generator.manual_seed(0)
        learner.meta_step(family.sample(128, "train", g))
        after[method] = {k: v.detach().clone() for k, v in learner.params.items()}
        for _ in range(59):
            learner.meta_step(family.sample(128, "train", g))
        rewards = learner.total_reward(test, torch.Generator().manual_seed(1))
        mean, ci = rewards.mean().item(), 1.96 * rewards.std().item() / math.sqrt(len(rewards))
        assert mean - ci > 5.3, (method, mean)  # random play: 5.0
    moved = [not torch.allclose(after["maml"][k], after["fomaml"][k]) for k in start]
    assert any(moved)


def test_a_saved_policy_acts_on_a_history_after_loading(tmp_path):
    family = Bandit(arms=3, pulls=6)
    torch.manual_seed(0)
    learner = _learner("maml", family)
    learner.meta_step(family.sample(16, "train", torch.Generator().manual_seed(0)))
    path = tmp_path / "ckpt.pt"
    torch.save(make_checkpoint(learner, backbone=BACKBONE, input_shape=family.input_shape,
                               output_size=family.output_size), path)
    loaded = load_checkpoint(path)
    assert type(loaded) is PolicyGradientMAML and loaded.task_shape == (6, 1)
    history = torch.zeros(2, 4, 5)
    history[:, 1:, 0] = 1  # arm 0 pulled three times, paid each time
    history[:, 1:, 3] = 1
    actions = loaded.act(history, torch.Generator().manual_seed(0))  # past the first 3 pulls: adapts first
    assert actions.shape == (2,) and actions.max() < 3
    greedy = build_learner("greedy", {}, backbone=BACKBONE, task_kind="rl", input_shape=family.input_shape,
                           output_size=family.output_size)
    assert greedy.act(history, torch.Generator()).tolist() == [0, 0]
