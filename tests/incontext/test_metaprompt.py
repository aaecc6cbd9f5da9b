"""``metaprompt`` learns which pool examples a frozen model should see, by policy gradient, and never reads a query's
target at test."""

from __future__ import annotations

import torch
from torch import Tensor

from metaopt.incontext.frozen import FrozenModel
from metaopt.incontext.metaprompt import MetaPrompt
from metaopt.tasks.base import TaskBatch


class Averaging(FrozenModel):
    """A frozen model that predicts the mean target of its context, whatever the query."""

    def predict(self, context_x: Tensor, context_y: Tensor, query_x: Tensor) -> Tensor:
        return context_y.mean(1, keepdim=True).expand(-1, query_x.shape[1], *context_y.shape[2:])


def selector(**hparams) -> MetaPrompt:
    torch.manual_seed(0)
    resolved = MetaPrompt.resolve_hparams({"context": 1, "outer_lr": 0.01, **hparams})
    network = MetaPrompt.build_network({}, input_shape=(1,), output_size=1, hparams=resolved)
    learner = MetaPrompt(network, resolved, task_kind="regression", max_iterations=300)
    learner.frozen = Averaging()
    return learner


def tasks(n: int, generator: torch.Generator) -> TaskBatch:
    """A pool of 12 points per task; a query's target is the target of the pool point nearest to it."""
    pool_x = torch.rand(n, 12, 1, generator=generator) * 10
    pool_y = torch.randn(n, 12, 1, generator=generator)
    query_x = torch.rand(n, 4, 1, generator=generator) * 10
    nearest = torch.cdist(query_x, pool_x).argmin(-1)
    return TaskBatch(pool_x, pool_y, query_x, torch.gather(pool_y, 1, nearest[..., None]))


def test_it_learns_to_show_the_example_that_answers_the_query():
    learner = selector()
    generator = torch.Generator().manual_seed(0)
    test = tasks(200, torch.Generator().manual_seed(99))
    nearest = torch.cdist(test.query_x, test.support_x).argmin(-1)

    def hit_rate() -> float:
        with torch.no_grad():
            picked = learner.choose(learner.meta_parameters(), test, 1, greedy=True)[0][:, :, 0, 0]
        return (picked == nearest).float().mean().item()

    before = hit_rate()
    for _ in range(300):
        learner.meta_step(tasks(16, generator))
    assert before < 0.3 and hit_rate() > 0.9  # chance is 1/12
    error = ((learner.predict(test) - test.query_y) ** 2).mean().item()
    assert error < 0.2 * (test.query_y ** 2).mean().item()  # a random pick: about 2x its mean square


def test_a_query_target_is_never_read_at_test():
    learner = selector(context=3)
    batch = tasks(5, torch.Generator().manual_seed(1))
    hidden = TaskBatch(batch.support_x, batch.support_y, batch.query_x, torch.full_like(batch.query_y, float("nan")))
    assert torch.equal(learner.predict(batch), learner.predict(hidden))
    indices, _ = learner.choose(learner.meta_parameters(), batch, 1, greedy=True)
    assert all(len(set(row.tolist())) == 3 for row in indices.flatten(0, 2))  # distinct examples per context
