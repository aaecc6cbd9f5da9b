"""Plugins: a family and a learner from another installed package, found by entry point and used by name."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

INSTALLED = Path(sys.executable).with_name("metaopt")
COMMAND = [str(INSTALLED)] if INSTALLED.is_file() else [sys.executable, "-m", "metaopt.cli"]

PLUGIN = '''
"""A plugin package: a family of straight lines and a learner (first-order MAML under another name)."""

import torch
from pydantic import PositiveInt

from metaopt.learners.fomaml import FOMAML
from metaopt.tasks.base import FamilyOptions, TaskBatch, TaskFamily
from metaopt.tasks.metrics import REGRESSION


class LinesOptions(FamilyOptions):
    shots: PositiveInt = 5
    queries: PositiveInt = 5


class Lines(TaskFamily):
    """y = a x + b with a, b ~ U[-2, 2]; x ~ U[-1, 1]."""

    name = "lines"
    kind = "regression"
    Options = LinesOptions
    metrics = REGRESSION
    input_shape = (1,)
    output_size = 1

    def __init__(self, shots=5, queries=5):
        self.shots, self.queries = shots, queries

    def sample(self, batch_size, split, generator):
        offset = {"train": 0, "val": 1, "test": 2}[split]
        ab = torch.rand(batch_size, 2, generator=generator) * 4 - 2 + 0 * offset
        x = torch.rand(batch_size, self.shots + self.queries, 1, generator=generator) * 2 - 1
        y = ab[:, None, :1] * x + ab[:, None, 1:]
        k = self.shots
        return TaskBatch(x[:, :k], y[:, :k], x[:, k:], y[:, k:])


class Lazy(FOMAML):
    """First-order MAML, as a plugin learner."""

    name = "lazy"
'''

ENTRY_POINTS = """
[metaopt.families]
lines = shelfplug:Lines
broken = shelfplug_missing:Nope

[metaopt.learners]
lazy = shelfplug:Lazy
"""


@pytest.fixture()
def plugin_site(tmp_path: Path) -> Path:
    """A folder on ``PYTHONPATH`` holding an installed distribution ``shelfplug 0.1`` (a dist-info with entry points)."""
    site = tmp_path / "site"
    (site / "shelfplug").mkdir(parents=True)
    (site / "shelfplug" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "shelfplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shelfplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return site


def _metaopt(*args: str, site: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([*COMMAND, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_an_installed_plugin_is_listed_and_a_broken_one_is_one_line(plugin_site, tmp_path):
    done = _metaopt("families", site=plugin_site, cwd=tmp_path)
    assert "lines  [plugin shelfplug 0.1]  y = a x + b" in done.stdout
    assert "  shots: int = 5" in done.stdout.split("lines  [plugin")[1]
    errors = done.stderr.strip().splitlines()
    assert errors == ["error: plugin family 'broken' (shelfplug_missing:Nope, from shelfplug 0.1) failed to import: "
                      "ModuleNotFoundError: No module named 'shelfplug_missing'"]
    assert done.returncode == 1
    methods = _metaopt("methods", site=plugin_site, cwd=tmp_path)
    assert methods.returncode == 0 and "lazy  [plugin shelfplug 0.1]" in methods.stdout


def test_a_job_names_a_plugin_family_and_learner_and_runs(plugin_site, tmp_path, monkeypatch, capsys):
    job = tmp_path / "lines.yaml"
    job.write_text("name: lines\nfamily: {name: lines, shots: 5}\nmethods: [lazy, maml]\n"
                   "budget: {trials: 2, meta_iterations: 40, eval_interval: 20, val_tasks: 20, test_tasks: 100}\n"
                   "enqueue: [{method: lazy}, {method: maml}]\n")
    done = _metaopt("search", str(job), "--in-process", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                    "--workdir", str(tmp_path / "work"), site=plugin_site, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "lines-shots5-queries5" in done.stdout and "lazy" in done.stdout

    bad = tmp_path / "broken.yaml"
    bad.write_text(job.read_text().replace("name: lines, shots: 5", "name: broken"))
    refused = _metaopt("search", str(bad), "--in-process", site=plugin_site, cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: {bad}: family: plugin family 'broken' (shelfplug_missing:Nope, from shelfplug 0.1) failed to import: "
        "ModuleNotFoundError: No module named 'shelfplug_missing'"]

    # Without the plugin installed (this process never had it), the job's family is unknown.
    from metaopt.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["search", str(job), "--in-process"]) == 2
    assert "unknown family 'lines' (allowed: sine, glyphs" in capsys.readouterr().err
