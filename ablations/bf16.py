"""Ablation: one training stage under CPU bf16 autocast (`train.<stage>: {bf16: ...}`) against fp32. Val protocol:
seconds per optimizer step of each arm, and the model the stage makes answering the val rows (never a test row):
stage 0's base VLM reading them in text, stage 2's graft hearing them, the text model's stage 2 reading them. Macro
balanced accuracy, and the paired difference bf16 − fp32 with the evaluation's clustered bootstrap against a
one-point margin.

    python ablations/bf16.py --stage stage0 --params params/default.yaml
    python ablations/bf16.py --stage stage2 --params params/default.yaml
    python ablations/bf16.py --stage stage2_text --params params/default.yaml

The arm at the run's own precision is the run's stage (reused when its stamp matches, else trained); the other arm
trains in <root>/<arm>, linking the run's data, caches and the stages it is made from. `train.stage2` serves the
graft (`--stage stage2`) and the text model (`--stage stage2_text`) alike. Run it on an otherwise idle machine:
seconds per step is one of the two results. Writes reports/ablations/<stage>_bf16.json (stage 0's record before
this script took `--stage` was made by ablations/stage0_bf16.py, at the commit it names).
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pandas as pd

from surgvqa import checkpoints, datastep, evaluate, metrics, models, stages
from surgvqa.collate import vqa_examples
from surgvqa.config import STAGE_INPUTS, Config
from surgvqa.data import Dataset
from surgvqa.seed_spread import linked_run

import record  # ablations/record.py, beside this script

MARGIN = -0.01  # the fast issue's bar: accuracy held within one point of macro balanced accuracy
STAGES = ("stage0", "stage2", "stage2_text")
SETTING = {"stage0": "stage0", "stage2": "stage2", "stage2_text": "stage2"}  # the `train.<stage>` a stage trains by


def precision_arm(cfg: Config, root: Path, stage: str, name: str) -> Config:
    bf16, setting = name == "bf16", SETTING[stage]
    given = getattr(cfg.train, setting)
    if bool(given.get("bf16", False)) == bf16:
        return cfg
    arm = dataclasses.replace(cfg, run_root=str(root / name), reports_dir=None, figures_dir=None,
                              train=dataclasses.replace(cfg.train, **{setting: {**given, "bf16": bf16}}))
    # the text model's stage 2 takes its processor from stage 1's graft
    inputs = STAGE_INPUTS[stage] + (("stage1",) if stage == "stage2_text" else ())
    made_from = tuple(arm.paths.stage(s) for s in inputs)
    return linked_run(cfg, arm, (arm.paths.data, arm.paths.run / "cache", *made_from))


def train(arm: Config, data, stage: str):
    if stage == "stage0":
        return stages.train_stage0(arm, data)
    return stages.train_stage2(arm, stages.prepare_stage2(arm, data, stages.MODES[stage]))[1]


def val_answers(arm: Config, val: Dataset, stage: str, system: str) -> pd.DataFrame:
    if stage == "stage0":
        final = checkpoints.stage_dir(arm, "stage0") / "final"
        model, processor, mode = checkpoints.load_text_base(arm, final), models.load_graft_processor(final), "text"
    elif stage == "stage2_text":
        model = checkpoints.load_text_base(arm, checkpoints.stage_dir(arm, "stage2_text") / "merged")
        # the processor the evaluation gives the text model
        processor, mode = models.load_graft_processor(checkpoints.stage_dir(arm, "stage1") / "final"), "text"
    else:
        model, processor = models.load_graft(checkpoints.stage_dir(arm, "stage2") / "merged", **models.load_kwargs(arm))
        mode = "audio"
    out = evaluate.run_model(model.eval(), processor, vqa_examples(val, mode), arm.eval, system, cfg=arm)
    return evaluate.scored_frame(system, val.rows, out["predictions"])


def run(cfg: Config, root: Path, stage: str) -> dict:
    data = datastep.load_run_data(cfg)
    rows = evaluate.evaluation_rows(data.splits, cfg.eval.max_rows, cfg.seed)
    val = Dataset([r for r in rows.rows if r["split"] == "val"], rows.root, rows.audio_root)
    majority = metrics.majority_answers(pd.DataFrame(data.splits["train"].rows))
    arms, frames = {}, {}
    for name in ("fp32", "bf16"):
        arm = precision_arm(cfg, root, stage, name)
        result = train(arm, data, stage)
        frames[name] = val_answers(arm, val, stage, name)
        balanced = evaluate.summarize_balanced(frames[name], majority, cfg.eval)
        arms[name] = {stage: {k: getattr(result, k) for k in ("global_step", "wall_time_s", "best_eval_loss", "reused")},
                      "s_per_step": result.wall_time_s / result.global_step,
                      "val_exact": float(frames[name]["correct"].mean()),
                      "val_macro_balanced": balanced["balanced_accuracy"]["val"],
                      "val_macro_balanced_ci95": balanced["balanced_ci95"]["val"]}
        print(name, arms[name])
    key = evaluate.PAIR_KEY
    both = frames["bf16"].merge(frames["fp32"][key + ["prediction", "correct"]], on=key, suffixes=("", "_b"))
    paired = evaluate.paired_difference(both, cfg.eval, evaluate.BALANCED, MARGIN)
    answers = {"stage0": "the base VLM on the val rows in text mode", "stage2": "the graft on the val rows, heard",
               "stage2_text": "the text model on the val rows, read"}[stage]
    return {"what": f"{stage} in fp32 vs under CPU bf16 autocast: s/step, and {answers} (macro balanced accuracy; "
                    "paired bf16 - fp32 with the evaluation's clustered bootstrap, margin -1 point)",
            "stage": stage, "arms": arms, "bf16_minus_fp32": paired,
            "step_time_ratio": arms["bf16"]["s_per_step"] / arms["fp32"]["s_per_step"],
            "run_arm": "bf16" if getattr(cfg.train, SETTING[stage]).get("bf16") else "fp32"}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = record.parser(__doc__, "bf16")
    p.add_argument("--stage", choices=STAGES, required=True)
    args = p.parse_args(argv)
    name = f"{args.stage}_bf16"
    cfg, root = record.setup(args, name)
    record.write(name, run(cfg, root, args.stage), argv, args.params, script="bf16")


if __name__ == "__main__":
    main()
