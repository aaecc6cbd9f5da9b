"""Meta-RL on bandits beside Duan et al. (2016, Table 1): the classic policies, the Bayes-optimal limit, and RL².

Each cell is one (policy, n, k): tuned baselines (ε and UCB1's c on training bandits), the
exact DP where tractable (n ≤ 25), and RL² meta-trained with PPO through ``fit()`` (the loop
trials use), all scored on the same held-out test bandits with a 95% CI. Cells run in
parallel processes, one line of JSON each in ``benchmarks/results/rl_table.cells.jsonl``, and
a rerun reuses finished cells. Prints the table with the published numbers and writes
``benchmarks/results/rl_table.json``.

    python benchmarks/rl_table.py [--settings 10x5 10x10 100x5 100x10] [--rl2-iterations 400] [--workers 2]
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
# Duan et al. 2016, Table 1 (../shared/reference/published.md, "Meta-RL").
PUBLISHED = {
    (10, 5): {"random": 5.0, "bayes_optimal": 6.6, "thompson": 5.7, "optimistic_thompson": 6.5, "ucb1": 6.7,
              "epsilon_greedy": 6.6, "greedy": 6.6, "rl2": 6.7},
    (10, 10): {"random": 5.0, "bayes_optimal": 6.6, "thompson": 5.5, "optimistic_thompson": 6.2, "ucb1": 6.7,
               "epsilon_greedy": 6.6, "greedy": 6.6, "rl2": 6.7},
    (100, 5): {"random": 49.9, "bayes_optimal": 78.3, "thompson": 74.7, "optimistic_thompson": 77.9, "ucb1": 78.0,
               "epsilon_greedy": 75.4, "greedy": 74.8, "rl2": 78.7},
    (100, 10): {"random": 49.9, "bayes_optimal": 82.8, "thompson": 76.7, "optimistic_thompson": 81.4, "ucb1": 82.4,
                "epsilon_greedy": 77.4, "greedy": 77.1, "rl2": 83.5},
}
POLICIES = ("random", "greedy", "epsilon_greedy", "ucb1", "thompson", "optimistic_thompson", "bayes_optimal", "rl2")
RL2 = {"hidden": 64, "outer_lr": 0.003, "entropy": 0.01, "gae_lambda": 0.3, "meta_batch": 256}


def cell(policy: str, pulls: int, arms: int, rl2_iterations: int) -> dict:
    """One policy on one setting: mean and 95% CI of the total reward over the test bandits, and seconds."""
    import torch

    from metaopt.learners.bandit_baselines import BayesOptimal, rollout, tuned
    from metaopt.learners.rl2 import RL2 as Learner
    from metaopt.search.fit import fit
    from metaopt.tasks.bandit import Bandit

    torch.set_num_threads(1)
    family = Bandit(arms=arms, pulls=pulls)
    test = family.sample(TEST_TASKS, "test", torch.Generator().manual_seed(0))
    start = time.perf_counter()
    setting = None
    if policy == "rl2":
        torch.manual_seed(0)
        learner = Learner.for_family(family.input_shape[0], family.output_size, RL2)
        fit(learner, family, iterations=rl2_iterations, generator=torch.Generator().manual_seed(0))
        rewards = learner.total_reward(test, torch.Generator().manual_seed(1))
        setting = {**RL2, "iterations": rl2_iterations, "env_steps": rl2_iterations * RL2["meta_batch"] * pulls}
    elif policy == "bayes_optimal":
        if pulls > 25:
            return {"policy": policy, "pulls": pulls, "arms": arms, "mean": None, "ci": None, "seconds": 0.0,
                    "note": "intractable here (n > 25)"}
        solved = BayesOptimal(arms, pulls)
        rewards = rollout(solved, test, pulls, torch.Generator().manual_seed(1))
        setting = {"exact_value": solved.value}
    else:
        chosen, value = tuned(policy, arms, pulls)
        rewards = rollout(chosen, test, pulls, torch.Generator().manual_seed(1))
        setting = {"tuned": value}
    return {"policy": policy, "pulls": pulls, "arms": arms, "mean": rewards.mean().item(),
            "ci": 1.96 * rewards.std().item() / math.sqrt(len(rewards)), "seconds": time.perf_counter() - start,
            "setting": setting, "rl2_iterations": rl2_iterations, "test_tasks": TEST_TASKS}


def main() -> None:
    """Run the missing cells, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=["10x5", "10x10", "100x5", "100x10"], help="PULLSxARMS")
    parser.add_argument("--rl2-iterations", type=int, default=400)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    settings = [tuple(int(v) for v in s.split("x")) for s in args.settings]
    key = lambda c: (c["policy"], c["pulls"], c["arms"])  # noqa: E731
    done = load_cells(CELLS, lambda c: c.get("rl2_iterations") == args.rl2_iterations
                      and c.get("test_tasks") == TEST_TASKS, key)
    jobs = {(p, n, k): (p, n, k, args.rl2_iterations) for n, k in settings for p in POLICIES if (p, n, k) not in done}
    print(f"{len(done)} cells reused, {len(jobs)} to run")
    done.update(run_cells(CELLS, jobs, cell, workers=args.workers,
                          describe=lambda c: f"{c['policy']} n={c['pulls']} k={c['arms']}: {c['mean']}"))
    print(f"\n{'policy':<20}" + "".join(f"{f'n={n}, k={k}':>24}" for n, k in settings))
    rows = []
    for policy in POLICIES:
        line = f"{policy:<20}"
        for n, k in settings:
            c = done[(policy, n, k)]
            published = PUBLISHED.get((n, k), {}).get(policy)
            ours = "-" if c["mean"] is None else f"{c['mean']:.2f} ± {c['ci']:.2f}"
            line += f"{ours + (f' ({published})' if published is not None else ''):>24}"
            rows.append(c)
        print(line)
    print("\n(published value in parentheses; Bayes-optimal's published column is Gittins)")
    (RESULTS / "rl_table.json").write_text(json.dumps({"cells": rows}, indent=2) + "\n")
    print(f"wrote {(RESULTS / 'rl_table.json').relative_to(RESULTS.parent.parent)}")


if __name__ == "__main__":
    main()
