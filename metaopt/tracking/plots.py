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
from metaopt.search.runner import SearchSummary

Curves = Callable[[str], list[tuple[int, float]]]  # run id -> (iteration, val_loss) points


def write_search_report(summary: SearchSummary, study: optuna.Study | None, curves: Curves, out: Path) -> list[Path]:
    """Write ``trials.csv`` and the search's figures into ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [_trial_table(summary, out / "trials.csv")]
    figures = {
        "best_so_far_per_method.png": lambda: _best_so_far(summary),
        "val_curves_top5.png": lambda: _top_curves(summary, curves),
    }
    if study is not None:
        figures["optimization_history.png"] = lambda: optuna.visualization.matplotlib.plot_optimization_history(
            study).figure
        figures["param_importances.png"] = lambda: optuna.visualization.matplotlib.plot_param_importances(study).figure
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
    return written


def _trial_table(summary: SearchSummary, path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["number", "method", "state", "val_loss", "iterations", "seconds", "reason", "hparams", "run_id"])
        for r in sorted(summary.results, key=lambda r: r.number):
            writer.writerow([r.number, r.method, r.state, r.value, r.iterations, f"{r.seconds:.1f}", r.reason or "",
                             json.dumps(r.hparams, sort_keys=True), r.run_id or ""])
    return path


def _best_so_far(summary: SearchSummary) -> plt.Figure:
    figure, ax = plt.subplots(figsize=(7, 4))
    done = sorted((r for r in summary.results if r.state == "complete" and r.value is not None), key=lambda r: r.number)
    if not done:
        raise ValueError("no finished trial")
    for method in dict.fromkeys(r.method for r in done):
        best, xs, ys = float("inf"), [], []
        for r in (r for r in done if r.method == method):
            best = min(best, r.value)
            xs.append(r.number)
            ys.append(best)
        ax.step(xs, ys, where="post", marker="o", label=method)
    ax.set(xlabel="trial", ylabel="best validation loss so far", title=f"{summary.search_id}: best so far per method")
    log_y(ax)
    ax.legend(fontsize=8)
    return figure


def _top_curves(summary: SearchSummary, curves: Curves) -> plt.Figure:
    top = sorted((r for r in summary.results if r.state == "complete" and r.run_id), key=lambda r: r.value)[:5]
    if not top:
        raise ValueError("no finished trial")
    figure, ax = plt.subplots(figsize=(7, 4))
    for r in top:
        points = curves(r.run_id)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=f"#{r.number} {r.method}")
    ax.set(xlabel="meta-iteration", ylabel="validation loss", title="validation curves of the 5 best trials")
    log_y(ax)
    ax.legend(fontsize=8)
    return figure
