"""The search driver in-process: Optuna records every outcome, diverging trials fail without ending the search."""

from __future__ import annotations

import optuna
import pytest
import torch

from metaopt.learners.checkpoint import load_checkpoint
from metaopt.search import load_job
from metaopt.search.executors import InProcessExecutor
from metaopt.search.runner import run_search
from metaopt.search.space import SearchSpace
from metaopt.search.storage import journal_storage
from metaopt.search.selection import FIRST_CHAMPION
from tests.search.jobs import GOOD, tiny_job, write_job


def _study(tmp_path, summary) -> optuna.Study:
    return optuna.load_study(study_name=summary.search_id, storage=journal_storage(tmp_path / "work" / "optuna.journal"))


def test_diverging_trial_is_failed_with_reason_and_search_continues(tmp_path):
    diverging = {**GOOD, "inner_lr": 1e10}
    job = tiny_job(enqueue=[diverging, GOOD], budget={**tiny_job()["budget"], "trials": 3})
    summary = run_search(load_job(write_job(tmp_path, job)), executor=InProcessExecutor(), workdir=tmp_path / "work")

    states = [r.state for r in sorted(summary.results, key=lambda r: r.number)]
    assert states[0] == "failed" and states[1] == "complete" and len(states) == 3
    assert "non-finite loss at iteration 10" in summary.results[0].reason
    trials = _study(tmp_path, summary).trials
    assert trials[0].state == optuna.trial.TrialState.FAIL
    assert "non-finite loss" in trials[0].user_attrs["reason"]
    assert trials[1].state == optuna.trial.TrialState.COMPLETE
    # The survivors were scored on the held-out test tasks.
    maml = next(row for row in summary.rows if row.method == "maml")
    assert maml.test_loss is not None and maml.test_loss_ci95 > 0 and maml.failed == 1


def test_median_pruner_prunes_a_hopeless_trial(tmp_path):
    hopeless = {**GOOD, "outer_lr": 1e-7}
    job = tiny_job(
        methods=["maml"],
        enqueue=[GOOD, hopeless],
        budget={**tiny_job()["budget"], "trials": 2, "meta_iterations": 60},
        pruner={"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
    )
    summary = run_search(load_job(write_job(tmp_path, job)), executor=InProcessExecutor(), workdir=tmp_path / "work")
    second = _study(tmp_path, summary).trials[1]
    assert second.state == optuna.trial.TrialState.PRUNED
    assert summary.results[1].state == "pruned" and summary.results[1].iterations == 10
    assert summary.champion.trial_number == 0


def test_same_job_and_seed_give_the_same_numbers(tmp_path):
    job = load_job(write_job(tmp_path, tiny_job(budget={**tiny_job()["budget"], "trials": 2})))
    first = run_search(job, executor=InProcessExecutor(), workdir=tmp_path / "a")
    second = run_search(job, executor=InProcessExecutor(), workdir=tmp_path / "b")
    assert [(r.method, r.hparams, r.value) for r in first.results] == [(r.method, r.hparams, r.value) for r in second.results]


def test_conditional_space_suggests_only_the_chosen_methods_parameters(tmp_path):
    loaded = load_job(write_job(tmp_path, tiny_job()))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(20):
        trial = study.ask()
        method, hparams = loaded.space.suggest(trial)
        seen.add(method)
        assert set(trial.params) == {"method", *(f"{method}.{name}" for name in hparams)}
        study.tell(trial, 0.0)
    assert seen == {"maml", "fomaml", "reptile"}


def test_enqueue_rejects_unknown_method_and_values():
    space = SearchSpace(["maml"], {})
    with pytest.raises(ValueError, match="not one of the job's methods"):
        space.enqueue_params({"method": "reptile"})
    with pytest.raises(ValueError, match="inner_lr must be > 0"):
        space.enqueue_params({"method": "maml", "inner_lr": 0})


def test_enqueue_rejects_what_the_space_could_never_give(tmp_path):
    space = load_job(write_job(tmp_path, tiny_job())).space  # sine.yaml: maml.meta_batch in [10, 25]
    with pytest.raises(ValueError, match=r"meta_batch: 5 is not one of the space's choices \(allowed: 10, 25\)"):
        space.enqueue_params({"method": "maml", "meta_batch": 5})
    with pytest.raises(ValueError, match="maml.max_grad_norm is not in the search space"):
        space.enqueue_params({"method": "maml", "max_grad_norm": 1.0})
    fixed = SearchSpace(["maml"], {"maml": {"inner_steps": 1}})
    with pytest.raises(ValueError, match=r"inner_steps: 2 differs from the value the space fixes \(allowed: 1\)"):
        fixed.enqueue_params({"method": "maml", "inner_steps": 2})
    assert fixed.enqueue_params({"method": "maml", "inner_steps": 1}) == {"method": "maml", "maml.inner_steps": 1}


def test_a_database_storage_holds_the_study_and_resume_reads_it_back(tmp_path):
    from metaopt.search.runner import recorded_job, resume_search

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    loaded = load_job(write_job(tmp_path, tiny_job(budget={**tiny_job()["budget"], "trials": 2})))
    summary = run_search(loaded, executor=InProcessExecutor(), workdir=tmp_path / "work", storage=url)
    assert not (tmp_path / "work" / "optuna.journal").exists()
    study = optuna.load_study(study_name=summary.search_id, storage=url)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert recorded_job(summary.search_id, workdir=tmp_path / "work", storage=url).job == loaded.job
    again = resume_search(summary.search_id, executor=InProcessExecutor(), workdir=tmp_path / "work", storage=url)
    assert len(again.results) == 2 and len(optuna.load_study(study_name=summary.search_id, storage=url).trials) == 2
    with pytest.raises(LookupError, match="no search 'nope'"):
        recorded_job("nope", workdir=tmp_path / "work", storage=url)


def test_bad_storage_url_is_one_line_and_exit_2(tmp_path, capsys):
    from metaopt.cli import main

    path = write_job(tmp_path, tiny_job())
    assert main(["search", str(path), "--in-process", "--storage", "postgresql://u:secret@127.0.0.1:1/x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --storage: ") and "secret" not in err and len(err.splitlines()) == 1


def test_a_per_method_backbone_is_what_that_methods_trials_train_and_save(tmp_path):
    job = tiny_job(
        methods=["maml", "reptile"],
        backbones={"reptile": {"name": "mlp", "hidden": [8]}},
        enqueue=[GOOD, {"method": "reptile", "inner_lr": 0.01, "outer_lr": 0.1, "inner_steps": 2, "meta_batch": 10}],
        budget={**tiny_job()["budget"], "trials": 2},
    )
    summary = run_search(load_job(write_job(tmp_path, job)), executor=InProcessExecutor(), workdir=tmp_path / "work")
    saved = {r.method: torch.load(r.checkpoint, weights_only=True) for r in summary.results}
    assert saved["reptile"]["backbone"] == {"name": "mlp", "hidden": [8]}
    assert saved["maml"]["backbone"] == {"name": "mlp", "hidden": [16, 16]}
    widths = [p.shape[0] for name, p in load_checkpoint(summary.results[1].checkpoint).backbone.named_parameters()
              if name.endswith("weight")]
    assert widths == [8, 1]


def test_a_search_without_a_tracker_decides_scores_each_method_once_and_builds_each_family_once(tmp_path, monkeypatch):
    from metaopt.search import evaluation
    from metaopt.search.config import Job
    from metaopt.tasks import Sine

    counts = {"scored": 0, "families": 0, "validated": 0}
    evaluate_test, sine_init, validate = evaluation.evaluate_test, Sine.__init__, Job.model_validate

    def scored(*args, **kwargs):
        counts["scored"] += 1
        return evaluate_test(*args, **kwargs)

    def built(self, *args, **kwargs):
        counts["families"] += 1
        sine_init(self, *args, **kwargs)

    def validated(*args, **kwargs):
        counts["validated"] += 1
        return validate(*args, **kwargs)

    loaded = load_job(write_job(tmp_path, tiny_job(budget={**tiny_job()["budget"], "trials": 4})))
    monkeypatch.setattr(evaluation, "evaluate_test", scored)
    monkeypatch.setattr(Sine, "__init__", built)
    monkeypatch.setattr(Job, "model_validate", validated)
    summary = run_search(loaded, executor=InProcessExecutor(), workdir=tmp_path / "work")

    methods = {r.method for r in summary.results if r.state == "complete"}
    assert summary.decision is not None and summary.decision.moved and summary.decision.reason == FIRST_CHAMPION
    assert summary.decision.best.run_id is None and summary.decision.best.method == summary.champion.method
    assert summary.decision.best.scores.tasks == 50 and summary.decision.tasks == 50
    assert counts["scored"] == len(methods)  # once per method per search, on the workers only
    assert counts["families"] == len(summary.results) + len(methods)  # one per trial, one per test scoring
    assert counts["validated"] == 0  # the validated job travels as it is


def test_test_steps_is_a_recorded_hyperparameter_that_adaptation_uses(tmp_path):
    space = {"maml": {"inner_lr": 0.01, "outer_lr": 0.003, "inner_steps": 1, "test_steps": 4, "meta_batch": 10}}
    job = tiny_job(methods=["maml"], search_space=None, space=space, budget={**tiny_job()["budget"], "trials": 1})
    summary = run_search(load_job(write_job(tmp_path, job)), executor=InProcessExecutor(), workdir=tmp_path / "work")
    learner = load_checkpoint(summary.results[0].checkpoint)
    assert learner.hparams["inner_steps"] == 1 and learner.hparams["test_steps"] == 4
    assert len(learner.inner_loop(steps=learner.test_steps()).lrs) == 4
    default = load_job(write_job(tmp_path, tiny_job(methods=["fomaml"], budget={**tiny_job()["budget"], "trials": 1}),
                                 "default.yaml"))
    result = run_search(default, executor=InProcessExecutor(), workdir=tmp_path / "work2").results[0]
    trained = load_checkpoint(result.checkpoint)
    assert trained.hparams["test_steps"] == trained.hparams["inner_steps"]  # unset: the training steps


def test_resume_reads_an_older_record_and_refuses_a_classifier_search_it_minimised(tmp_path):
    from metaopt.search.runner import recorded_job

    job = tiny_job(family={"name": "glyphs", "ways": 5}, methods=["protonet"], search_space=None)
    loaded = load_job(write_job(tmp_path, job))
    recorded = loaded.job.model_dump()
    # What an older metaopt recorded: every family field, unset ones as null; a study minimising val_loss.
    recorded["family"] = {"name": "glyphs", "ways": 5, "shots": None, "queries": None, "rotations": None,
                          "jitter": None, "root": None}
    storage = journal_storage(tmp_path / "work" / "optuna.journal")
    for name, direction in (("old", "minimize"), ("new", "maximize")):
        study = optuna.create_study(study_name=name, storage=storage, direction=direction)
        study.set_user_attr("job", recorded)
        study.set_user_attr("space", loaded.space.to_data())
    assert recorded_job("new", workdir=tmp_path / "work").job.family.key == "glyphs-5w1s-q5"
    with pytest.raises(LookupError, match="started by an older metaopt that optimised the validation loss"):
        recorded_job("old", workdir=tmp_path / "work")


def test_resume_configures_a_trial_its_driver_asked_but_never_configured(tmp_path):
    from metaopt.search.runner import resume_search

    loaded = load_job(write_job(tmp_path, tiny_job(budget={**tiny_job()["budget"], "trials": 2})))
    storage = journal_storage(tmp_path / "work" / "optuna.journal")
    study = optuna.create_study(study_name="died", storage=storage, direction="minimize")
    study.set_user_attr("job", loaded.job.model_dump())
    study.set_user_attr("space", loaded.space.to_data())
    study.ask()  # the driver died right after asking: a RUNNING trial without parameters
    summary = resume_search("died", executor=InProcessExecutor(), workdir=tmp_path / "work")
    assert [(r.number, r.state) for r in sorted(summary.results, key=lambda r: r.number)] == [(0, "complete"),
                                                                                             (1, "complete")]
    assert all("method" in t.params for t in optuna.load_study(study_name="died", storage=storage).trials)


def test_a_trial_left_with_its_method_but_not_its_hyperparameters_is_completed_with_the_same_method(tmp_path):
    """A driver killed between sampling a trial's method and its hyperparameters: on resume, the recorded params
    do not configure it, and sampling again keeps the method Optuna recorded (``TrialLoop._resubmit``)."""
    from metaopt.search.strategies import STRATEGIES

    loaded = load_job(write_job(tmp_path, tiny_job()))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    method = trial.suggest_categorical("method", loaded.space.methods)  # then the driver died
    strategy = STRATEGIES["tpe"]()
    frozen = study.get_trials(deepcopy=False)[0]
    assert loaded.space.spaces[method]  # every method of the tiny job searches hyperparameters
    with pytest.raises(KeyError):
        strategy.recorded(loaded.space, frozen.params)
    again, hparams = strategy.ask(optuna.Trial(study, frozen._trial_id), loaded.space)
    assert again == method and strategy.recorded(loaded.space, study.get_trials()[0].params) == (again, hparams)
