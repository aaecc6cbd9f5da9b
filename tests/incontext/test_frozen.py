"""A model metaopt trained, frozen behind the in-context interface: one context per task or one per query."""

from __future__ import annotations

import torch

from metaopt.incontext.frozen import TrainedModel
from metaopt.learners.checkpoint import build_learner


def frozen_icl() -> TrainedModel:
    torch.manual_seed(0)
    learner = build_learner("icl", {"width": 16, "depth": 1, "heads": 2}, backbone={"name": "mlp", "hidden": [16]},
                            task_kind="regression", input_shape=(1,), output_size=1)
    return TrainedModel(learner)


def test_a_context_per_query_is_the_same_as_that_context_for_the_query_alone():
    model = frozen_icl()
    context_x, context_y = torch.randn(2, 3, 4, 1), torch.randn(2, 3, 4, 1)  # 2 tasks, 3 queries, 4 examples each
    query_x = torch.randn(2, 3, 1)
    each = model.predict_each(context_x, context_y, query_x)
    assert each.shape == (2, 3, 1)
    alone = model.predict(context_x[1, 2:3], context_y[1, 2:3], query_x[1, 2:3].unsqueeze(1))
    assert torch.allclose(each[1, 2], alone[0, 0], atol=1e-6)
    other = model.predict(context_x[1, 0:1], context_y[1, 0:1], query_x[1, 2:3].unsqueeze(1))
    assert not torch.allclose(each[1, 2], other[0, 0])  # the context is what the prediction reads


def test_the_frozen_model_is_never_updated():
    model = frozen_icl()
    before = {k: v.clone() for k, v in model.learner.meta_parameters().items()}
    out = model.predict(torch.randn(1, 5, 1), torch.randn(1, 5, 1), torch.randn(1, 2, 1))
    assert not out.requires_grad and all(not v.requires_grad for v in model.learner.meta_parameters().values())
    assert all(torch.equal(before[k], v) for k, v in model.learner.meta_parameters().items())
