"""PNG plots: response-length histograms per model or round, and accuracy against mean length.

Figures are built with matplotlib's object API and written by the project's one saving helper: no pyplot state and no
global backend switch, so importing this module changes nothing for a caller that draws on screen.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from verl_thinkprune.presentation import save_figure

FIGURE_SIZE = (7, 4.5)


def length_histograms(lengths: dict[str, Sequence[int]], path: Path, bins: int = 40) -> Figure:
    """One translucent histogram per model or round, on shared bins, so the shift to shorter answers shows."""
    figure = Figure(figsize=FIGURE_SIZE)
    axes = figure.subplots()
    everything = [length for values in lengths.values() for length in values] or [0, 1]
    low, high = min(everything), max(max(everything), min(everything) + 1)
    edges = [low + (high - low) * i / bins for i in range(bins + 1)]
    for label, values in lengths.items():
        axes.hist(values, bins=edges, alpha=0.5, label=f"{label} (mean {sum(values) / max(len(values), 1):.0f})")
    axes.set_xlabel("response length (tokens)")
    axes.set_ylabel("responses")
    axes.set_title("Response lengths")
    axes.legend()
    save_figure(figure, path)
    return figure


def accuracy_vs_length(series: dict[str, Sequence[tuple[str, float, float]]], path: Path) -> Figure:
    """pass@1 against mean length: each series (ThinkPrune rounds, budget-forcing budgets) a labelled line."""
    figure = Figure(figsize=FIGURE_SIZE)
    axes = figure.subplots()
    for name, points in series.items():
        xs, ys = [p[1] for p in points], [100 * p[2] for p in points]
        axes.plot(xs, ys, marker="o", label=name)
        for label, x, y in zip((p[0] for p in points), xs, ys, strict=True):
            axes.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes.set_xlabel("mean response length (tokens)")
    axes.set_ylabel("pass@1 (%)")
    axes.set_title("Accuracy against length")
    axes.legend()
    save_figure(figure, path)
    return figure
