"""What every numbered notebook does right after its parameters cell."""
from __future__ import annotations

import yaml

from . import plots, repro
from .config import Config


def start(cfg: Config) -> Config:
    """Seed, set the plot style, create the run directories, and show the params in use."""
    repro.set_seed(cfg.seed)
    plots.use_style()
    for d in (cfg.run_dir, cfg.metrics_dir, cfg.checkpoints_dir, cfg.data_dir, cfg.figures_dir):
        d.mkdir(parents=True, exist_ok=True)
    print(f"profile={cfg.profile}  params={cfg.params_source}  hash={cfg.params_hash()}  run_dir={cfg.run_dir}")
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip())
    return cfg
