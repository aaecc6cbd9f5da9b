"""A user's own data end to end, through the command: files -> `metaopt init` -> search -> champion -> adapt."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from metaopt.tasks import ImageFolder, Tabular
from tests.own_data import draw_shapes, linear_rows, write_table

@pytest.fixture
def metaopt_here(tmp_path: Path, monkeypatch, capsys):  # noqa: ANN201 - a function of the command's arguments
    """``metaopt ARGS`` as its ``main`` runs it, in this process, in ``tmp_path``: its output (an exit other than 0
    fails). The installed command's own exit and output are tested in ``tests/search/test_job_errors.py``."""
    from metaopt.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def run(*args: str) -> str:
        code = main(list(args))
        captured = capsys.readouterr()
        assert code == 0, captured.err[-3000:]
        return captured.out

    return run


def _search(metaopt_here, job: Path, cwd: Path) -> str:  # noqa: ANN001
    """Run the job as written, in this process (no Ray: the Ray path is tested elsewhere)."""
    return metaopt_here("search", str(job), "--in-process", "--tracking-uri", f"sqlite:///{cwd / 'mlflow.db'}",
                        "--workdir", str(cwd / "work"))


def _champion(key: str, cwd: Path):  # noqa: ANN202 - a MetaLearner
    from metaopt.tracking.models import load_learner

    return load_learner(f"models:/metaopt-{key}@champion", tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")


def test_a_regression_table_from_init_to_a_champion_that_adapts_better_than_it_starts(tmp_path, metaopt_here):
    table = write_table(linear_rows(tasks=80, rows=30), tmp_path / "sales.csv")
    made = metaopt_here("init", "--family", "tabular", f"path={table.name}", "task_column=user", "target=y",
                        "kind=regression", "--out", "jobs", "--trials", "3", "--meta-iterations", "300")
    assert "wrote jobs/tabular.yaml and jobs/tabular-space.yaml" in made
    import yaml

    written = yaml.safe_load((tmp_path / "jobs" / "tabular.yaml").read_text())
    assert written["family"]["path"] == "../sales.csv"  # relative to the job: the folder moves as a whole
    out = _search(metaopt_here, tmp_path / "jobs" / "tabular.yaml", tmp_path)
    options = Tabular.Options(path=str(table), task_column="user", target="y", kind="regression")
    key = Tabular.key(options)
    assert key in out and "champion:" in out
    learner = _champion(key, tmp_path)
    family = Tabular.from_options(options)
    batch = family.sample(60, "test", torch.Generator().manual_seed(7))  # 11.7 ± 1.1 on 200 tasks: 60 decide it
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


def test_an_image_folder_from_files_to_a_champion_far_above_chance(tmp_path, metaopt_here):
    root = draw_shapes(tmp_path / "photos", per_class=12, classes=30)
    job = tmp_path / "shapes.yaml"
    job.write_text("name: shapes\n"
                   "family: {name: imagefolder, root: photos, ways: 5, shots: 1, queries: 5}\n"
                   "methods: [protonet]\n"
                   "backbone: {name: conv4, hidden: 32}\n"
                   "space: {protonet: {outer_lr: {type: float, low: 0.001, high: 0.003, log: true}, meta_batch: 4}}\n"
                   "budget: {trials: 1, meta_iterations: 120, eval_interval: 60, val_tasks: 50, test_tasks: 200}\n"
                   "baselines: []\n")  # the one trial is ProtoNet's, not a baseline's
    out = _search(metaopt_here, job, tmp_path)
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


def test_a_classification_parquet_from_init_searches_as_written(tmp_path, metaopt_here):
    from tests.own_data import class_rows

    write_table(class_rows(tasks=40, rows=24), tmp_path / "sites.parquet")
    metaopt_here("init", "--family", "tabular", "path=sites.parquet", "task_column=site", "target=label",
                 "kind=classification", "shots=6", "queries=6", "--name", "sites", "--trials", "1",
                 "--meta-iterations", "100")
    out = _search(metaopt_here, tmp_path / "sites.yaml", tmp_path)
    assert "tabular-sites-" in out and "test accuracy" in out and "champion:" in out
