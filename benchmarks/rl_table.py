"""Meta-RL beside Duan et al. (2016, Tables 1 and 2) and Mishra et al. (2018): classic policies, the Bayes-optimal
limit, RL², SNAIL and MAML.

Bandit cells are one (policy, n pulls, k arms): tuned baselines (ε and UCB1's c on training
bandits), the exact DP where tractable (n ≤ 25), RL² (PPO), SNAIL (RL²'s PPO with a SNAIL policy) and MAML (a policy-gradient inner
step after the first half of the pulls) meta-trained through ``fit()`` (the loop trials use);
MDP cells are one (policy, n episodes) on 10-state, 5-action MDPs of 10-step episodes:
random, PSRL with the true priors, RL² and MAML. Every cell is scored on the same held-out
test tasks with a 95% CI; a trained cell also records its training seconds and environment
steps per second. Cells run in parallel processes, one line of JSON each in
``benchmarks/results/rl_table.cells.jsonl``; a rerun reuses finished cells of the same
settings. Prints the tables with the published numbers and writes
``benchmarks/results/rl_table.json``. The large settings (n = 500 pulls, MDPs of n ≥ 50
episodes) run only with ``--large``.

    python benchmarks/rl_table.py [--bandits 10x5 10x10 100x5 100x10] [--mdps 10 25] [--large]
                                  [--iterations 400] [--mdp-iterations 1000] [--workers 2]
                                  [--policies snail ...] [--curve-every 100] [--json PATH] [--report]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from _cells import load_cells, run_cells

RESULTS = Path(__file__).resolve().parent / "results"
CELLS = RESULTS / "rl_table.cells.jsonl"
TEST_TASKS = 2000
# Duan et al. 2016, Tables 1 and 2 (../shared/reference/published.md, "Meta-RL"); Bayes-optimal's column is Gittins.
PUBLISHED_BANDITS = {
    (10, 5): {"random": 5.0, "bayes_optimal": 6.6, "thompson": 5.7, "optimistic_thompson": 6.5, "ucb1": 6.7,
              "epsilon_greedy": 6.6, "greedy": 6.6, "rl2": 6.7, "snail": 6.6},
    (10, 10): {"random": 5.0, "bayes_optimal": 6.6, "thompson": 5.5, "optimistic_thompson": 6.2, "ucb1": 6.7,
               "epsilon_greedy": 6.6, "greedy": 6.6, "rl2": 6.7, "snail": 6.7},
    (100, 5): {"random": 49.9, "bayes_optimal": 78.3, "thompson": 74.7, "optimistic_thompson": 77.9, "ucb1": 78.0,
               "epsilon_greedy": 75.4, "greedy": 74.8, "rl2": 78.7, "snail": 79.1},
    (100, 10): {"random": 49.9, "bayes_optimal": 82.8, "thompson": 76.7, "optimistic_thompson": 81.4, "ucb1": 82.4,
                "epsilon_greedy": 77.4, "greedy": 77.1, "rl2": 83.5, "snail": 83.5},
    (500, 5): {"random": 249.8, "bayes_optimal": 405.8, "thompson": 402.0, "optimistic_thompson": 406.7,
               "ucb1": 405.8, "epsilon_greedy": 388.2, "greedy": 380.6, "rl2": 401.6, "snail": 408.1},
    (500, 10): {"random": 249.0, "bayes_optimal": 437.8, "thompson": 429.5, "optimistic_thompson": 438.9,
                "ucb1": 437.1, "epsilon_greedy": 408.0, "greedy": 395.0, "rl2": 432.5, "snail": 432.4},
}
PUBLISHED_MDPS = {
    10: {"random": 100.1, "psrl": 138.1, "rl2": 156.2, "snail": 159.1},
    25: {"random": 250.2, "psrl": 408.8, "rl2": 445.7, "snail": 447.2},
    50: {"random": 499.7, "psrl": 904.4, "rl2": 936.1, "snail": 942.3},
    75: {"random": 749.9, "psrl": 1417.1, "rl2": 1428.8, "snail": 1447.5},
    100: {"random": 999.4, "psrl": 1939.5, "rl2": 1913.7, "snail": 1953.1},
}
BANDIT_POLICIES = ("random", "greedy", "epsilon_greedy", "ucb1", "thompson", "optimistic_thompson", "bayes_optimal",
                   "maml", "rl2", "snail")
MDP_POLICIES = ("random", "psrl", "maml", "rl2", "snail")
LEARNED = ("rl2", "maml", "snail")
TRAINED = {  # the settings of the learned policies (the jobs' enqueued first trials)
    "bandit": {"rl2": {"hidden": 64, "outer_lr": 0.003, "entropy": 0.01, "gae_lambda": 0.3, "meta_batch": 256},
               "maml": {"inner_lr": 0.5, "outer_lr": 0.0003, "meta_batch": 256},
               "snail": {"outer_lr": 0.001, "entropy": 0.01, "gae_lambda": 0.3, "meta_batch": 256}},
    "mdp": {"rl2": {"hidden": 128, "outer_lr": 0.001, "entropy": 0.01, "gae_lambda": 0.95, "gamma": 0.99,
                    "meta_batch": 128},
            "maml": {"inner_lr": 0.5, "outer_lr": 0.001, "meta_batch": 128},
            "snail": {"outer_lr": 0.001, "entropy": 0.01, "gae_lambda": 0.95, "gamma": 0.99, "meta_batch": 128}},
}
MAML_BACKBONE = {"name": "mlp", "hidden": [64, 64]}


def _family(setting: tuple):
    from metaopt.tasks.bandit import Bandit
    from metaopt.tasks.tabular_mdp import TabularMDP

    if setting[0] == "bandit":
        return Bandit(pulls=setting[1], arms=setting[2])
    return TabularMDP(episodes=setting[1])


def _settings(policy: str, kind: str, iterations: int) -> dict | None:
    """What a cell's result depends on besides the setting: the learned policies' hyperparameters and budget."""
    if policy not in LEARNED:
        return None
    return {**TRAINED[kind][policy], "iterations": iterations}


def cell(policy: str, setting: tuple, iterations: int, curve_every: int = 0) -> dict:
    """One policy on one setting: mean and 95% CI of the total reward over the test tasks, and seconds; with
    ``curve_every``, a learned policy's test score every that many meta-steps too (``curve``: meta-steps, mean, CI,
    seconds so far; printed as it goes; ``train_seconds`` then includes that scoring)."""
    import torch

    from metaopt.learners.bandit_baselines import BayesOptimal, rollout, tuned
    from metaopt.learners.checkpoint import build_learner
    from metaopt.learners.mdp_baselines import run_psrl, run_random
    from metaopt.search.fit import fit

    torch.set_num_threads(1)
    kind = setting[0]
    family = _family(setting)
    test = family.sample(TEST_TASKS, "test", torch.Generator().manual_seed(0))
    play = torch.Generator().manual_seed(1)
    out = {"policy": policy, "setting": list(setting), "settings": _settings(policy, kind, iterations),
           "test_tasks": TEST_TASKS}
    start = time.perf_counter()
    if policy in LEARNED:
        torch.manual_seed(0)
        learner = build_learner(policy, TRAINED[kind][policy], backbone=MAML_BACKBONE, task_kind="rl",
                                input_shape=family.input_shape, output_size=family.output_size)
        stream, curve = torch.Generator().manual_seed(0), []
        for done in range(0, iterations, curve_every or iterations):  # the same training, scored on the way
            upto = min(iterations, done + (curve_every or iterations))
            fit(learner, family, iterations=upto, start=done, generator=stream)
            if curve_every:
                rewards = learner.total_reward(test, torch.Generator().manual_seed(1))
                curve.append([upto, rewards.mean().item(), 1.96 * rewards.std().item() / math.sqrt(len(rewards)),
                              time.perf_counter() - start])
                print(f"  {policy} {list(setting)}: {upto} meta-steps, {curve[-1][1]:.2f} ± {curve[-1][2]:.2f} "
                      f"({curve[-1][3]:.0f} s)", flush=True)
        train_seconds = time.perf_counter() - start
        if curve:
            out["curve"] = curve
        env_steps = iterations * learner.hparams["meta_batch"] * family.steps
        out.update(train_seconds=train_seconds, env_steps=env_steps, env_steps_per_s=env_steps / train_seconds)
        rewards = learner.total_reward(test, play)
    elif policy == "bayes_optimal":
        if not BayesOptimal.tractable(family.arms, family.pulls):
            return {**out, "mean": None, "ci": None, "seconds": 0.0, "note": "intractable here (over "
                    f"{BayesOptimal.TRACTABLE:,} DP state visits)"}
        solved = BayesOptimal(family.arms, family.pulls)
        rewards = rollout(solved, test, family.pulls, play)
        out["exact_value"] = solved.value
    elif kind == "mdp":
        runner = {"random": run_random, "psrl": run_psrl}[policy]
        rewards = runner(test, family.horizon, family.episodes, play)
    else:
        chosen, value = tuned(policy, family.arms, family.pulls)
        rewards = rollout(chosen, test, family.pulls, play)
        out["tuned"] = value
    return {**out, "mean": rewards.mean().item(), "ci": 1.96 * rewards.std().item() / math.sqrt(len(rewards)),
            "seconds": time.perf_counter() - start}


def _table(title: str, settings: list[tuple], policies: tuple[str, ...], done: dict, published: dict) -> list[dict]:
    label = (lambda s: f"n={s[1]}, k={s[2]}") if settings and settings[0][0] == "bandit" else (lambda s: f"n={s[1]}")
    print(f"\n{title}\n{'policy':<20}" + "".join(f"{label(s):>24}" for s in settings))
    rows = []
    for policy in policies:
        line = f"{policy:<20}"
        for s in settings:
            c = done.get((policy, s))
            ref = published.get(s[1:] if len(s) > 2 else s[1], {}).get(policy)
            ours = "not run" if c is None else "-" if c["mean"] is None else f"{c['mean']:.2f} ± {c['ci']:.2f}"
            line += f"{ours + (f' ({ref})' if ref is not None else ''):>24}"
            rows += [c] if c else []
        print(line)
    for s in settings:
        for policy in LEARNED:
            c = done.get((policy, s))
            if c and "train_seconds" in c:
                print(f"  {policy} {label(s)}: {c['settings']['iterations']} meta-steps, {c['train_seconds']:.0f} s, "
                      f"{c['env_steps']:,} env steps ({c['env_steps_per_s']:,.0f}/s)")
    return rows


def main() -> None:
    """Run the missing cells, print the tables, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bandits", nargs="*", default=["10x5", "10x10", "100x5", "100x10"], help="PULLSxARMS")
    parser.add_argument("--mdps", nargs="*", type=int, default=[10, 25], help="episodes per MDP task")
    parser.add_argument("--large", action="store_true", help="also n = 500 pulls and MDPs of 50, 75, 100 episodes")
    parser.add_argument("--iterations", type=int, default=400, help="meta-steps of RL² and MAML on bandits")
    parser.add_argument("--mdp-iterations", type=int, default=1000, help="meta-steps of RL² and MAML on MDPs")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--policies", nargs="*", default=None, help="only these policies (default: all)")
    parser.add_argument("--curve-every", type=int, default=0,
                        help="score the learned policies every this many meta-steps too (a new cell)")
    parser.add_argument("--json", default=str(RESULTS / "rl_table.json"))
    parser.add_argument("--report", action="store_true", help="only the recorded cells: train nothing")
    args = parser.parse_args()
    bandits = [("bandit", *(int(v) for v in s.split("x"))) for s in args.bandits]
    mdps = [("mdp", n) for n in args.mdps]
    if args.large:
        bandits += [("bandit", 500, 5), ("bandit", 500, 10)]
        mdps += [("mdp", n) for n in (50, 75, 100)]
    budget = {"bandit": args.iterations, "mdp": args.mdp_iterations}
    bandit_policies, mdp_policies = ((tuple(p for p in policies if p in (args.policies or policies)))
                                     for policies in (BANDIT_POLICIES, MDP_POLICIES))
    wanted = {(p, s): (p, s, budget[s[0]], args.curve_every) for s in bandits for p in bandit_policies}
    wanted.update({(p, s): (p, s, budget[s[0]], args.curve_every) for s in mdps for p in mdp_policies})
    key = lambda c: (c["policy"], tuple(c["setting"]))  # noqa: E731
    done = load_cells(CELLS, lambda c: "setting" in c and c.get("test_tasks") == TEST_TASKS
                      and key(c) in wanted and c.get("settings") == _settings(c["policy"], c["setting"][0],
                                                                              wanted[key(c)][2])
                      and bool(c.get("curve")) >= bool(args.curve_every), key)
    jobs = {k: v for k, v in wanted.items() if k not in done and not args.report}
    print(f"{len(done)} cells reused, {len(jobs)} to run")
    done.update(run_cells(CELLS, jobs, cell, workers=args.workers,
                          describe=lambda c: f"{c['policy']} {c['setting']}: {c['mean']}"))
    rows = _table("Bernoulli bandits (total reward over n pulls)", bandits, bandit_policies, done, PUBLISHED_BANDITS)
    rows += _table("Tabular MDPs, 10 states, 5 actions, 10-step episodes (total reward over n episodes)", mdps,
                   mdp_policies, done, PUBLISHED_MDPS)
    print("\n(published value in parentheses; the Bayes-optimal row's published column is Gittins)")
    Path(args.json).write_text(json.dumps({"cells": rows}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
