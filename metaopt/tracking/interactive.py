"""A search's interactive figures: one HTML page, ``report/figures.html`` on the parent run, which MLflow's
artifact viewer shows (plotly, its script inline once, so the page works offline):

- the optimization history: every trial's validation score by trial number, pruned ones
  included (their last score), coloured by method, with the best so far;
- a search of two objectives (``objectives: [primary, adapt_ms]``): Optuna's Pareto front of
  validation score against adaptation cost;
- each trial's validation curve (Optuna's intermediate values);
- per method (the space is conditional on it), with the parameter names MLflow shows: parallel
  coordinates (log axes for log-scaled parameters) and, from ``MIN_IMPORTANCE_TRIALS`` finished
  trials of the method on, parameter importances.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import optuna

from metaopt.search.results import SearchSummary

MIN_IMPORTANCE_TRIALS = 10  # fewer finished trials than this make importances noise
MIN_PARALLEL_TRIALS = 3  # fewer than this draw a line, not a relation


def drawn_methods(study: optuna.Study, summary: SearchSummary, least: int) -> dict[str, optuna.Study]:
    """Each method (never the family's exact limit) with at least ``least`` finished trials, as a study of its own:
    the one rule every per-method figure follows, on this page and in the report's PNGs."""
    found = {}
    for method in dict.fromkeys(r.method for r in summary.results if r.state == "complete"):
        per_method = method_study(study, method) if method != summary.limit else None
        if per_method is not None and sum(t.state == optuna.trial.TrialState.COMPLETE
                                          for t in per_method.trials) >= least:
            found[method] = per_method
    return found


PAGE = "figures.html"


def write_interactive(summary: SearchSummary, study: optuna.Study | None, out: Path) -> list[Path]:
    """Write the search's figures as one HTML page into ``out``; returns it (or nothing without a figure)."""
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Callable[[], object]] = {"optimization history": lambda: _history(summary)}
    target = f"validation {summary.metric.label}"
    if study is not None and len(study.directions) > 1:
        figures["Pareto front: validation score against adaptation cost"] = lambda: \
            optuna.visualization.plot_pareto_front(study, target_names=pareto_names(summary))
    if study is not None:
        figures["validation curves"] = lambda: _curves(summary, study)
        for method, per_method in drawn_methods(study, summary, MIN_PARALLEL_TRIALS).items():
            figures[f"{method}: parallel coordinates"] = lambda s=per_method: \
                optuna.visualization.plot_parallel_coordinate(s, target_name=target)
        for method, per_method in drawn_methods(study, summary, MIN_IMPORTANCE_TRIALS).items():
            figures[f"{method}: parameter importances"] = lambda s=per_method: \
                optuna.visualization.plot_param_importances(s, target_name=target)
    parts = []
    for title, make in figures.items():
        try:
            with warnings.catch_warnings():  # Optuna's "experimental" and few-trials notes
                warnings.simplefilter("ignore")
                figure = make()
        except (ValueError, RuntimeError, ZeroDivisionError):  # too few trials for this figure
            continue
        html = figure.to_html(include_plotlyjs=not parts, full_html=False)
        parts.append(f"<h2>{title}</h2>\n{html}")
    if not parts:
        return []
    note = (f"<p>Per method: parallel coordinates from {MIN_PARALLEL_TRIALS} finished trials on, parameter "
            f"importances from {MIN_IMPORTANCE_TRIALS} (fewer draw noise); the family's exact limit is a reference "
            "line, not a candidate.</p>")
    page = out / PAGE
    page.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{summary.search_id}</title></head>"
                    f"<body><h1>{summary.search_id} ({summary.key})</h1>{note}{''.join(parts)}</body></html>")
    return [page]


def pareto_names(summary: SearchSummary) -> list[str]:
    """The axes of a two-objective search's Pareto front."""
    return [f"validation {summary.metric.label}", "ms to adapt to a validation task (median)"]


def method_study(study: optuna.Study, method: str) -> optuna.Study | None:
    """The trials of ``method`` as a study of their own, parameters named as in MLflow (``inner_lr``, not ``maml.inner_lr``)."""
    prefix = f"{method}."
    kept = [t for t in study.trials if t.params.get("method") == method
            and t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    if not kept or not any(name.startswith(prefix) for name in kept[0].params):
        return None
    copy = optuna.create_study(direction=study.directions[0])  # the primary metric (of two objectives, the first)
    for t in kept:
        try:
            copy.add_trial(optuna.trial.create_trial(
                state=t.state, value=t.values[0] if t.state == optuna.trial.TrialState.COMPLETE else None,
                params={k[len(prefix):]: v for k, v in t.params.items() if k.startswith(prefix)},
                distributions={k[len(prefix):]: d for k, d in t.distributions.items() if k.startswith(prefix)},
                intermediate_values=t.intermediate_values, user_attrs={"number": t.number},
            ))
        except ValueError:  # an enqueued value outside the space's range: nothing to draw it on
            continue
    return copy if copy.trials else None


def _history(summary: SearchSummary) -> object:
    """Validation score by trial number, finished (dots) and pruned (crosses) trials coloured by method, best so far."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    metric = summary.metric
    figure = go.Figure()
    shown = [r for r in summary.results if r.value is not None and r.state in ("complete", "pruned")]
    if not shown:
        raise ValueError("no trial with a validation score")
    palette = qualitative.Plotly
    limit = [r for r in shown if r.method == summary.limit and r.state == "complete"]
    shown = [r for r in shown if r.method != summary.limit]
    if limit:  # a reference, not a candidate: a line across the trials
        figure.add_hline(y=limit[0].value, line_dash="dash", line_color="grey",
                         annotation_text=f"{summary.limit}: the family's exact limit")
    for i, method in enumerate(dict.fromkeys(r.method for r in shown)):
        for state, symbol in (("complete", "circle"), ("pruned", "x")):
            points = sorted((r for r in shown if r.method == method and r.state == state), key=lambda r: r.number)
            if points:
                figure.add_trace(go.Scatter(
                    x=[r.number for r in points], y=[r.value for r in points], mode="markers", name=f"{method} ({state})",
                    legendgroup=method, marker={"symbol": symbol, "size": 9, "color": palette[i % len(palette)]},
                    text=[f"trial {r.number}: {r.reason or state}" for r in points]))
    best, xs, ys = None, [], []
    for r in sorted((r for r in shown if r.state == "complete"), key=lambda r: r.number):
        best = r.value if best is None or metric.better(r.value, best) else best
        xs.append(r.number)
        ys.append(best)
    figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"shape": "hv", "color": "black"}, name="best so far"))
    figure.update_layout(title=f"{summary.search_id}: validation {metric.label} by trial (pruned: their last score)",
                         xaxis_title="trial", yaxis_title=f"validation {metric.label}",
                         yaxis_type="linear" if metric.higher_is_better else "log")
    return figure


def _curves(summary: SearchSummary, study: optuna.Study) -> object:
    """Each trial's validation curve (what the pruner compared), coloured by method, on the metric's own axis."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    metric = summary.metric
    by_number = {r.number: r for r in summary.results}
    figure = go.Figure()
    methods = list(dict.fromkeys(r.method for r in summary.results))
    palette = qualitative.Plotly
    seen: set[str] = set()
    for t in study.trials:
        result = by_number.get(t.number)
        if result is None or not t.intermediate_values or result.method == summary.limit:
            continue
        steps = sorted(t.intermediate_values)
        if len(steps) > 1000:  # per-episode values (the Wilcoxon pruner): not a curve
            continue
        colour = palette[methods.index(result.method) % len(palette)]
        figure.add_trace(go.Scatter(
            x=steps, y=[t.intermediate_values[s] for s in steps], mode="lines+markers", name=result.method,
            legendgroup=result.method, showlegend=result.method not in seen,
            line={"color": colour, "dash": "dot" if result.state == "pruned" else "solid"},
            text=f"trial {t.number} ({result.state})"))
        seen.add(result.method)
    if not seen:
        raise ValueError("no validation curve")
    figure.update_layout(title=f"validation {metric.label} by meta-iteration, each trial (dotted: pruned)",
                         xaxis_title="meta-iteration", yaxis_title=f"validation {metric.label}",
                         yaxis_type="linear" if metric.higher_is_better else "log")
    return figure
