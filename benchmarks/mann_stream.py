"""MANN's label stream (Santoro et al. 2016, figure 2): accuracy by the instance of a class in a 50-step stream.

``mann`` is meta-trained on glyphs episodes of 5 classes x 10 examples (each episode's 50
support examples and 5 queries streamed in a random order, every label shown one step
late; Conv-4 embedding, as every image learner here, or ``--backbone mlp``: the pixels through one linear layer,
as the paper fed its LSTM the flattened pixels — about 8x faster a step). Scored on 500 fixed held-out
episodes: their 50 support examples in a random order (a seeded shuffle per episode),
the prediction at each step against the label it is about to be shown; accuracy at the
1st, 2nd, ... 10th instance of a class, mean and 95% CI over the episodes. Chance at the
first instance is 20%: a class never seen cannot be named. Published (a reproduction on
Omniglot, ``../shared/reference/published.md``): 35.8, 89.4 (2nd), 93.7, 95.3, ..., 96.7 (10th).

    python benchmarks/mann_stream.py [--iterations 3000] [--meta-batch 8] [--outer-lr 0.001] [--backbone conv4|mlp] [--filters 64 | --filters 256 128] [--progress 500] [--set KEY=VALUE ...]
        [--json benchmarks/results/mann_stream.json]

Writes ``--json`` (default ``benchmarks/results/mann_stream.json``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
WAYS, SHOTS, TEST_EPISODES, PROGRESS_EPISODES = 5, 10, 500, 100
PUBLISHED = {1: 35.8, 2: 89.4, 3: 93.7, 4: 95.3, 10: 96.7}


def by_instance(predictions: torch.Tensor, labels: torch.Tensor) -> dict[int, tuple[float, float]]:
    """Accuracy % (mean, 95% CI over episodes) at each instance of a class: ``predictions [tasks, T, ways]``."""
    seen = torch.zeros(labels.shape[0], WAYS, dtype=torch.long)
    instance = torch.empty_like(labels)
    for t in range(labels.shape[1]):
        label = labels[:, t]
        seen[torch.arange(len(label)), label] += 1
        instance[:, t] = seen[torch.arange(len(label)), label]
    right = (predictions.argmax(-1) == labels).float()
    out = {}
    for i in range(1, SHOTS + 1):
        mask = (instance == i).float()
        per_episode = (right * mask).sum(1) / mask.sum(1)
        out[i] = (100 * float(per_episode.mean()), 100 * 1.96 * float(per_episode.std()) / len(per_episode) ** 0.5)
    return out


def stream_scores(learner: torch.nn.Module, family: object, episodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every step's prediction and label on the first ``episodes`` fixed test episodes, each support set in a seeded
    random order."""
    from metaopt.tasks.base import TaskBatch

    shuffle = torch.Generator().manual_seed(1)
    predictions, labels = [], []
    for batch in family.fixed_tasks(episodes, "test", seed=1):
        order = torch.rand(batch.support_y.shape, generator=shuffle).argsort(1)
        x = batch.support_x.gather(1, order.view(*order.shape, 1, 1, 1).expand_as(batch.support_x))
        y = batch.support_y.gather(1, order)
        predictions.append(learner.stream_predictions(TaskBatch(x, y, batch.query_x, batch.query_y)))
        labels.append(y)
    return torch.cat(predictions), torch.cat(labels)


def main() -> None:
    """Train MANN on 5-class streams, print and write the accuracy by instance."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--meta-batch", type=int, default=8)
    parser.add_argument("--outer-lr", type=float, default=0.001)
    parser.add_argument("--backbone", choices=["conv4", "mlp"], default="conv4",
                        help="the embedding: Conv-4, or the flattened pixels through one linear layer (the paper's input)")
    parser.add_argument("--filters", type=int, nargs="+", default=[64],
                        help="Conv-4 filters, or the mlp's layer widths (one: the paper's one layer)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", type=int, default=500, help="print the accuracy so far every this many steps")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="more hyperparameters (e.g. outer_schedule=cosine)")
    parser.add_argument("--json", default=str(RESULTS / "mann_stream.json"))
    args = parser.parse_args()
    from fewshot_table import parse_overrides

    torch.set_num_threads(1)
    from metaopt.learners.checkpoint import build_learner
    from metaopt.search.fit import fit
    from metaopt.tasks.glyphs import Glyphs

    family = Glyphs(ways=WAYS, shots=SHOTS, queries=1)
    torch.manual_seed(args.seed)
    hparams = {"meta_batch": args.meta_batch, "outer_lr": args.outer_lr, **parse_overrides(args.set)}
    backbone = ({"name": "conv4", "hidden": args.filters[0]} if args.backbone == "conv4"
                else {"name": "mlp", "hidden": args.filters})
    learner = build_learner("mann", hparams, backbone=backbone, task_kind="classification",
                            input_shape=family.input_shape, output_size=WAYS, n_way=WAYS,
                            max_iterations=args.iterations)
    start, done, train_s = time.perf_counter(), 0, 0.0
    generator = torch.Generator().manual_seed(args.seed)
    while done < args.iterations:  # in chunks of --progress meta-steps, each followed by a line of progress
        done = min(args.iterations, done + (args.progress or args.iterations))
        fit(learner, family, iterations=done, start=done - (args.progress or args.iterations), generator=generator)
        train_s = time.perf_counter() - start
        if done < args.iterations:
            early = by_instance(*stream_scores(learner, family, PROGRESS_EPISODES))
            print(f"  {done} meta-steps ({train_s:.0f} s): accuracy at instance 1, 2, 10 on {PROGRESS_EPISODES} test "
                  f"episodes {early[1][0]:.1f}, {early[2][0]:.1f}, {early[10][0]:.1f}", flush=True)
    accuracy = by_instance(*stream_scores(learner, family, TEST_EPISODES))
    embed = (f"Conv-4 of {args.filters[0]} filters" if args.backbone == "conv4"
             else f"pixels through an MLP of {'-'.join(map(str, args.filters))}")
    print(f"mann, 5-class label stream, {embed}, {args.iterations} meta-steps x "
          f"{args.meta_batch} episodes at {args.outer_lr} "
          f"({train_s:.0f} s, one thread), {TEST_EPISODES} test episodes")
    print("| instance | " + " | ".join(str(i) for i in accuracy) + " |")
    print("|---|" + "---|" * len(accuracy))
    print("| accuracy % | " + " | ".join(f"{m:.1f} ± {ci:.1f}" for m, ci in accuracy.values()) + " |")
    print("| published | " + " | ".join(str(PUBLISHED.get(i, "-")) for i in accuracy) + " |")
    out = {"iterations": args.iterations, "meta_batch": args.meta_batch, "outer_lr": args.outer_lr, "seed": args.seed,
           "backbone": backbone,
           "hparams": learner.hparams, "train_s": train_s, "test_episodes": TEST_EPISODES,
           "accuracy_by_instance": {str(i): list(v) for i, v in accuracy.items()}, "published": PUBLISHED}
    Path(args.json).parent.mkdir(exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
