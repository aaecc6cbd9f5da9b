"""What a search leaves for MLflow's UI, read back through MLflow's API: the experiment's kind, description and
preset view; the search's description, series and tables; each trial's line, state, params, dataset, source;
the models' names, signatures and examples; the registry's descriptions and tags."""

from __future__ import annotations

import json

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from metaopt.cli import main
from tests.search.jobs import tiny_job, write_job


@pytest.fixture(scope="module")
def recorded(recorded_search):
    """The shared tiny search (``conftest.recorded_search``): summary, client, experiment, trial runs, job file."""
    client = MlflowClient(recorded_search.uri)
    runs = client.search_runs([recorded_search.experiment_id], "tags.`metaopt.role` = 'trial'")
    return (recorded_search.summary, client, recorded_search.experiment_id,
            {int(r.data.tags["metaopt.trial_number"]): r for r in runs}, recorded_search.job)


def test_the_experiment_is_an_ml_experiment_with_a_description_and_a_preset_view(recorded):
    summary, client, experiment_id, _, _ = recorded
    tags = client.get_experiment(experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert tags["metaopt.key"] == "sine-5shot" and tags["metaopt.metric"] == "loss"
    note = tags["mlflow.note.content"]  # the champion line first, then what the key holds
    assert note.startswith(f"**Champion: {summary.decision.best.method}**, test MSE ") and " ± " in note.split("\n")[0]
    assert "**sine-5shot**: searches of the task family `sine`" in note
    view = json.loads(tags["mlflow.sharedViewState.metaopt"])
    assert view["orderByKey"] == "tags.`metaopt.rank`" and view["orderByAsc"] is True
    assert view["selectedColumns"][:5] == ["tags.`metaopt.rank`", "params.`method`", "tags.`metaopt.test`",
                                           "metrics.`val_loss`", "tags.`metaopt.settings`"]


def test_the_search_run_tells_the_story_and_keeps_counts_out_of_its_charts(recorded):
    summary, client, _, _, path = recorded
    run = client.get_run(summary.parent_run_id)
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith(f"**Champion: {summary.decision.best.method}**, now [metaopt-sine-5shot version 1]")
    assert f"**Best of this search: {summary.champion.method}**" in note and "| rank | method | val MSE |" in note
    assert f"#/experiments/{run.info.experiment_id}/runs/{summary.champion.run_id}" in note
    assert run.data.tags["metaopt.strategy"] == "tpe" and run.data.tags["mlflow.source.name"] == str(path)
    assert run.data.tags["metaopt.trials.complete"] == str(sum(r.state == "complete" for r in summary.results))
    assert set(run.data.metrics) <= {"best_val_loss", "best_val_loss/maml", "best_val_loss/fomaml", "champion_test_loss"}
    history = client.get_metric_history(summary.parent_run_id, "best_val_loss")
    finished = sorted(r.number for r in summary.results if r.state == "complete")
    assert [m.step for m in history] == finished and all(a.value >= b.value for a, b in zip(history, history[1:]))
    artifacts = {a.path for a in client.list_artifacts(summary.parent_run_id)} | {
        a.path for a in client.list_artifacts(summary.parent_run_id, "report")}
    assert {"leaderboard.json", "leaderboard_table.json", "report/figures.html", "report/trials.csv"} <= artifacts
    table = json.loads(open(client.download_artifacts(summary.parent_run_id, "leaderboard_table.json")).read())
    assert [row[table["columns"].index("method")] for row in table["data"]] == [row.method for row in summary.rows]
    assert all(row[table["columns"].index("strategy")] == "tpe" for row in table["data"])
    page = open(client.download_artifacts(summary.parent_run_id, "report/figures.html")).read()
    assert "optimization history" in page and "maml: parallel coordinates" in page and "inner_lr" in page
    assert "maml.inner_lr" not in page  # MLflow's parameter names, not Optuna's
    # The family's dataset row is made with the search run, before any trial could race to insert it.
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "sine-5shot" and len(dataset.dataset.digest) == 8


def test_each_trial_has_its_line_state_rounded_params_dataset_source_and_debug_tags(recorded):
    summary, client, _, runs, path = recorded
    for result in summary.results:
        run = runs[result.number]
        tags = run.data.tags
        assert tags["mlflow.note.content"].startswith(f"**{result.method}**, trial {result.number}: ")
        assert run.info.status == {"complete": "FINISHED", "pruned": "FINISHED", "failed": "FAILED"}[result.state]
        assert tags["metaopt.state"] == result.state and tags["mlflow.source.name"] == str(path)
        assert "metaopt.debug.node" in tags and "metaopt.debug.pid" in tags and "metaopt.node" not in tags
        assert all(len(value) <= 12 for name, value in run.data.params.items() if name.endswith("_lr"))
        (dataset,) = run.inputs.dataset_inputs
        assert dataset.dataset.name == "sine-5shot" and len(dataset.dataset.digest) == 8
        assert dataset.dataset.digest == client.get_run(summary.parent_run_id).inputs.dataset_inputs[0].dataset.digest
        assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")] == ["checkpoint/checkpoint.pt"]
    ranked = sorted((r for r in summary.results if r.state == "complete"), key=lambda r: r.value)
    assert runs[ranked[0].number].data.tags["mlflow.note.content"].endswith(f"rank 1 of {len(ranked)} finished trials.")
    pruned = [r for r in summary.results if r.state == "pruned"]
    assert pruned, "the fixture's search should prune a trial"


def test_models_are_named_after_their_run_with_a_tensor_signature_an_example_and_linked_metrics(recorded):
    summary, client, _, runs, _ = recorded
    mlflow.set_tracking_uri(client.tracking_uri)  # the fluent API reads the store other tests may have pointed at
    run = runs[summary.champion.trial_number]
    model_id = run.data.tags["metaopt.model_uri"].removeprefix("models:/")
    model = mlflow.get_logged_model(model_id)
    assert model.name == run.info.run_name
    info = mlflow.models.get_model_info(run.data.tags["metaopt.model_uri"])
    inputs = {spec.name: spec for spec in info.signature.inputs.inputs}
    assert set(inputs) == {"support_x", "support_y", "query_x"} and inputs["support_x"].shape == (-1, 1)
    assert info.saved_input_example_info is not None
    linked = {m.key for m in model.metrics}
    assert {"val_loss", "test_loss", "test_loss_ci95"} <= linked
    assert run.data.tags["metaopt.test_tasks"] == "50" and "test_tasks" not in run.data.metrics


def test_the_registered_model_and_its_version_describe_themselves(recorded):
    summary, client, _, _, _ = recorded
    model = client.get_registered_model("metaopt-sine-5shot")
    assert model.description.startswith("Champions of `sine-5shot`") and model.tags["metaopt.key"] == "sine-5shot"
    version = client.get_model_version("metaopt-sine-5shot", "1")
    assert version.description.startswith(f"{summary.decision.best.method} from search {summary.search_id}, test MSE ")
    assert {"metaopt.method", "metaopt.key", "metaopt.test_loss", "metaopt.search_id"} <= set(version.tags)
    assert version.tags["metaopt.search_id"] == summary.search_id


def test_search_prints_a_link_to_its_run_and_ui_to_each_key(recorded, tmp_path, capsys):
    summary, client, experiment_id, _, _ = recorded
    from metaopt.cli import _print_experiment_links

    _print_experiment_links(client.tracking_uri, "http://127.0.0.1:5000")
    out = capsys.readouterr().out
    assert (f"sine-5shot: http://127.0.0.1:5000/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
            "&viewStateShareKey=metaopt") in out
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = write_job(tmp_path, tiny_job(methods=["maml"], budget={**tiny_job()["budget"], "trials": 1}))
    assert main(["search", str(path), "--in-process", "--tracking-uri", uri, "--workdir", str(tmp_path / "w")]) == 0
    assert "search run: http://127.0.0.1:5000/#/experiments/" in capsys.readouterr().out
