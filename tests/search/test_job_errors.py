"""Bad job files end with one line naming the file and the field, exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from metaopt.cli import main
from metaopt.search import ConfigError, load_job
from metaopt.tasks import FAMILIES
from tests.search.jobs import REPO, tiny_job, write_job


def _without(key: str) -> dict:
    job = tiny_job()
    del job["budget"][key]
    return job


BAD_JOBS = {
    "missing field": (_without("trials"), "budget.trials: Field required"),
    "unknown method": (tiny_job(methods=["maml", "mamba"]), "methods: unknown method 'mamba' (allowed: maml, fomaml, mamlpp, reptile"),
    "unknown family": (tiny_job(family={"name": "cosine"}), f"family.name: unknown family 'cosine' (allowed: {', '.join(FAMILIES)})"),
    "option the family does not take": (
        tiny_job(family={"name": "sine", "ways": 5}),
        "family: ways is not an option of sine (allowed: context, queries, shots)",
    ),
    "conv4 with mlp options": (
        tiny_job(backbone={"name": "conv4", "hidden": [64, 64]}),
        "backbone: conv4 takes hidden: <filters> (an integer) and pooled_blocks only",
    ),
    "per-method backbone of a method not searched": (
        tiny_job(methods=["maml"], backbones={"protonet": {"name": "conv4"}}),
        "backbones: 'protonet' is not one of the job's methods (allowed: maml)",
    ),
    "pooled_blocks on an mlp": (
        tiny_job(methods=["maml"], backbones={"maml": {"name": "mlp", "pooled_blocks": 2}}),
        "backbones.maml: pooled_blocks is an option of conv4 only, not of mlp",
    ),
    "negative lr": (
        tiny_job(space={"maml": {"inner_lr": -0.01}}),
        "space.maml.inner_lr: value must be > 0.0, got -0.01 (allowed: float > 0.0)",
    ),
    "negative lr range": (
        tiny_job(space={"fomaml": {"outer_lr": {"type": "float", "low": -1.0, "high": 0.1}}}),
        "space.fomaml.outer_lr: low must be > 0.0, got -1.0",
    ),
    "log range at zero": (
        tiny_job(space={"maml": {"inner_lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}}),
        "space.maml.inner_lr: a log-scale range needs low > 0, got 0.0",
    ),
    "unknown hyperparameter": (
        tiny_job(space={"reptile": {"step_size": 0.1}}),
        "space.reptile.step_size: unknown hyperparameter for reptile (allowed: anneal, ft_layers, ft_lr, ft_steps, inner_lr, inner_optimizer, inner_steps, max_grad_norm, meta_batch, outer_lr, test_steps)",
    ),
    "unknown field": (tiny_job(budgett={}), "budgett: Extra inputs are not permitted"),
    "unknown precision": (tiny_job(precision="fp16"), "precision: Input should be 'fp32' or 'bf16'"),
    "zero trials": (tiny_job(budget={"trials": 0, "meta_iterations": 1, "eval_interval": 1}), "budget.trials: Input should be greater than 0"),
    "bad strategy": (tiny_job(strategy="bayes"), "strategy: Input should be 'tpe', 'random', 'nsga2', 'cmaes', 'gp', 'grid', 'hypergrad' or 'tpe+hypergrad'"),
    "grid over a continuous range": (
        tiny_job(strategy="grid", methods=["maml"]),
        "space.maml.inner_lr: strategy grid needs a step for every float range",
    ),
    "step on a log range": (
        tiny_job(space={"maml": {"inner_lr": {"type": "float", "low": 0.1, "high": 0.3, "log": True, "step": 0.1}}}),
        "space.maml.inner_lr: step and log cannot be combined",
    ),
    "hypergradient strategy with a hyperparameter the hypergrad learner has not": (
        tiny_job(strategy="tpe+hypergrad", methods=["maml", "mamlpp"],
                 space={"mamlpp": {"learn_lrs": {"type": "categorical", "choices": [True, False]}}}),
        "space.mamlpp.learn_lrs: strategy tpe+hypergrad trains mamlpp as the hypergrad learner, which has no learn_lrs",
    ),
    "unknown test_steps value": (
        tiny_job(space={"maml": {"test_steps": 0}}),
        "space.maml.test_steps: value must be >= 1, got 0",
    ),
    "bad pruner": (
        tiny_job(pruner={"type": "asha"}),
        "pruner.type: Input should be 'median', 'hyperband', 'wilcoxon' or 'none'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_JOBS))
def test_bad_job_is_one_line_naming_file_and_field(case, tmp_path, capsys):
    job, expected = BAD_JOBS[case]
    path = write_job(tmp_path, job)
    assert main(["search", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: {path}: "), err
    assert expected in err, err


def test_yaml_syntax_error(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nbudget: {trials: 3\nmethods: [maml]\n")
    assert main(["search", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: YAML syntax error: line ") and err.count("\n") == 1, err


def test_missing_file_and_bad_search_space_file_name_that_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: cannot read file"):
        load_job(tmp_path / "nope.yaml")
    space = tmp_path / "space.yaml"
    space.write_text("maml:\n  inner_lr: {type: float, low: 0.1, high: 0.01}\n")
    with pytest.raises(ConfigError, match=rf"^{space}: maml.inner_lr.*low \(0.1\) must be <= high \(0.01\)"):
        load_job(write_job(tmp_path, tiny_job(search_space="space.yaml")))


def test_the_installed_command_exits_2_without_traceback(tmp_path):
    path = write_job(tmp_path, tiny_job(methods=["maml", "mamba"]))
    proc = subprocess.run([sys.executable, "-m", "metaopt.cli", "search", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert "methods: unknown method 'mamba'" in proc.stderr


@pytest.mark.parametrize("job", sorted(p.name for p in (REPO / "jobs").glob("*.yaml")))
def test_shipped_jobs_are_valid(job):
    loaded = load_job(REPO / "jobs" / job)
    assert loaded.space.methods == loaded.job.methods
