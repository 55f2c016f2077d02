"""What every numbered notebook does right after its parameters cell."""
from __future__ import annotations

import html
import warnings
from typing import Any

import yaml

from . import plots, repro
from .config import Config, shown_path

# Library deprecation notices that say nothing about the study (they would sit in the reports in red).
QUIET_WARNINGS = (
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),  # transformers 5, raised inside its own Trainer
)


def start(params_file: str, overrides: dict[str, Any] | None = None) -> Config:
    """Load and validate the params, seed, set the plot style, create the run folders, show the params."""
    cfg = Config.from_yaml(params_file, overrides)
    repro.set_seed(cfg.seed)
    plots.use_style()
    for category, message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    cfg.paths.make()
    show_params(cfg)
    return cfg


def params_summary(cfg: Config) -> str:
    """One line: profile, params file, hash and run folder (paths relative to the project)."""
    return f"profile={cfg.profile}  params={cfg.params_source}  hash={cfg.params_hash()}  run_dir={shown_path(cfg.paths.run)}"


def params_html(cfg: Config) -> str:
    """The summary line, and the resolved params folded into a <details> block (the hash stays visible)."""
    resolved = yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip()
    return (f"<p><code>{html.escape(params_summary(cfg))}</code></p>"
            f"<details><summary>resolved params (hash <code>{cfg.params_hash()}</code>, "
            f"{len(resolved.splitlines())} lines)</summary><pre>{html.escape(resolved)}</pre></details>")


def show_params(cfg: Config) -> None:
    """In a notebook (and its HTML report) the folded block; elsewhere the summary line and the YAML."""
    from IPython import get_ipython
    from IPython.display import display

    plain = params_summary(cfg) + "\n" + yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip()
    if get_ipython() is None:
        print(plain)
    else:
        display({"text/html": params_html(cfg), "text/plain": plain}, raw=True)
