"""Rolling metrics over a run, one line per model, drawn to a PNG with matplotlib."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def file_formats() -> list[str]:
    """The file extensions :func:`plot_series` can write (``.png``, ``.svg``, ...)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return sorted(f".{ext}" for ext in FigureCanvasAgg.get_supported_filetypes())


def plot_series(report: dict[str, Any], path: Path, title: str) -> None:
    """Draw each rolling metric of the report against the labelled events, per model."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    series: dict[str, dict[str, list[float]]] = report["series"]
    metrics = sorted({m for s in series.values() for m in s if m.startswith("rolling_")})
    fig, axes = plt.subplots(
        len(metrics), 1, figsize=(9, 3 * len(metrics)), sharex=True, squeeze=False
    )
    for ax, metric in zip(axes[:, 0], metrics, strict=True):
        for name, points in series.items():
            ax.plot(points["labelled"], points[metric], label=name, linewidth=1.2)
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0, 0].set_title(title)
    axes[0, 0].legend(loc="best")
    axes[-1, 0].set_xlabel("labelled events")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
