"""Figures as files (matplotlib, no window): what the search and tracking layers draw."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402


def log_y(ax: plt.Axes) -> None:
    """A log y axis with plain tick labels (3.3, not 3.3x10^0)."""
    ax.set_yscale("log")
    for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        axis(matplotlib.ticker.FormatStrFormatter("%.3g"))


def plot_learned_hyperparameters(trajectory: list[tuple[int, dict[str, float]]], path: Path) -> Path:
    """The hypergradient learner's values by meta-iteration: inner rates (per layer and step), weight decay, outer rate."""
    steps = [it for it, _ in trajectory]
    names = list(trajectory[0][1])
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = (("inner learning rates", [n for n in names if n.startswith("inner_lr/")]),
              ("inner weight decay", ["weight_decay"]), ("outer learning rate", ["outer_lr"]))
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            ax.plot(steps, [values[key] for _, values in trajectory], lw=1, label=key.removeprefix("inner_lr/"))
        ax.set(title=title, xlabel="meta-iteration")
        log_y(ax)
        if 1 < len(keys) <= 12:
            ax.legend(fontsize=6)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
