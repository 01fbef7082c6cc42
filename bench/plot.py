"""Pictures of benchmark curves: a PNG line chart."""

from __future__ import annotations

from pathlib import Path


def line_png(
    path: Path, xs: list[float], ys: list[float], *, xlabel: str, ylabel: str, title: str
) -> None:
    """Draw ``ys`` against ``xs`` into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(8, 4), dpi=100)
    axes.plot(xs, ys, linewidth=1.5)
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    pyplot.close(figure)
