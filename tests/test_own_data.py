"""A user's own data end to end, through the installed command: files -> `metaopt init` -> search -> champion -> adapt."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from metaopt.tasks import ImageFolder, Tabular
from tests.own_data import draw_shapes, linear_rows, write_table

INSTALLED = Path(sys.executable).with_name("metaopt")
COMMAND = [str(INSTALLED)] if INSTALLED.is_file() else [sys.executable, "-m", "metaopt.cli"]


def _metaopt(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(cwd / "cache")}
    done = subprocess.run([*COMMAND, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _search(job: Path, cwd: Path) -> str:
    """Run the job as written, in this process's Python (no Ray: the Ray path is tested elsewhere)."""
    done = _metaopt("search", str(job), "--in-process", "--tracking-uri", f"sqlite:///{cwd / 'mlflow.db'}",
                    "--workdir", str(cwd / "work"), cwd=cwd)
    return done.stdout


def _champion(key: str, cwd: Path):  # noqa: ANN202 - a MetaLearner
    from metaopt.tracking.models import load_learner

    return load_learner(f"models:/metaopt-{key}@champion", tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")


def test_a_regression_table_from_init_to_a_champion_that_adapts_better_than_it_starts(tmp_path):
    table = write_table(linear_rows(tasks=80, rows=30), tmp_path / "sales.csv")
    made = _metaopt("init", "--family", "tabular", f"path={table.name}", "task_column=user", "target=y",
                    "kind=regression", "--out", "jobs", "--trials", "3", "--meta-iterations", "300", cwd=tmp_path)
    assert "wrote jobs/tabular.yaml and jobs/tabular-space.yaml" in made.stdout
    out = _search(tmp_path / "jobs" / "tabular.yaml", tmp_path)
    options = Tabular.Options(path=str(table), task_column="user", target="y", kind="regression")
    key = Tabular.key(options)
    assert key in out and "champion:" in out
    learner = _champion(key, tmp_path)
    family = Tabular.from_options(options)
    batch = family.sample(200, "test", torch.Generator().manual_seed(7))
    adapted, unadapted = [], []
    for t in range(batch.num_tasks):
        target = batch.query_y[t]
        adapted.append(((learner.adapt(batch.support_x[t], batch.support_y[t])(batch.query_x[t]) - target) ** 2).mean())
        unadapted.append(((learner.adapt(batch.support_x[t], batch.support_y[t], steps=0)(batch.query_x[t]) - target)
                          ** 2).mean())
    adapted_mse, unadapted_mse = torch.stack(adapted), torch.stack(unadapted)
    difference = unadapted_mse - adapted_mse
    half_width = 1.96 * difference.std() / len(difference) ** 0.5
    print(f"adapted MSE {float(adapted_mse.mean()):.4f}, unadapted {float(unadapted_mse.mean()):.4f}, "
          f"difference {float(difference.mean()):.4f} ± {float(half_width):.4f}")
    assert float(difference.mean() - half_width) > 0, (float(adapted_mse.mean()), float(unadapted_mse.mean()))


def test_an_image_folder_from_files_to_a_champion_far_above_chance(tmp_path):
    root = draw_shapes(tmp_path / "photos", per_class=12, classes=30)
    job = tmp_path / "shapes.yaml"
    job.write_text("name: shapes\n"
                   "family: {name: imagefolder, root: photos, ways: 5, shots: 1, queries: 5}\n"
                   "methods: [protonet]\n"
                   "backbone: {name: conv4, hidden: 32}\n"
                   "space: {protonet: {outer_lr: {type: float, low: 0.001, high: 0.003, log: true}, meta_batch: 4}}\n"
                   "budget: {trials: 1, meta_iterations: 120, eval_interval: 60, val_tasks: 50, test_tasks: 200}\n"
                   "baselines: []\n")  # the one trial is ProtoNet's, not a baseline's
    out = _search(job, tmp_path)
    key = ImageFolder.key(ImageFolder.Options(root=str(root)))
    assert key in out
    learner = _champion(key, tmp_path)
    family = ImageFolder(root=str(root), cache_dir=tmp_path / "cache" / "metaopt")
    batch = family.sample(100, "test", torch.Generator().manual_seed(3))
    correct = [(learner.adapt(batch.support_x[t], batch.support_y[t])(batch.query_x[t]).argmax(-1)
                == batch.query_y[t]).float().mean() for t in range(batch.num_tasks)]
    accuracy = float(torch.stack(correct).mean())
    print(f"champion's 5-way 1-shot accuracy on 100 held-out episodes: {accuracy:.3f}")
    assert accuracy > 0.6, accuracy  # chance: 0.2


def test_a_classification_parquet_from_init_searches_as_written(tmp_path):
    from tests.own_data import class_rows

    write_table(class_rows(tasks=40, rows=24), tmp_path / "sites.parquet")
    _metaopt("init", "--family", "tabular", "path=sites.parquet", "task_column=site", "target=label",
             "kind=classification", "shots=6", "queries=6", "--name", "sites", "--trials", "1",
             "--meta-iterations", "100", cwd=tmp_path)
    out = _search(tmp_path / "sites.yaml", tmp_path)
    assert "tabular-sites-" in out and "test accuracy" in out and "champion:" in out
