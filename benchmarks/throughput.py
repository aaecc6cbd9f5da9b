"""Meta-training throughput: metaopt against higher and torchopt on the same workload, in one process.

Main table (Finn et al. 2017 sinusoid workload): second-order MAML, 10-shot, meta-batch
25, one inner SGD step (lr 0.01), MLP 1-40-40-1 ReLU, Adam 0.001, one CPU thread.
Every implementation starts from the same initialisation, runs the same number of
meta-iterations on the same task stream, and is checked against ours: the
meta-gradient on the first batch and the loss after the last iteration.
Then every metaopt method, eager and compiled, and the scaling of MAML with the
meta-batch size and the number of inner steps, always beside higher and torchopt.

    python benchmarks/throughput.py [--iterations 300] [--quick] [--json benchmarks/results/throughput.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from metaopt.learners import LEARNERS, GradientLearner, HyperGrad
from metaopt.models import MLP
from metaopt.tasks import Sine, TaskBatch

INNER_LR, OUTER_LR = 0.01, 0.001
Step = Callable[[TaskBatch], torch.Tensor]


def ours(method: str, compile: bool, steps: int = 1) -> Callable[[torch.nn.Module], Step]:
    def build(model: torch.nn.Module) -> Step:
        torch._dynamo.reset()
        hparams = {"inner_lr": INNER_LR, "outer_lr": OUTER_LR, "inner_steps": steps}
        if method == "mamlpp":  # the multi-step loss and LSLR on, second order throughout
            hparams["first_order_until"] = 0.0
        if method == "reptile":
            hparams = {"inner_steps": max(steps, 5)}
        learner = LEARNERS[method](model, hparams, task_kind="regression", max_iterations=100_000, compile=compile)
        return lambda batch: learner.meta_step(batch)["loss"]

    return build


def higher_maml(steps: int = 1) -> Callable[[torch.nn.Module], Step]:
    def build(model: torch.nn.Module) -> Step:
        import higher

        outer = torch.optim.Adam(model.parameters(), lr=OUTER_LR)
        inner = torch.optim.SGD(model.parameters(), lr=INNER_LR)

        def step(batch: TaskBatch) -> torch.Tensor:
            outer.zero_grad()
            total = 0.0
            for t in range(batch.num_tasks):  # higher has no batched form: one task at a time
                # copy_initial_weights=False: higher's default (True) gives a zero MAML meta-gradient.
                with higher.innerloop_ctx(model, inner, copy_initial_weights=False) as (fmodel, diffopt):
                    for _ in range(steps):
                        diffopt.step(F.mse_loss(fmodel(batch.support_x[t]), batch.support_y[t]))
                    loss = F.mse_loss(fmodel(batch.query_x[t]), batch.query_y[t]) / batch.num_tasks
                    loss.backward()
                    total += loss.detach()
            outer.step()
            return total

        return step

    return build


def torchopt_maml(steps: int = 1) -> Callable[[torch.nn.Module], Step]:
    def build(model: torch.nn.Module) -> Step:
        import torchopt

        outer = torch.optim.Adam(model.parameters(), lr=OUTER_LR)
        inner = torchopt.MetaSGD(model, lr=INNER_LR)

        def step(batch: TaskBatch) -> torch.Tensor:
            outer.zero_grad()
            state = torchopt.extract_state_dict(model)
            total = 0.0
            for t in range(batch.num_tasks):  # torchopt's MAML example: a loop over tasks
                for _ in range(steps):
                    inner.step(F.mse_loss(model(batch.support_x[t]), batch.support_y[t]))
                loss = F.mse_loss(model(batch.query_x[t]), batch.query_y[t]) / batch.num_tasks
                loss.backward()
                total += loss.detach()
                torchopt.recover_state_dict(model, state)
            outer.step()
            return total

        return step

    return build


def run(build: Callable[[torch.nn.Module], Step], init: torch.nn.Module, batches: list[TaskBatch],
        iterations: int, windows: int = 3) -> dict:
    """Warm up (and compile) on the first batch, then time ``iterations`` steps in ``windows`` windows."""
    model = copy.deepcopy(init)
    step = build(model)
    start = time.perf_counter()
    step(batches[0])
    first_step = time.perf_counter() - start
    first_grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
    per_window = max(1, iterations // windows)
    rates, loss = [], torch.tensor(float("nan"))
    for w in range(windows):
        start = time.perf_counter()
        for i in range(per_window):
            loss = step(batches[1 + (w * per_window + i) % (len(batches) - 1)])
        rates.append(per_window / (time.perf_counter() - start))
    return {"it_per_s": statistics.median(rates), "first_step_s": first_step, "final_loss": float(loss),
            "first_grads": first_grads}


def stream(meta_batch: int, n: int, shots: int = 10) -> list[TaskBatch]:
    generator = torch.Generator().manual_seed(0)
    family = Sine(shots=shots, queries=shots)
    return [family.sample(meta_batch, "train", generator) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=300, help="timed meta-iterations per implementation")
    parser.add_argument("--quick", action="store_true", help="main table only")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "throughput.json"))
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(0)
    init = MLP(in_features=1, out_features=1, hidden=(40, 40))
    report: dict = {"benchmark": "throughput", "torch": torch.__version__,
                    "machine": platform.processor() or platform.machine(), "threads": 1}

    # 1. The main table: second-order MAML, the same iterations on the same stream.
    batches = stream(25, args.iterations + 1)
    main_impls = {
        "metaopt maml, compiled": ours("maml", True),
        "metaopt maml, eager (vmap)": ours("maml", False),
        "higher 0.2.1 (per-task loop)": higher_maml(),
        "torchopt 0.7.3 (per-task loop)": torchopt_maml(),
    }
    results = {name: run(build, init, batches, args.iterations) for name, build in main_impls.items()}
    ref = results["metaopt maml, eager (vmap)"]
    peers = {"higher": results["higher 0.2.1 (per-task loop)"]["it_per_s"],
             "torchopt": results["torchopt 0.7.3 (per-task loop)"]["it_per_s"]}
    print(f"\n1. second-order MAML, sine 10-shot, meta-batch 25, 1 inner step, MLP 1-40-40-1, 1 thread, "
          f"{args.iterations} iterations on one task stream")
    print(f"{'implementation':<32} {'it/s':>8} {'x higher':>9} {'x torchopt':>11} {'first step s':>13} "
          f"{'loss after':>11} {'|grad diff|':>12}")
    rows = []
    for name, r in results.items():
        diff = max((a - b).abs().max().item() for a, b in zip(r["first_grads"], ref["first_grads"]))
        row = {"implementation": name, "it_per_s": r["it_per_s"], "x_higher": r["it_per_s"] / peers["higher"],
               "x_torchopt": r["it_per_s"] / peers["torchopt"], "first_step_s": r["first_step_s"],
               "final_loss": r["final_loss"], "max_grad_diff_vs_eager": diff}
        rows.append(row)
        print(f"{name:<32} {r['it_per_s']:>8.1f} {row['x_higher']:>8.1f}x {row['x_torchopt']:>10.1f}x "
              f"{r['first_step_s']:>13.2f} {r['final_loss']:>11.5f} {diff:>12.1e}")
    report["main"] = rows
    if args.quick:
        _write(report, args.json)
        return

    # 2. Every metaopt method on the same workload, eager and compiled.
    print("\n2. every method, sine 10-shot, meta-batch 25 (MAML++: 5 steps with MSL; Reptile: 5 steps), 1 thread")
    print(f"{'method':<15} {'eager it/s':>11} {'compiled it/s':>14} {'compile s':>10} {'x higher':>9} {'x torchopt':>11}")
    methods = []
    for method in [m for m in LEARNERS if issubclass(LEARNERS[m], (GradientLearner, HyperGrad))]:  # the functional core's
        steps = 5 if method == "mamlpp" else 1
        eager = run(ours(method, False, steps), init, batches, args.iterations // 2)
        compiled = run(ours(method, True, steps), init, batches, args.iterations)
        row = {"method": method, "inner_steps": steps if method != "reptile" else 5, "eager_it_per_s": eager["it_per_s"],
               "compiled_it_per_s": compiled["it_per_s"], "compile_s": compiled["first_step_s"],
               "x_higher": compiled["it_per_s"] / peers["higher"], "x_torchopt": compiled["it_per_s"] / peers["torchopt"]}
        methods.append(row)
        print(f"{method:<15} {row['eager_it_per_s']:>11.1f} {row['compiled_it_per_s']:>14.1f} {row['compile_s']:>10.1f} "
              f"{row['x_higher']:>8.1f}x {row['x_torchopt']:>10.1f}x")
    report["methods"] = methods

    # 3. Scaling of second-order MAML with the meta-batch and the inner steps.
    print("\n3. second-order MAML scaling (it/s), 1 thread")
    print(f"{'meta-batch':>10} {'steps':>6} {'compiled':>9} {'eager':>8} {'higher':>8} {'torchopt':>9} "
          f"{'x higher':>9} {'x torchopt':>11}")
    scaling = []
    for meta_batch, steps in [(1, 1), (5, 1), (25, 1), (100, 1), (25, 5), (25, 10)]:
        n = max(10, min(args.iterations, 3000 // (meta_batch * steps)))
        cells = stream(meta_batch, n + 1)
        peer_n = max(5, n // 10)
        r = {"compiled": run(ours("maml", True, steps), init, cells, n),
             "eager": run(ours("maml", False, steps), init, cells, n),
             "higher": run(higher_maml(steps), init, cells, peer_n),
             "torchopt": run(torchopt_maml(steps), init, cells, peer_n)}
        row = {"meta_batch": meta_batch, "inner_steps": steps, **{k: v["it_per_s"] for k, v in r.items()},
               "compile_s": r["compiled"]["first_step_s"]}
        scaling.append(row)
        print(f"{meta_batch:>10} {steps:>6} {row['compiled']:>9.1f} {row['eager']:>8.1f} {row['higher']:>8.1f} "
              f"{row['torchopt']:>9.1f} {row['compiled'] / row['higher']:>8.1f}x {row['compiled'] / row['torchopt']:>10.1f}x")
    report["scaling"] = scaling
    _write(report, args.json)


def _write(report: dict, path: str) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
