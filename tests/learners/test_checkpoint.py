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
    assert torch.equal(restored.evaluate(batch)["loss"], learner.evaluate(batch)["loss"])
    # The optimizer state travels too: the next step is identical.
    next_batch = sine_batch(5, seed=8, dtype=torch.float32)
    learner.meta_step(next_batch)
    restored.meta_step(next_batch)
    for k in learner.params:
        assert torch.allclose(restored.params[k], learner.params[k])
