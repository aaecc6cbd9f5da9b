"""The conclusion of a search: each method's best trial scored on test tasks, the verdict, the champion decision.

After the trials, the best trial of each method by validation is scored once on the key's
fixed test tasks (on the executor, recorded with its trial). The verdict says whether
meta-learning pays (the best meta-learner against the best baseline, paired). The
champion decision is ``decide_champion``: the one workflow a search and ``metaopt select``
both go through (the champion's recorded scores, or its scores computed once where they do
not pair; then ``selection.pick``).
"""

from __future__ import annotations

from collections.abc import Callable

from metaopt.learners import is_baseline
from metaopt.search.evaluation import TaskScores, across_seeds
from metaopt.search.loop import SearchContext
from metaopt.search.reporting import ChampionRecord, TrackingError
from metaopt.search.results import MethodRow, rank
from metaopt.search.selection import Candidate, Decision, pick, transfer_verdict
from metaopt.search.trial import TrialConfig, TrialResult, execute_trial, score_trial, trial_tags
from metaopt.tasks.metrics import Metric


def method_rows(results: list[TrialResult], metric: Metric, strategy_name: str | None = None) -> list[MethodRow]:
    """One row per method: trial counts by outcome and the best finished trial by validation, best first."""
    rows: dict[str, MethodRow] = {}
    for result in results:
        row = rows.setdefault(result.method, MethodRow(result.method, strategy=strategy_name))
        row.count(result.state)
        if result.state == "complete":
            row.offer(result.value, metric, trial_number=result.number, run_id=result.run_id, hparams=result.hparams)
    return rank(list(rows.values()), metric)


def verdict(scored: list[MethodRow], scores: dict[str, TaskScores], metric: Metric, limit: str | None = None) -> str | None:
    """Does meta-learning pay? The best meta-learner by validation against the best baseline, on their test tasks.

    The family's exact ``limit`` (a method no learner can beat in expectation) is a bound, not an alternative: it is
    not the baseline compared with.
    """
    def best(baseline: bool) -> Candidate | None:
        row = next((r for r in scored if r.method in scores and r.method != limit
                    and is_baseline(r.method) == baseline), None)
        return None if row is None else Candidate(row.method, row.run_id, scores[row.method], row.trial_number)

    return transfer_verdict(best(False), best(True), metric)


def decide_champion(key: str, candidates: list[Candidate], record: ChampionRecord | None, metric: Metric,
                    score: Callable[[str], TaskScores]) -> Decision:
    """Whether the best of ``candidates`` by mean test score replaces the key's champion ``record``, paired.

    The champion's recorded scores are used where they pair with every candidate's; otherwise
    (recorded by an older metaopt, or not at all) ``score(run_id)`` scores it once. A search
    passes its best trial by validation; ``metaopt select`` each method's best.
    """
    champion = None
    if record is not None:
        scores = record.scores
        if scores is None or not all(scores.pairs_with(c.scores) for c in candidates):
            scores = score(record.run_id)
        champion = Candidate(record.method, record.run_id, scores)
    others = [c for c in candidates if champion is None or c.run_id != champion.run_id]
    return pick(key, others or [champion], champion, metric)


def score_best_per_method(ctx: SearchContext, rows: list[MethodRow], results: list[TrialResult]) -> dict[str, TaskScores]:
    """Each method's best trial on the test tasks of the key, once, on the executor; recorded with the trial."""
    job = ctx.job
    by_number = {r.number: r for r in results}
    best = [row for row in rows if row.trial_number is not None]
    if best:
        ctx.progress("testing", {"methods": [row.method for row in best]})
    handles = {}
    for row in best:
        result = by_number[row.trial_number]
        handles[ctx.submit(score_trial, result.checkpoint, result.run_id, job, ctx.trial_tracker,
                           job.resources.cpus_per_trial)] = row
    scores: dict[str, TaskScores] = {}
    while handles:
        for done in ctx.wait(list(handles)):
            row = handles.pop(done.handle)
            if done.error is not None:
                ctx.progress("warning", {"message": f"test evaluation of {row.method} failed: {done.error!r}"})
                continue
            scores[row.method] = done.value
            row.test = done.value.summary()
            if row.run_id:
                ctx.tracker.record_test(row.run_id, done.value)
    return scores


def retrain_seeds(ctx: SearchContext, rows: list[MethodRow], results: list[TrialResult],
                  scores: dict[str, TaskScores]) -> dict[str, TaskScores]:
    """With ``budget.seeds`` N > 1: each scored method's best configuration trained again with N - 1 other training
    seeds (runs tagged ``metaopt.role=seed`` and ``metaopt.seed_of``, nested under that trial's run, outside the
    search's budget and its study), each scored on the same test tasks (a resumed search reuses the seeds scored before
    its driver stopped). A method's scores become the mean over its N seeds
    task by task (``evaluation.across_seeds``: what the verdict and the champion decision pair), with the seeds'
    spread; recorded with its best trial's run."""
    job = ctx.job
    if job.budget.seeds <= 1 or not scores:
        return scores
    by_number = {r.number: r for r in results}
    training = {}
    seeds = {method: [score] for method, score in scores.items()}
    for row in rows:
        if row.method not in scores or row.trial_number is None:
            continue
        for offset in range(1, job.budget.seeds):
            recorded = ctx.tracker.seed_scores(row.run_id, job.seed + offset) if row.run_id else None
            if recorded is not None:  # a resumed search: this seed was trained and scored before its driver stopped
                seeds[row.method].append(recorded)
                continue
            tags = {**trial_tags(ctx.search_id, job, row.method, row.trial_number), "metaopt.role": "seed",
                    "metaopt.seed_of": row.run_id or "", "metaopt.training_seed": str(job.seed + offset)}
            if row.run_id:  # MLflow nests the seeds under the trial whose configuration they retrain
                tags["mlflow.parentRunId"] = row.run_id
            run_id = ctx.tracker.create_trial_run(tags, f"{row.method}-{row.trial_number}-seed{offset}")
            config = TrialConfig(search_id=ctx.search_id, number=row.trial_number, method=row.method,
                                 hparams=by_number[row.trial_number].hparams, job=job,
                                 checkpoint_dir=str(ctx.workdir / "checkpoints" / ctx.search_id),
                                 cpus=job.resources.cpus_per_trial, run_id=run_id, prunable=False, seed_offset=offset)
            training[ctx.submit(execute_trial, config, ctx.trial_tracker)] = row
    ctx.progress("testing", {"methods": [f"{row.method} ({job.budget.seeds} seeds)" for row in rows
                                         if row.method in scores]})
    scoring = {}
    while training:
        for done in ctx.wait(list(training)):
            row, result = training.pop(done.handle), done.value
            if done.error is None and result.state == "complete":
                scoring[ctx.submit(score_trial, result.checkpoint, result.run_id, job, ctx.trial_tracker,
                                   job.resources.cpus_per_trial)] = (row, result.run_id)
            else:
                why = repr(done.error) if done.error is not None else result.reason
                ctx.progress("warning", {"message": f"a seed of {row.method} did not finish: {why}"})
    while scoring:
        for done in ctx.wait(list(scoring)):
            row, run_id = scoring.pop(done.handle)
            if done.error is None:
                seeds[row.method].append(done.value)
                if run_id:
                    ctx.tracker.record_test(run_id, done.value)
    combined = {}
    for row in rows:
        if row.method in seeds:
            combined[row.method] = across_seeds(seeds[row.method])
            row.test = combined[row.method].summary()
            if row.run_id:
                ctx.tracker.record_test(row.run_id, combined[row.method])
    return combined


def champion_of_search(ctx: SearchContext, best: Candidate) -> tuple[Decision | None, str | None, list[str]]:
    """The champion decision for the search's best, and the version the tracker recorded; nothing moves on trouble."""
    key, job = ctx.job.family.key, ctx.job
    try:
        record = ctx.tracker.champion(key)
    except TrackingError as exc:
        return _noted(ctx, None, f"champion of {key} unknown, nothing moved: {exc}")

    def score(run_id: str) -> TaskScores:
        ctx.progress("testing", {"methods": [f"{record.method} (the champion, no recorded test scores)"]})
        (done,) = ctx.wait([ctx.submit(score_trial, None, run_id, job, ctx.trial_tracker,
                                       job.resources.cpus_per_trial)])
        if done.error is not None:
            raise _Unscored(f"the champion of {key} could not be scored, nothing moved: {done.error!r}")
        ctx.tracker.record_test(run_id, done.value)
        return done.value

    try:
        decision = decide_champion(key, [best], record, ctx.metric, score)
    except _Unscored as exc:
        return _noted(ctx, None, str(exc))
    try:
        return decision, ctx.tracker.record_decision(decision), []
    except TrackingError as exc:
        return _noted(ctx, decision, f"the champion decision could not be recorded: {exc}")


class _Unscored(Exception):  # noqa: N818 - a branch, not an error
    """The champion could not be scored: nothing moves."""


def _noted(ctx: SearchContext, decision: Decision | None, note: str) -> tuple[Decision | None, None, list[str]]:
    ctx.progress("warning", {"message": note})
    return decision, None, [note]
