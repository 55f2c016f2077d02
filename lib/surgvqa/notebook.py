"""What every numbered notebook does right after its parameters cell."""
from __future__ import annotations

from typing import Any

import yaml

from . import plots, repro
from .config import Config


def start(params_file: str, overrides: dict[str, Any] | None = None) -> Config:
    """Load and validate the params, seed, set the plot style, create the run folders, show the params."""
    cfg = Config.from_yaml(params_file, overrides)
    repro.set_seed(cfg.seed)
    plots.use_style()
    cfg.paths.make()
    print(f"profile={cfg.profile}  params={cfg.params_source}  hash={cfg.params_hash()}  run_dir={cfg.paths.run}")
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip())
    return cfg
