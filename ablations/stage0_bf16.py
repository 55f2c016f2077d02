"""Ablation: stage 0 under CPU bf16 autocast (`train.stage0: {bf16: true}`, both phases) against the reference fp32
stage 0. Val protocol: seconds per optimizer step of each arm's stage 0, and the base VLM it makes answering the
val rows in text (never a test row), macro balanced accuracy with the paired difference bf16 − fp32.

    python ablations/stage0_bf16.py --params params/default.yaml

The arm at the run's own precision (bf16 since the recipe took it) is the run's own stage 0 (reused when its stamp
matches, else trained); the other arm trains in <root>/<arm>, sharing the run's data and tower caches. Run it on an otherwise idle machine: seconds per step is one
of the two results. Writes reports/ablations/stage0_bf16.json.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pandas as pd

from surgvqa import checkpoints, datastep, evaluate, metrics, models, stages
from surgvqa.collate import vqa_examples
from surgvqa.config import Config
from surgvqa.data import Dataset
from surgvqa.seed_spread import linked_run

import record  # ablations/record.py, beside this script

MARGIN = -0.01  # the fast issue's bar: accuracy held within one point of macro balanced accuracy


def precision_arm(cfg: Config, root: Path, name: str) -> Config:
    bf16 = name == "bf16"
    if bool(cfg.train.stage0.get("bf16", False)) == bf16:
        return cfg
    arm = dataclasses.replace(cfg, run_root=str(root / name),
                              train=dataclasses.replace(cfg.train, stage0={**cfg.train.stage0, "bf16": bf16}))
    return linked_run(cfg, arm, (arm.paths.data, arm.paths.run / "cache"))


def val_answers(arm: Config, val: Dataset, system: str) -> pd.DataFrame:
    final = checkpoints.stage_dir(arm, "stage0") / "final"
    model = checkpoints.load_text_base(arm, final).eval()
    out = evaluate.run_model(model, models.load_graft_processor(final), vqa_examples(val, "text"), arm.eval, system, cfg=arm)
    return evaluate.scored_frame(system, val.rows, out["predictions"])


def run(cfg: Config, root: Path) -> dict:
    data = datastep.load_run_data(cfg)
    rows = evaluate.evaluation_rows(data.splits, cfg.eval.max_rows, cfg.seed)
    val = Dataset([r for r in rows.rows if r["split"] == "val"], rows.root, rows.audio_root)
    majority = metrics.majority_answers(pd.DataFrame(data.splits["train"].rows))
    arms, frames = {}, {}
    for name in ("fp32", "bf16"):
        arm = precision_arm(cfg, root, name)
        result = stages.train_stage0(arm, data)
        frames[name] = val_answers(arm, val, name)
        balanced = evaluate.summarize_balanced(frames[name], majority, cfg.eval)
        arms[name] = {"stage0": {k: getattr(result, k) for k in ("global_step", "wall_time_s", "best_eval_loss", "reused")},
                      "s_per_step": result.wall_time_s / result.global_step,
                      "val_exact": float(frames[name]["correct"].mean()),
                      "val_macro_balanced": balanced["balanced_accuracy"]["val"],
                      "val_macro_balanced_ci95": balanced["balanced_ci95"]["val"]}
        print(name, arms[name])
    key = evaluate.PAIR_KEY
    both = frames["bf16"].merge(frames["fp32"][key + ["prediction", "correct"]], on=key, suffixes=("", "_b"))
    paired = evaluate.paired_difference(both, cfg.eval, evaluate.BALANCED, MARGIN)
    return {"what": "stage 0 (both phases) in fp32 vs under CPU bf16 autocast: s/step, and the base VLM on the val "
                    "rows in text mode (macro balanced accuracy; paired bf16 - fp32 with the evaluation's clustered "
                    "bootstrap, margin -1 point)",
            "arms": arms, "bf16_minus_fp32": paired,
            "step_time_ratio": arms["bf16"]["s_per_step"] / arms["fp32"]["s_per_step"],
            "run_arm": "bf16" if cfg.train.stage0.get("bf16") else "fp32"}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = record.parser(__doc__, "stage0_bf16").parse_args(argv)
    cfg, root = record.setup(args, "stage0_bf16")
    record.write("stage0_bf16", run(cfg, root), argv, args.params)


if __name__ == "__main__":
    main()
