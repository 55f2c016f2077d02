"""Ablation: do more training wordings (`data.out_wordings`) make the embedded language model understand wordings it
never read? Val protocol: the text model (stage 0, then stage 2 reading the questions, with stage 1's processor) of
each arm is scored on the val rows in their training wording (`val`) and in a val wording (`val_wording`, `wording.VAL_WORDINGS`); never a
test row. The arms differ only in the out rows' wordings (and the tokenizer, which reads every generated wording in
both arms), so the val-wording rows are the same rows in both: the difference between arms is paired.

    python ablations/out_wordings.py --params params/default.yaml --arms 3 40

Writes reports/ablations/out_wordings.json (what was run, the command, the commit, the date, per arm macro balanced
accuracy with its interval, exact accuracy and the share of answers from another type's vocabulary, and the paired
difference of each arm against the first).
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pandas as pd

from surgvqa import checkpoints, datastep, evaluate, models, stages
from surgvqa.collate import vqa_examples
from surgvqa.config import Config

import record  # ablations/record.py, beside this script
from surgvqa.data import Dataset
from surgvqa.systems import VAL_WORDING

SPLITS = ("val", VAL_WORDING)


def arm_config(cfg: Config, k: int, root: Path) -> Config:
    """The arm of the params file's own `data.out_wordings` is the run itself (its data step, stage 0 and text model,
    reused by their stamps); any other arm writes under `root/out<k>`."""
    if k == cfg.data.out_wordings:
        return dataclasses.replace(cfg, reports_dir=None, figures_dir=None)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, out_wordings=k), run_root=str(root / f"out{k}"),
                               reports_dir=None, figures_dir=None)


def score_arm(arm: Config) -> pd.DataFrame:
    data = datastep.load_run_data(arm)
    # stage 2's text model takes its processor from stage 1's graft: without stage 1 in the list, a stage1/ left on
    # disk by other code would be read as it stands. A finished stage is reused: a rerun only scores.
    stages.run_stages(arm, data, ["stage0", "stage1", "stage2_text"])
    rows = evaluate.evaluation_rows(data.splits, arm.eval.max_rows, arm.seed, val_wording=True)
    rows = Dataset([r for r in rows.rows if r["split"] in SPLITS], rows.root, rows.audio_root)
    processor = models.load_graft_processor(checkpoints.stage_dir(arm, "stage0") / "final")  # the base VLM's
    model = checkpoints.load_text_base(arm, checkpoints.stage_dir(arm, "stage2_text") / "merged").eval()
    out = evaluate.run_model(model, processor, vqa_examples(rows, "text"), arm.eval, f"out_wordings {arm.data.out_wordings}",
                             cfg=arm)
    return evaluate.scored_frame("text_finetuned", rows.rows, out["predictions"])


def run(cfg: Config, arms: list[int], root: Path) -> dict:
    frames = {k: score_arm(arm_config(cfg, k, root)) for k in arms}
    result = {}
    for k, frame in frames.items():
        acc, ci = evaluate.summarize(frame, cfg.eval)
        bal = evaluate.summarize_balanced(frame, {}, cfg.eval)
        result[str(k)] = {"accuracy": {s: acc.get(s) for s in SPLITS},
                          "balanced_accuracy": {s: bal["balanced_accuracy"].get(s) for s in SPLITS},
                          "balanced_ci95": {s: bal["balanced_ci95"].get(s) for s in SPLITS},
                          "another_type_answers": {s: evaluate.another_type_share(frame, cfg.eval)[0].get(s) for s in SPLITS}}
    first = arms[0]
    paired = []
    for k in arms[1:]:  # the same val-wording rows, answered by two recipes: systems named by their arm
        both = pd.concat([frames[k].assign(system=f"out{k}"), frames[first].assign(system=f"out{first}")])
        claims = [(f"out{k}", f"out{first}", 0.0, SPLITS, evaluate.BALANCED)]
        paired += evaluate.paired_comparisons(both, cfg.eval, claims)
    return {"what": "text model (stage 0 + stage 2 reading the questions) per data.out_wordings arm, scored on the val rows "
                    "in their training wording and in a val wording (never test)", "arms": result, "paired": paired}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = record.parser(__doc__, "out_wordings")
    parser.add_argument("--arms", type=int, nargs="+", default=[3, 40])
    args = parser.parse_args(argv)
    cfg, root = record.setup(args, "out_wordings")
    record.write("out_wordings", run(cfg, args.arms, root), argv, args.params)


if __name__ == "__main__":
    main()
