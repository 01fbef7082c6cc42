"""Pictures of benchmark curves: a PNG line chart, when matplotlib is installed."""

from __future__ import annotations

from pathlib import Path


def line_png(
    path: Path, xs: list[float], ys: list[float], *, xlabel: str, ylabel: str, title: str
) -> bool:
    """Draw ``ys`` against ``xs`` into ``path``; ``False`` if matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        return False
    figure, axes = pyplot.subplots(figsize=(8, 4), dpi=100)
    axes.plot(xs, ys, linewidth=1.5)
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    pyplot.close(figure)
    return True
