"""`python -m surgvqa.train`: the training stages headless (also the `accelerate launch` entry point for DDP).

It builds the data step if needed (single process only: DDP processes must never race to write it), then runs
`stages.run_stages`, the same stage entries notebooks 02 and 03 call.
"""
from __future__ import annotations

import json
import os

import torch

from .config import Config
from .datastep import load_run_data
from .stages import STAGE_NAMES, run_stages
from .trainer import is_main_process


def main(argv: list[str] | None = None) -> None:
    import argparse

    from .repro import set_seed

    parser = argparse.ArgumentParser(description="Run training stages headless, e.g. under `accelerate launch`.")
    parser.add_argument("--params", default="params/default.yaml")
    parser.add_argument("--stage", nargs="+", default=list(STAGE_NAMES), choices=STAGE_NAMES)
    parser.add_argument("--no-resume", action="store_true", help="start over even if an interrupted run exists")
    args = parser.parse_args(argv)
    cfg = Config.from_yaml(args.params)
    set_seed(cfg.seed)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.cuda.is_available():
        # Without it Trainer on CPU does not shard the data: each process would train on all of it.
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    results = run_stages(cfg, load_run_data(cfg, build=world == 1), args.stage, resume=not args.no_resume)
    if is_main_process():
        for name, result in results.items():
            if result is not None:
                print(json.dumps({"stage": name, "world_size": world, **{k: result.metrics()[k] for k in (
                    "global_step", "epochs", "wall_time_s", "train_samples_per_s", "final_train_loss", "best_eval_loss")}}))


if __name__ == "__main__":
    main()
