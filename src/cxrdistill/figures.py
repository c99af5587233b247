"""Matplotlib figures without pyplot, shared by every floor that draws (data audit, evaluation, reports).

Each figure is a ``matplotlib.figure.Figure`` on its own Agg canvas: that needs no display, never switches
the process-wide backend under other code, and leaves nothing registered in pyplot's global state.
"""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cxrdistill.files import atomic_write

DPI = 120


def new_figure(size: tuple[float, float]) -> Figure:
    """A figure on an Agg canvas, independent of pyplot."""
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write the figure as PNG (atomically, creating the parent folder)."""
    return atomic_write(path, lambda stream: fig.savefig(stream, dpi=DPI, format="png", bbox_inches="tight"))
