"""Seed spread of stage 2: the graft's and the text model's stage 2 trained again under other seeds, on the
reference run's data, stage 0 and stage 1, and scored on the same val and dev-test rows as the run (never the
final test). A gap between two systems smaller than this spread is not a finding.

    python -m surgvqa.seed_spread --params params/default.yaml --seeds 1 2

Each extra seed trains in `<run>/seed_spread/seed<N>/` (stage 0, stage 1 and the caches are the run's, linked);
the run's own stage 2 is the first seed (its notebook-04 predictions). Writes `metrics/seed_spread.json` (merged
into metrics.json by `surgvqa.report`, shown in RESULTS.md and README) and a copy under the reports' `ablations/`.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from . import checkpoints, datastep, evaluate, models, stages
from .collate import vqa_examples
from .config import REPO_ROOT, Config
from .systems import DEV_SPLITS

SPREAD_SYSTEMS = {"audio_finetuned": "audio", "text_finetuned": "text"}  # system -> how it takes the question


def linked_run(cfg: Config, variant: Config, parts) -> Config:
    """`variant` (the run's config with other settings and its own `run_root`) with each of `parts` (folders under
    its run dir: the data, a stage, the caches) linked to the same folder of `cfg`'s run, so it reuses them instead
    of making them again; a part that exists already is left as it is."""
    for part in parts:
        source = cfg.paths.run / part.relative_to(variant.paths.run)
        part.parent.mkdir(parents=True, exist_ok=True)
        if not part.exists():
            part.symlink_to(source.resolve(), target_is_directory=True)
    return variant


def seed_config(cfg: Config, seed: int) -> Config:
    """The run's config under another seed, writing in its own folder: the data, stage 0, stage 1 and the caches
    linked to the run's, so only stage 2 trains (its stamp names the seed)."""
    root = cfg.paths.run / "seed_spread" / f"seed{seed}"
    seeded = dataclasses.replace(cfg, seed=seed, run_root=str(root), reports_dir=None, figures_dir=None)
    return linked_run(cfg, seeded, (seeded.paths.data, seeded.paths.stage("stage0"), seeded.paths.stage("stage1"),
                                    seeded.paths.run / "cache"))


def score(cfg: Config, seeded: Config, rows) -> pd.DataFrame:
    """The seed's graft and text model on the run's scored rows (`evaluate.evaluation_rows` of the run's seed)."""
    processor = models.load_graft_processor(checkpoints.stage_dir(seeded, "stage1") / "final")
    trained = {"audio_finetuned": lambda: models.load_graft(checkpoints.stage_dir(seeded, "stage2") / "merged",
                                                            **models.load_kwargs(seeded))[0],
               "text_finetuned": lambda: checkpoints.load_text_base(seeded, checkpoints.stage_dir(seeded, "stage2_text") / "merged")}
    frames = []
    for system, mode in SPREAD_SYSTEMS.items():
        out = evaluate.run_model(trained[system]().eval(), processor, vqa_examples(rows, mode), seeded.eval,
                                 f"seed {seeded.seed}: {system}", cfg=seeded)
        frames.append(evaluate.scored_frame(system, rows.rows, out["predictions"]))
    return pd.concat(frames, ignore_index=True)


def balanced_by_split(predictions: pd.DataFrame, options) -> dict[str, dict[str, float | None]]:
    """Macro balanced accuracy of each spread system per dev split (`evaluate.summarize_balanced`)."""
    out = {}
    for system in SPREAD_SYSTEMS:
        sel = predictions[(predictions["system"] == system) & predictions["split"].isin(DEV_SPLITS)]
        bal = evaluate.summarize_balanced(sel, {}, options)["balanced_accuracy"]
        out[system] = {s: bal.get(s) for s in DEV_SPLITS}
    return out


def spread(per_seed: dict[int, dict]) -> dict[str, dict[str, dict]]:
    """Per system and split: mean, sample standard deviation and range over the seeds."""
    out: dict[str, dict[str, dict]] = {}
    for system in SPREAD_SYSTEMS:
        out[system] = {}
        for split in DEV_SPLITS:
            values = [v[system][split] for v in per_seed.values() if v[system][split] is not None]
            if values:
                out[system][split] = {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                                      "min": float(min(values)), "max": float(max(values)), "n": len(values)}
    return out


def run_seed_spread(cfg: Config, seeds: list[int]) -> dict:
    if cfg.seed in seeds:
        raise ValueError(f"seed {cfg.seed} is the run's own (its stage 2 is already the first seed)")
    if not (checkpoints.stage_dir(cfg, "stage1") / "stage.json").is_file():
        raise FileNotFoundError(f"{checkpoints.stage_dir(cfg, 'stage1')}: the run's stage 1 has not finished")
    data = datastep.load_run_data(cfg, build=False)
    rows = evaluate.evaluation_rows(data.splits, cfg.eval.max_rows, cfg.seed)  # the dev rows the run scored
    per_seed = {}
    for seed in seeds:
        seeded = seed_config(cfg, seed)
        for mode in ("audio", "text"):  # from the run's stage 1; a finished one is reused: a rerun only scores
            stages.train_stage2(seeded, stages.prepare_stage2(seeded, data, mode, stage1_of=cfg))
        per_seed[seed] = balanced_by_split(score(cfg, seeded, rows), cfg.eval)
    # the run's own seed last: its notebook 04 may still be running while the other seeds train
    reference = evaluate.load_predictions(cfg)
    reference = reference[reference["system"].isin(list(SPREAD_SYSTEMS)) & reference["split"].isin(DEV_SPLITS)]
    if reference.empty:
        raise FileNotFoundError(f"{cfg.paths.eval}: no predictions of {list(SPREAD_SYSTEMS)}: run notebook 04 first "
                                f"(the seeds' trained stage 2 is kept: a rerun only scores)")
    per_seed = {cfg.seed: balanced_by_split(reference, cfg.eval), **per_seed}
    return {"seeds": sorted(per_seed), "per_seed": {str(k): v for k, v in sorted(per_seed.items())},
            "spread": spread(per_seed), "rows": {s: int((reference["split"] == s).sum() // len(SPREAD_SYSTEMS)) for s in DEV_SPLITS},
            "what": "stage 2 of the graft and the text model under each seed (LoRA initialisation, conversation "
                    "draws, data order); data, stage 0 and stage 1 of the run; macro balanced accuracy on the run's "
                    "val and dev-test rows"}


def write(cfg: Config, result: dict, argv: list[str]) -> list[Path]:
    """metrics/seed_spread.json (with the params) and its copy under the reports' ablations/, with the command,
    commit and date."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    record = {**result, "command": "python -m surgvqa.seed_spread " + " ".join(argv), "commit": commit,
              "date": datetime.date.today().isoformat()}
    paths = [cfg.write_metrics("seed_spread", record)]
    copy = cfg.paths.reports / "ablations" / "seed_spread.json"
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(paths[0].read_text())
    return paths + [copy]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params/default.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--run-root", default=None)
    args = parser.parse_args(argv)
    cfg = Config.from_yaml(args.params, {"run_root": args.run_root} if args.run_root else None)
    result = run_seed_spread(cfg, args.seeds)
    for path in write(cfg, result, argv):
        print(f"[seed_spread] {path}")
    print(json.dumps(result["spread"], indent=2))


if __name__ == "__main__":
    main()
