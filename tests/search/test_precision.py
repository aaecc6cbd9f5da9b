"""``precision: bf16``: meta-steps under bfloat16 autocast, evaluation in fp32, a clear error where bf16 is not native."""

from __future__ import annotations

import math

import pytest
import torch

from metaopt.search.fit import bf16_supported, fit, precision_context
from metaopt.tasks import Sine
from tests.helpers import tiny_learner


@pytest.mark.skipif(not bf16_supported(torch.device("cpu")), reason="this CPU has no native bf16 (AVX-512 BF16, AMX)")
def test_bf16_runs_every_meta_step_under_autocast_and_scores_in_fp32():
    learner = tiny_learner("maml", {"meta_batch": 2}, dtype=torch.float32)
    seen, step, predict = [], learner.meta_step, learner.predict

    def recorded_step(batch):  # noqa: ANN001, ANN202
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return step(batch)

    def recorded_predict(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(("scored", torch.is_autocast_enabled("cpu")))
        return predict(*args, **kwargs)

    learner.meta_step, learner.predict = recorded_step, recorded_predict
    family = Sine()
    val = [family.sample(4, "val", torch.Generator().manual_seed(1))]
    result = fit(learner, family, iterations=3, generator=torch.Generator().manual_seed(0), precision="bf16",
                 val_tasks=val)
    assert seen[:3] == [(True, torch.bfloat16)] * 3 and ("scored", False) in seen
    assert math.isfinite(result.train_loss) and all(p.dtype == torch.float32 for p in learner.meta_parameters().values())


def test_bf16_where_the_device_has_none_is_one_line_naming_the_allowed_values():
    with precision_context("fp32", torch.device("meta")):  # fp32 asks nothing of the device
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError, match=r"precision: bf16 needs .* meta has neither \(allowed: fp32, bf16\)"):
        precision_context("bf16", torch.device("meta"))


def test_a_bf16_job_fails_preflight_in_one_line_where_this_machine_has_no_native_bf16(monkeypatch):
    from metaopt import preflight
    from metaopt.search import fit as fit_module

    machine_has_it = bf16_supported(torch.device("cpu"))
    if machine_has_it:
        preflight.machine_resources(1, 0.0, local=True, precision="bf16")  # nothing to say here
    monkeypatch.setattr(fit_module, "bf16_supported", lambda device: False)  # a CPU without AVX-512 BF16 or AMX
    preflight.machine_resources(1, 0.0, local=True, precision="fp32")
    preflight.machine_resources(1, 0.0, local=False, precision="bf16")  # a cluster's workers say for themselves
    with pytest.raises(preflight.Problem, match=r"^precision: bf16 but this machine's CPU .* \(allowed: fp32, bf16; "):
        preflight.machine_resources(1, 0.0, local=True, precision="bf16")
