"""ProtoNet meta-training throughput: metaopt against easyfsl on the same episodes, in one process.

Workload: glyphs 5-way 1-shot, 5 queries per class, Conv-4 (metaopt's module for
both, from the same initialisation), Adam 0.001, one episode per step, one CPU
thread. easyfsl's ``PrototypicalNetworks`` scores queries by plain Euclidean
distance and ours by squared Euclidean (Snell et al.), so the losses differ
slightly; the work per episode is the same (two Conv-4 passes, one backward).
A last row runs ours with 4 episodes per step (a loop on the CPU, vmap on a GPU).

easyfsl needs torchvision, and PyPI's torchvision does not import beside the
CPU torch 2.13 that metaopt pins, so this runs in its own environment
(torch 2.14.1 + torchvision 0.29.1): ``make bench-easyfsl``.

    python benchmarks/fewshot_throughput.py [--episodes 300] [--json benchmarks/results/fewshot_throughput.json]
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

from metaopt.learners import LEARNERS
from metaopt.models import build_backbone
from metaopt.tasks import FAMILIES, TaskBatch

Step = Callable[[TaskBatch], float]


def ours(meta_batch: int) -> Callable[[torch.nn.Module], Step]:
    def build(backbone: torch.nn.Module) -> Step:
        learner = LEARNERS["protonet"](backbone, {"outer_lr": 0.001, "meta_batch": meta_batch},
                                       task_kind="classification", n_way=5)
        return lambda batch: float(learner.meta_step(batch)["loss"])

    return build


def easyfsl_protonet(backbone: torch.nn.Module) -> Step:
    from easyfsl.methods import PrototypicalNetworks

    model = PrototypicalNetworks(backbone)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)

    def step(batch: TaskBatch) -> float:
        optimizer.zero_grad(set_to_none=True)
        model.process_support_set(batch.support_x[0], batch.support_y[0])
        loss = F.cross_entropy(model(batch.query_x[0]), batch.query_y[0])
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def episodes(n: int, per_step: int) -> list[TaskBatch]:
    """``n`` training episodes of glyphs 5w1s, ``per_step`` to a batch, the same stream for every row."""
    family = FAMILIES["glyphs"](ways=5, shots=1, queries=5)
    generator = torch.Generator().manual_seed(0)
    return [family.sample(per_step, "train", generator) for _ in range(n // per_step)]


def run(build: Callable[[torch.nn.Module], Step], init: torch.nn.Module, batches: list[TaskBatch],
        windows: int = 3) -> dict:
    """Warm up on one batch, then time the rest in ``windows`` windows; episodes/s is the median window."""
    step = build(copy.deepcopy(init))
    step(batches[0])
    timed = batches[1:]
    per_window = max(1, len(timed) // windows)
    rates, losses = [], []
    for w in range(windows):
        chunk = timed[w * per_window:(w + 1) * per_window]
        start = time.perf_counter()
        losses += [step(batch) for batch in chunk]
        rates.append(sum(b.num_tasks for b in chunk) / (time.perf_counter() - start))
    return {"episodes_per_s": statistics.median(rates), "mean_loss_last_50": statistics.fmean(losses[-50:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=300, help="timed training episodes per row")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "fewshot_throughput.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    init = build_backbone({"name": "conv4"}, input_shape=(1, 28, 28), out_features=None)
    single, batched = episodes(args.episodes + 1, 1), episodes(args.episodes + 4, 4)

    rows: dict[str, dict] = {"metaopt protonet (1 episode/step)": run(ours(1), init, single)}
    try:
        rows["easyfsl PrototypicalNetworks (1 episode/step)"] = run(easyfsl_protonet, init, single)
    except (ImportError, RuntimeError) as error:  # torchvision beside the wrong torch raises RuntimeError
        print(f"easyfsl unavailable ({type(error).__name__}: {str(error).splitlines()[0]}); run `make bench-easyfsl`")
    rows["metaopt protonet (4 episodes/step)"] = run(ours(4), init, batched)

    base = rows.get("easyfsl PrototypicalNetworks (1 episode/step)")
    print(f"\nProtoNet Conv-4, glyphs 5-way 1-shot, 5 queries, {args.episodes} episodes, {args.threads} thread(s), "
          f"torch {torch.__version__}")
    print(f"{'implementation':<48}{'episodes/s':>12}{'vs easyfsl':>12}{'loss, last 50':>16}")
    for name, row in rows.items():
        ratio = f"{row['episodes_per_s'] / base['episodes_per_s']:.2f}x" if base else "-"
        print(f"{name:<48}{row['episodes_per_s']:>12.1f}{ratio:>12}{row['mean_loss_last_50']:>16.4f}")
    report = {"benchmark": "fewshot_throughput", "episodes": args.episodes, "threads": args.threads,
              "torch": torch.__version__, "machine": platform.processor() or platform.machine(), "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
