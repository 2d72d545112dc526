"""Plots the experiment commands write (headless: matplotlib's Agg backend, imported only when a plot is made)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple


class Panel(NamedTuple):
    """One panel of a line figure: which value of each point to draw, and its labels."""

    y: str
    title: str
    xlabel: str
    ylabel: str


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def line_panels(
    series: Mapping[str, Sequence[Mapping[str, float]]], x: str, panels: Sequence[Panel], path: Path
) -> Path:
    """Side-by-side panels in which every named series of points is one line; written to `path`."""
    plt = pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for axis, panel in zip(axes[0], panels, strict=True):
        for name, points in series.items():
            axis.plot([p[x] for p in points], [p[panel.y] for p in points], marker="o", label=name)
        axis.set(title=panel.title, xlabel=panel.xlabel, ylabel=panel.ylabel)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
