"""Meta-training throughput: metaopt's vmapped MAML against higher and torchopt, same workload, one process.

Workload (Finn et al. 2017 sinusoid): second-order MAML, 10-shot, meta-batch 25,
one inner SGD step (lr 0.01), MLP 1-40-40-1 ReLU, Adam 0.001, one CPU thread.
Every implementation starts from the same initialisation and consumes the same
task stream; their meta-gradients on the first batch are compared to ours.

    python benchmarks/throughput.py [--windows 5] [--window 100] [--json benchmarks/results/throughput.json]
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

from metaopt.learners import FOMAML, MAML
from metaopt.models import MLP
from metaopt.tasks import Sine, TaskBatch

INNER_LR, OUTER_LR, META_BATCH, SHOTS = 0.01, 0.001, 25, 10

Step = Callable[[TaskBatch], None]


def ours(model: torch.nn.Module, first_order: bool = False) -> tuple[Step, Callable[[], list[torch.Tensor]]]:
    cls = FOMAML if first_order else MAML
    learner = cls(model, {"inner_lr": INNER_LR, "outer_lr": OUTER_LR, "inner_steps": 1}, task_kind="regression")
    return learner.meta_step, lambda: [p.grad for p in model.parameters()]


def higher_maml(model: torch.nn.Module) -> tuple[Step, Callable[[], list[torch.Tensor]]]:
    import higher

    outer = torch.optim.Adam(model.parameters(), lr=OUTER_LR)
    inner = torch.optim.SGD(model.parameters(), lr=INNER_LR)

    def step(batch: TaskBatch) -> None:
        outer.zero_grad()
        for t in range(batch.num_tasks):  # higher has no batched form: one task at a time
            with higher.innerloop_ctx(model, inner, copy_initial_weights=False) as (fmodel, diffopt):
                diffopt.step(F.mse_loss(fmodel(batch.support_x[t]), batch.support_y[t]))
                (F.mse_loss(fmodel(batch.query_x[t]), batch.query_y[t]) / batch.num_tasks).backward()
        outer.step()

    return step, lambda: [p.grad for p in model.parameters()]


def torchopt_maml(model: torch.nn.Module) -> tuple[Step, Callable[[], list[torch.Tensor]]]:
    import torchopt

    outer = torch.optim.Adam(model.parameters(), lr=OUTER_LR)
    inner = torchopt.MetaSGD(model, lr=INNER_LR)

    def step(batch: TaskBatch) -> None:
        outer.zero_grad()
        state = torchopt.extract_state_dict(model)
        for t in range(batch.num_tasks):  # torchopt's MAML example: a loop over tasks
            inner.step(F.mse_loss(model(batch.support_x[t]), batch.support_y[t]))
            (F.mse_loss(model(batch.query_x[t]), batch.query_y[t]) / batch.num_tasks).backward()
            torchopt.recover_state_dict(model, state)
        outer.step()

    return step, lambda: [p.grad for p in model.parameters()]


IMPLEMENTATIONS: dict[str, Callable[[torch.nn.Module], tuple[Step, Callable[[], list[torch.Tensor]]]]] = {
    "metaopt (vmap, 2nd order)": ours,
    "higher 0.2.1 (per-task loop)": higher_maml,
    "torchopt (per-task loop)": torchopt_maml,
    "metaopt fomaml (vmap, 1st order)": lambda m: ours(m, first_order=True),
}


def measure(name: str, init: torch.nn.Module, batches: list[TaskBatch], windows: int, window: int) -> dict:
    model = copy.deepcopy(init)
    step, grads = IMPLEMENTATIONS[name](model)
    step(batches[0])
    first_grads = [g.detach().clone() for g in grads()]
    for batch in batches[1:6]:  # warm-up
        step(batch)
    rates = []
    for w in range(windows):
        start = time.perf_counter()
        for i in range(window):
            step(batches[6 + (w * window + i) % (len(batches) - 6)])
        rates.append(window / (time.perf_counter() - start))
    return {"it_per_s": statistics.median(rates), "windows": rates, "first_grads": first_grads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=5, help="timed windows per implementation (median reported)")
    parser.add_argument("--window", type=int, default=100, help="meta-iterations per window")
    parser.add_argument("--peer-window", type=int, default=40, help="meta-iterations per window for the slow peers")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "throughput.json"))
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(0)
    init = MLP(in_features=1, out_features=1, hidden=(40, 40))
    generator = torch.Generator().manual_seed(0)
    family = Sine(shots=SHOTS, queries=SHOTS)
    batches = [family.sample(META_BATCH, "train", generator) for _ in range(6 + args.windows * args.window)]

    results = {}
    for name in IMPLEMENTATIONS:
        window = args.window if name.startswith("metaopt") else args.peer_window
        try:
            results[name] = measure(name, init, batches, args.windows, window)
        except ImportError as exc:
            print(f"skipped {name}: {exc} (pip install -e '.[bench]')")
    reference = results["metaopt (vmap, 2nd order)"]
    base = reference["it_per_s"]
    rows = []
    print(f"\nsecond-order MAML, sine {SHOTS}-shot, meta-batch {META_BATCH}, 1 inner step, MLP 1-40-40-1, 1 thread")
    print(f"{'implementation':<34} {'it/s':>8} {'ours / this':>12} {'max |grad diff| vs ours':>24}")
    for name, r in results.items():
        diff = max((a - b).abs().max().item() for a, b in zip(r["first_grads"], reference["first_grads"]))
        ratio = base / r["it_per_s"]
        rows.append({"implementation": name, "it_per_s": r["it_per_s"], "ours_over_this": ratio,
                     "max_grad_diff_vs_ours": diff, "window_rates": r["windows"]})
        shown = "-" if "fomaml" in name else f"{diff:.1e}"
        print(f"{name:<34} {r['it_per_s']:>8.1f} {ratio:>11.2f}x {shown:>24}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "throughput", "workload": {"family": "sine", "shots": SHOTS, "meta_batch": META_BATCH,
        "inner_steps": 1, "inner_lr": INNER_LR, "outer_lr": OUTER_LR, "backbone": "MLP 1-40-40-1", "threads": 1},
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(), "rows": rows,
    }, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
