"""The selection learners: each baseline's choice, a query's target never read, a saved selector that loads and
selects with its frozen model inside, and the job's ``frozen`` block."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from metaopt.incontext.frozen import FrozenModel, TrainedModel
from metaopt.incontext.selection import diverse_context, nearest_context, random_context
from metaopt.learners import LEARNERS
from metaopt.learners.checkpoint import build_learner, load_checkpoint, make_checkpoint, save_checkpoint
from metaopt.tasks import Sine
from metaopt.tasks.base import TaskBatch

SELECTORS = ["metaprompt", "random_context", "nearest_context", "diverse_context", "best_of_contexts", "whole_pool"]


class Averaging(FrozenModel):
    """Predicts the mean target of its context, whatever the query."""

    def predict(self, context_x: Tensor, context_y: Tensor, query_x: Tensor) -> Tensor:
        return context_y.mean(1, keepdim=True).expand(-1, query_x.shape[1], *context_y.shape[2:])


def selector(method: str, frozen: FrozenModel | None = None, **hparams) -> object:
    torch.manual_seed(0)
    learner = build_learner(method, {"context": 3, **hparams}, backbone={}, task_kind="regression", input_shape=(1,),
                            output_size=1)
    learner.frozen = frozen or Averaging()
    return learner


def tasks(n: int = 6, pool: int = 16, seed: int = 0) -> TaskBatch:
    return Sine(shots=pool, queries=5).sample(n, "test", torch.Generator().manual_seed(seed))


def test_the_baselines_choose_as_their_selection_functions_say():
    batch = tasks()
    k = 3
    learner = selector("random_context")
    assert torch.equal(learner.select(batch), random_context(batch.support_x, batch.query_x, k,
                                                             torch.Generator().manual_seed(learner.seed)))
    assert torch.equal(selector("nearest_context").select(batch), nearest_context(batch.support_x, batch.query_x, k))
    assert torch.equal(selector("diverse_context").select(batch), diverse_context(batch.support_x, batch.query_x, k))
    whole = selector("whole_pool")
    assert torch.allclose(whole.predict(batch), Averaging().predict(batch.support_x, batch.support_y, batch.query_x))
    for method in SELECTORS[:-1]:  # each query's context: k distinct examples of the pool
        chosen = selector(method).select(batch)
        assert chosen.shape == (6, 5, k) and int(chosen.max()) < 16
        assert all(len(set(row.tolist())) == k for row in chosen.flatten(0, 1))


def test_best_of_contexts_keeps_each_tasks_best_draw_on_its_dev_examples():
    batch = tasks(n=4, pool=16)
    learner = selector("best_of_contexts", tries=5, dev=6)
    chosen = learner.select(batch)[:, 0]  # one context for all of a task's queries
    assert int(chosen.max()) < 10  # never a dev example (the pool's last 6)
    generator = torch.Generator().manual_seed(learner.seed)
    draws = [torch.rand(4, 10, generator=generator).argsort(-1)[:, :3] for _ in range(5)]
    dev_y = batch.support_y[:, -6:, 0]

    def dev_loss(pick: Tensor) -> Tensor:
        mean = torch.gather(batch.support_y[..., 0], 1, pick).mean(1, keepdim=True)
        return ((mean - dev_y) ** 2).mean(1)

    best = torch.stack([dev_loss(d) for d in draws]).argmin(0)
    assert torch.equal(chosen, torch.stack([draws[int(b)][t] for t, b in enumerate(best)]))
    with pytest.raises(ValueError, match="best_of_contexts: a pool of 16 holds no context of 3 and dev of 14"):
        selector("best_of_contexts", dev=14).select(batch)


@pytest.mark.parametrize("method", SELECTORS)
def test_a_query_target_is_never_read(method):
    batch = tasks()
    blind = TaskBatch(batch.support_x, batch.support_y, batch.query_x, torch.full_like(batch.query_y, float("nan")))
    learner = selector(method)
    assert torch.equal(learner.predict(batch), learner.predict(blind))
    assert not learner.predict(blind).isnan().any()


def test_a_context_larger_than_the_pool_is_one_line():
    with pytest.raises(ValueError, match=r"context: 20 examples cannot be chosen from a pool of 16 \(allowed: 1 to 16\)"):
        selector("nearest_context", context=20).select(tasks())


@pytest.fixture(scope="module")
def frozen_icl(tmp_path_factory) -> str:
    """A small ``icl`` checkpoint (untrained: what it predicts does not matter here)."""
    torch.manual_seed(0)
    backbone = {"name": "mlp", "hidden": [16]}
    icl = build_learner("icl", {"width": 16, "depth": 1, "heads": 2}, backbone=backbone, task_kind="regression",
                        input_shape=(1,), output_size=1)
    path = tmp_path_factory.mktemp("frozen") / "icl.pt"
    save_checkpoint(make_checkpoint(icl, backbone=backbone, input_shape=(1,), output_size=1), path)
    return str(path)


@pytest.mark.parametrize("method", ["metaprompt", "nearest_context"])
def test_a_saved_selector_loads_and_selects_with_the_frozen_model_it_kept(method, frozen_icl, tmp_path):
    import shutil

    kept = tmp_path / "icl.pt"
    shutil.copy(frozen_icl, kept)
    torch.manual_seed(0)
    learner = build_learner(method, {"context": 3, "frozen": str(kept)}, backbone={}, task_kind="regression",
                            input_shape=(1,), output_size=1)
    learner.frozen_checkpoint = torch.load(kept, weights_only=True)
    batch = tasks()
    before, chosen = learner.predict(batch), learner.select(batch)
    saved = save_checkpoint(make_checkpoint(learner, backbone={}, input_shape=(1,), output_size=1), tmp_path / "s.pt")
    kept.unlink()  # the frozen model's own file is gone: the selector holds it
    loaded = load_checkpoint(saved)
    assert type(loaded) is LEARNERS[method] and isinstance(loaded.frozen_model, TrainedModel)
    assert torch.equal(loaded.select(batch), chosen) and torch.allclose(loaded.predict(batch), before)


def _job(**overrides):
    from metaopt.search.config import Job

    job = {"name": "pick", "family": {"name": "sine", "shots": 16, "queries": 5, "context": 4},
           "methods": ["metaprompt"], "budget": {"trials": 2, "meta_iterations": 10, "eval_interval": 5}, "frozen": "icl.pt"}
    job.update(overrides)
    return Job.model_validate({k: v for k, v in job.items() if v is not None})


def test_a_job_with_selectors_names_its_frozen_model_and_gets_the_selection_baselines():
    job = _job()
    assert job.methods == SELECTORS and job.frozen.model == "icl.pt"
    assert job.frozen.reference(job.family) == "icl.pt"
    served = _job(family={"name": "movie-genres", "root": ".", "pool": 8, "context": 2, "queries": 4},
                  frozen={"url": "http://127.0.0.1:9/v1", "model": "smollm2", "template": {"instruction": "Genre?"}})
    assert '"url": "http://127.0.0.1:9/v1"' in served.frozen.reference(served.family)
    assert '"name": "movie-genres"' in served.frozen.reference(served.family)


@pytest.mark.parametrize("overrides, says", [
    ({"frozen": None}, "frozen: metaprompt chooses what a frozen model sees: name it (frozen: models:/"),
    ({"methods": ["maml"], "baselines": []}, "frozen: no method of the job chooses a context for it (allowed with: "
                                             "metaprompt, random_context"),
    ({"family": {"name": "sine", "shots": 16}}, "methods: metaprompt chooses `context` examples of a task's pool for "
                                                "each query: set family.context"),
    ({"frozen": {"url": "http://127.0.0.1:9/v1", "model": "m"}}, "frozen.url: a language model reads text, and sine "
                                                                 "tasks are not text (text families: movie-genres"),
    ({"frozen": {"model": "icl.pt", "timeout": 5}}, "timeout applies to a language model server: set url too"),
    ({"family": {"name": "sine", "shots": 4, "context": 5}}, "context: 5 examples cannot be chosen from a pool of 4"),
])
def test_a_job_that_cannot_choose_a_context_is_one_line(overrides, says):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=None) as caught:
        _job(**overrides)
    assert says in str(caught.value)
