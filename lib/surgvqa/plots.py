"""Plot style and figure saving, shared by every notebook."""
from __future__ import annotations

from pathlib import Path

import matplotlib

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 130,
    "savefig.bbox": "tight",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 10,
}


def use_style() -> None:
    matplotlib.rcParams.update(STYLE)


def savefig(fig, cfg, name: str) -> Path:
    """Save `fig` as <figures_dir>/<name>.png (figures/ only for the reference profile)."""
    cfg.paths.figures.mkdir(parents=True, exist_ok=True)
    path = Path(cfg.paths.figures) / f"{name}.png"
    fig.savefig(path)
    return path
