"""Checkpoints rebuild the same learner and load with weights_only=True."""

from __future__ import annotations

import torch

from metaopt.learners.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from metaopt.learners.core import detach
from tests.helpers import sine_batch, tiny_learner


def test_checkpoint_round_trip(tmp_path):
    learner = tiny_learner("fomaml", {"inner_lr": 0.05}, dtype=torch.float32)
    for i in range(3):
        learner.meta_step(sine_batch(5, seed=i, dtype=torch.float32))
    spec = {"name": "mlp", "hidden": [4, 4], "activation": "tanh"}
    path = save_checkpoint(make_checkpoint(learner, backbone=spec, input_shape=(1,), output_size=1), tmp_path / "c.pt")
    torch.load(path, weights_only=True)  # plain tensors and values only

    restored = load_checkpoint(path)
    assert restored.name == "fomaml" and restored.hparams == learner.hparams
    for k, v in detach(learner.params).items():
        assert torch.equal(restored.params[k], v)
    batch = sine_batch(4, seed=7, dtype=torch.float32)
    assert torch.equal(restored.predict(batch), learner.predict(batch))
    # The optimizer state travels too: the next step is identical.
    next_batch = sine_batch(5, seed=8, dtype=torch.float32)
    learner.meta_step(next_batch)
    restored.meta_step(next_batch)
    for k in learner.params:
        assert torch.allclose(restored.params[k], learner.params[k])


def test_conv4_mamlpp_round_trip_and_a_checkpoint_from_before_per_step_batch_norm(tmp_path):
    from metaopt.learners.checkpoint import build_learner

    spec = {"name": "conv4", "hidden": 4}
    kwargs = dict(backbone=spec, task_kind="classification", input_shape=(1, 28, 28), output_size=3, n_way=3)
    learner = build_learner("mamlpp", {"inner_steps": 2}, **kwargs)
    assert any(name.startswith("bnws:") for name in learner.extras)
    restored = load_checkpoint(save_checkpoint(make_checkpoint(learner, backbone=spec, input_shape=(1, 28, 28),
                                                               output_size=3), tmp_path / "new.pt"))
    assert torch.equal(restored.extras["bnws:features.0.1.weight"], learner.extras["bnws:features.0.1.weight"])

    old = build_learner("mamlpp", {"inner_steps": 2, "per_step_bn": False}, **kwargs)
    checkpoint = make_checkpoint(old, backbone=spec, input_shape=(1, 28, 28), output_size=3)
    del checkpoint["hparams"]["per_step_bn"]  # as written before the option existed
    assert load_checkpoint(save_checkpoint(checkpoint, tmp_path / "old.pt")).hparams["per_step_bn"] is False
