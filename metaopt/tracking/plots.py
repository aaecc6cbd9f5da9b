"""The figures and the trial table a search leaves on its MLflow parent run."""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import optuna

from metaopt.figures import log_y
from metaopt.search.results import SearchSummary
from metaopt.search.trial import ADAPT_MS
from metaopt.tasks.metrics import Metric
from metaopt.tracking.interactive import MIN_IMPORTANCE_TRIALS, drawn_methods, pareto_names, write_interactive

Curves = Callable[[str], list[tuple[int, float]]]  # run id -> (iteration, validation score) points


def write_search_report(summary: SearchSummary, study: optuna.Study | None, curves: Curves, out: Path) -> list[Path]:
    """Write ``trials.csv`` and the search's figures into ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [_trial_table(summary, out / "trials.csv")]
    figures = {
        "best_so_far_per_method.png": lambda: _best_so_far(summary),
        "val_curves_top5.png": lambda: _top_curves(summary, curves),
    }
    if study is not None and len(study.directions) > 1:  # two objectives: the history of the first, the front
        figures["optimization_history.png"] = lambda: optuna.visualization.matplotlib.plot_optimization_history(
            study, target=lambda t: t.values[0], target_name=pareto_names(summary)[0]).figure
        figures["pareto_front.png"] = lambda: optuna.visualization.matplotlib.plot_pareto_front(
            study, target_names=pareto_names(summary)).figure
    elif study is not None:
        figures["optimization_history.png"] = lambda: optuna.visualization.matplotlib.plot_optimization_history(
            study).figure
        for method, per_method in drawn_methods(study, summary, MIN_IMPORTANCE_TRIALS).items():  # figures.html's rule
            figures[f"param_importances_{method}.png"] = lambda s=per_method: \
                optuna.visualization.matplotlib.plot_param_importances(s).figure
    for name, make in figures.items():
        try:
            with warnings.catch_warnings():  # Optuna's "experimental" and few-trials notes, on every search
                warnings.simplefilter("ignore")
                figure = make()
        except (ValueError, RuntimeError, ZeroDivisionError):  # too few finished trials for this figure
            continue
        figure.tight_layout()
        figure.savefig(out / name, dpi=110)
        plt.close(figure)
        written.append(out / name)
    return written + write_interactive(summary, study, out)


def _trial_table(summary: SearchSummary, path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["number", "method", "state", f"val_{summary.metric.name}", ADAPT_MS, "iterations", "seconds",
                         "reason", "hparams", "run_id"])
        for r in sorted(summary.results, key=lambda r: r.number):
            writer.writerow([r.number, r.method, r.state, r.value, r.extra.get(ADAPT_MS, ""), r.iterations,
                             f"{r.seconds:.1f}", r.reason or "", json.dumps(r.hparams, sort_keys=True), r.run_id or ""])
    return path


def _axis(ax: plt.Axes, metric: Metric) -> None:
    """Losses on a log scale; accuracies and rewards as they are."""
    if not metric.higher_is_better:
        log_y(ax)


def _best_so_far(summary: SearchSummary) -> plt.Figure:
    metric = summary.metric
    figure, ax = plt.subplots(figsize=(7, 4))
    done = sorted((r for r in summary.results if r.state == "complete" and r.value is not None), key=lambda r: r.number)
    if not done:
        raise ValueError("no finished trial")
    for method in dict.fromkeys(r.method for r in done):
        best, xs, ys = None, [], []
        for r in (r for r in done if r.method == method):
            best = r.value if best is None or metric.better(r.value, best) else best
            xs.append(r.number)
            ys.append(best)
        ax.step(xs, ys, where="post", marker="o", label=method)
    ax.set(xlabel="trial", ylabel=f"best validation {metric.label} so far",
           title=f"{summary.search_id}: best so far per method")
    _axis(ax, metric)
    ax.legend(fontsize=8)
    return figure


def _top_curves(summary: SearchSummary, curves: Curves) -> plt.Figure:
    metric = summary.metric
    done = [r for r in summary.results if r.state == "complete" and r.run_id and r.value is not None]
    top = sorted(done, key=lambda r: r.value, reverse=metric.higher_is_better)[:5]
    if not top:
        raise ValueError("no finished trial")
    figure, ax = plt.subplots(figsize=(7, 4))
    for r in top:
        points = curves(r.run_id)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=f"#{r.number} {r.method}")
    ax.set(xlabel="meta-iteration", ylabel=f"validation {metric.label}", title="validation curves of the 5 best trials")
    _axis(ax, metric)
    ax.legend(fontsize=8)
    return figure
