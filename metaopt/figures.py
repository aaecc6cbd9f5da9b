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


def plot_learned_values(trajectory: list[tuple[int, dict[str, float]]], path: Path) -> Path:
    """Values a learner tunes itself, by meta-iteration: one panel per name group (the part before the first ``/``).

    The hypergradient learner's ``inner_lr/<layer>/<step>``, ``weight_decay`` and ``outer_lr``
    give three panels; positive values are drawn on a log scale.
    """
    steps = [it for it, _ in trajectory]
    groups: dict[str, list[str]] = {}
    for name in trajectory[0][1]:
        groups.setdefault(name.split("/", 1)[0], []).append(name)
    figure, axes = plt.subplots(1, len(groups), figsize=(4.4 * len(groups), 3.8), squeeze=False)
    for ax, (group, names) in zip(axes[0], groups.items()):
        for name in names:
            label = name.split("/", 1)[1] if "/" in name else name
            ax.plot(steps, [values[name] for _, values in trajectory], lw=1, label=label)
        ax.set(title=group.replace("_", " "), xlabel="meta-iteration")
        if all(values[name] > 0 for _, values in trajectory for name in names):
            log_y(ax)
        if 1 < len(names) <= 12:
            ax.legend(fontsize=6)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
