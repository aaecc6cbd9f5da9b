"""``torch.compile`` of a learner's meta-step gives the eager numbers; ``auto`` compiles only long trials."""

from __future__ import annotations

import math
import time

import pytest
import torch

from metaopt.learners import LEARNERS
from metaopt.models import MLP
from metaopt.search.fit import CompileDecision as _CompileDecision
from tests.helpers import sine_batch


class Probe:
    """A compilable learner that only records whether it was compiled (its graph: ``signature``)."""

    compilable = True

    def __init__(self, signature: str | None = None) -> None:
        self.compiled, self.signature = False, signature

    def compile(self) -> None:
        self.compiled = True

    def compile_signature(self, batch: object) -> str | None:
        return self.signature


def _trained(method: str, compile: bool, hparams: dict) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    torch._dynamo.reset()
    net = MLP(in_features=1, out_features=1, hidden=(8, 8))
    learner = LEARNERS[method](net, hparams, task_kind="regression", max_iterations=10, compile=compile)
    for i in range(4):  # crosses MAML++'s first-order window and its MSL annealing
        learner.meta_step(sine_batch(4, seed=i, dtype=torch.float32))
    return {k: v.detach().clone() for k, v in learner.meta_parameters().items()}


def test_compiled_mamlpp_meta_steps_match_eager():
    hparams = {"inner_steps": 2, "msl_anneal": 0.3, "first_order_until": 0.2, "meta_batch": 4}
    eager, compiled = _trained("mamlpp", False, hparams), _trained("mamlpp", True, hparams)
    for name in eager:
        assert torch.allclose(eager[name], compiled[name], atol=1e-5, rtol=1e-4), name


def test_trials_that_differ_in_their_learning_rate_share_one_compiled_graph(tmp_path, monkeypatch):
    """Compile once per search: the inner learning rate is an input of the compiled meta-gradient, not a constant
    of its graph, so a second trial with another rate finds the first one's graph in the persistent cache."""
    from torch._dynamo.utils import counters

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # this test's own cache: cold, then warm
    results = {}
    for inner_lr in (0.01, 0.05):
        counters.clear()
        torch.manual_seed(0)
        torch._dynamo.reset()
        net = MLP(in_features=1, out_features=1, hidden=(8, 8))
        compiled = LEARNERS["maml"](net, {"inner_lr": inner_lr, "meta_batch": 4}, task_kind="regression",
                                    max_iterations=10, compile=True)
        torch.manual_seed(0)
        eager = LEARNERS["maml"](MLP(in_features=1, out_features=1, hidden=(8, 8)), {"inner_lr": inner_lr},
                                 task_kind="regression", max_iterations=10)
        batch = sine_batch(4, seed=0, dtype=torch.float32)
        assert compiled.meta_step(batch)["loss"].item() == pytest.approx(eager.meta_step(batch)["loss"].item(),
                                                                         rel=1e-5)  # each trial its own rate
        results[inner_lr] = dict(counters["inductor"])
    assert results[0.01].get("fxgraph_cache_miss", 0) >= 1 and not results[0.01].get("fxgraph_cache_hit")
    assert results[0.05].get("fxgraph_cache_hit", 0) >= 1 and not results[0.05].get("fxgraph_cache_miss"), results


def test_auto_compiles_only_when_the_rest_of_the_trial_repays_it():
    short, long_, due = Probe(), Probe(), Probe()
    # A trial of 10^9 iterations whose deadline comes in 2 s cannot repay a compile either.
    for learner, iterations, deadline in ((short, 100, math.inf), (long_, 10**9, math.inf),
                                          (due, 10**9, time.monotonic() + 2.0)):
        decision = _CompileDecision("auto", learner, iterations, deadline)
        for it in range(1, _CompileDecision.PROBE + 2):
            decision.before_step(it)
            decision.after_step(it)
    assert not short.compiled and long_.compiled and not due.compiled
    never = Probe()
    _CompileDecision("never", never, 10**9).before_step(1)
    assert not never.compiled


def test_a_graph_compiled_before_on_this_machine_makes_a_shorter_trial_worth_compiling(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))

    def trial(mode: str = "auto", seconds_left: float = 30.0) -> tuple[Probe, dict]:
        learner = Probe("conv4-maml-5w1s")
        decision = _CompileDecision(mode, learner, 10**9, time.monotonic() + seconds_left)
        for it in range(1, _CompileDecision.PROBE + 2):
            decision.before_step(it, object())
            decision.after_step(it)
        return learner, decision.pop_metrics()

    cold, _ = trial()  # 30 s left: a cold compile would not pay back
    assert not cold.compiled
    first, metrics = trial("always")  # a trial that compiles marks the graph compiled on this machine
    assert first.compiled and metrics["compile_cache_warm"] == 0.0
    warm, metrics = trial()  # the same 30 s now repay the warm compile
    assert warm.compiled and metrics["compile_cache_warm"] == 1.0 and metrics["compile_seconds"] >= 0
    short, _ = trial(seconds_left=5.0)  # not even a warm one
    assert not short.compiled


def test_a_trial_trains_eagerly_while_another_compiles_its_graph_then_compiles_warm(tmp_path, monkeypatch):
    from metaopt.search.fit import compile_marker

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))

    marker = compile_marker("shared-graph")
    marker.parent.mkdir(parents=True)
    marker.with_suffix(".compiling").touch()  # another trial's claim: it is compiling this graph now
    learner = Probe("shared-graph")
    decision = _CompileDecision("always", learner, 10**9)
    for it in range(1, 3 * _CompileDecision.PROBE):
        if it == 2 * _CompileDecision.PROBE:  # the other trial's compile is done
            marker.write_text("{}")
        decision.before_step(it, object())
        decision.after_step(it)
        assert learner.compiled == (it > 2 * _CompileDecision.PROBE), it  # at the first look after it was done
    assert decision.pop_metrics()["compile_cache_warm"] == 1.0
    first = Probe("shared-graph")  # with no claim, a trial claims the compile, and gives the claim up once compiled
    marker.unlink()
    marker.with_suffix(".compiling").unlink()
    decision = _CompileDecision("always", first, 10**9)
    decision.before_step(1, object())
    assert first.compiled and marker.with_suffix(".compiling").exists()
    decision.after_step(1)
    assert marker.exists() and not marker.with_suffix(".compiling").exists()


def test_a_short_trial_of_a_compilable_learner_trains_eagerly_to_its_deadline():
    from metaopt.search.fit import TimeLimit, fit
    from metaopt.tasks import Sine

    torch.manual_seed(0)
    learner = LEARNERS["maml"](MLP(in_features=1, out_features=1, hidden=(8, 8)), {"meta_batch": 4},
                               task_kind="regression")
    assert learner.compilable
    with pytest.raises(TimeLimit):
        fit(learner, Sine(), iterations=10**7, generator=torch.Generator().manual_seed(0), compile="auto",
            deadline=time.monotonic() + 2.0)
    assert learner.compiled is None and learner.iteration > _CompileDecision.PROBE


def test_auto_goes_back_to_eager_steps_where_compiled_ones_are_slower_and_remembers(tmp_path, monkeypatch):
    """On the CPU, Conv-4's eager second-order step (its fused block) outruns the compiled one: ``auto`` times both,
    keeps the faster, and the machine's next trial of that graph does not compile it."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))

    def trial(signature: str, slow_when_compiled: bool) -> tuple[Probe, dict, list[bool]]:
        learner = Probe(signature)
        decision = _CompileDecision("auto", learner, 10**9)
        compiled_at_each = []
        for it in range(1, 2 * _CompileDecision.PROBE + 3):
            decision.before_step(it, object())
            time.sleep(0.004 if bool(learner.compiled) == slow_when_compiled else 0.0)
            decision.after_step(it)
            compiled_at_each.append(bool(learner.compiled))
        return learner, decision.pop_metrics(), compiled_at_each

    slower, metrics, history = trial("compiled-is-slower", slow_when_compiled=True)
    assert any(history) and not history[-1]  # compiled for PROBE steps, then back to eager
    assert metrics["compiled"] == 0.0 and metrics["compile_speedup"] < 1.0
    again, metrics, history = trial("compiled-is-slower", slow_when_compiled=True)
    assert not any(history) and set(metrics) == {"compiled", "compile_speedup"}
    assert metrics["compiled"] == 0.0 and metrics["compile_speedup"] < 1.0
    faster, metrics, history = trial("compiled-is-faster", slow_when_compiled=False)
    assert history[-1] and metrics["compiled"] == 1.0 and metrics["compile_speedup"] > 1.0
