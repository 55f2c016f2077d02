"""Ablation: does vision pretraining (`train.vision_pretrain_epochs`) make the embedded tower see local objects?
Val protocol: the tower alone (no language model), probed from the training clips to the val clips (never a test
clip): the sight check's pooled probes per question type (pixels, colour-texture statistics, a random tower, this
tower) and its local probes per region (is the lesion / tool / ... seen in this token?).

    python ablations/vision_pretrain.py --params params/default.yaml --epochs 0 4 8

Writes reports/ablations/vision_pretrain.json (what was run, the command, the commit, the date, per arm the
pretraining record and both probe tables).
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from surgvqa import datastep, models, sight, vision_pretrain
from surgvqa.config import Config

import record  # ablations/record.py, beside this script


def tower(cfg: Config):
    """The base VLM's tower and processor as stage 0 builds them (seeded), before any training."""
    from qwen2_vl_audio import Qwen2VLAudioProcessor
    from transformers import WhisperFeatureExtractor

    from surgvqa.tiny_vlm import build_tiny_qwen2_vl

    model, tokenizer, image_processor = build_tiny_qwen2_vl(models.tokenizer_corpus(cfg.seed), seed=cfg.seed, **vars(cfg.model.tiny))
    return model, Qwen2VLAudioProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                        feature_extractor=WhisperFeatureExtractor())


def probe(cfg: Config, model, processor, splits) -> dict:
    val_rows = [r for r in splits["val"].rows if r["group"] == "in_domain"]
    order_tr, frames_tr, labels_tr = sight.clip_labels(splits["train"].rows)
    order_va, frames_va, labels_va = sight.clip_labels(val_rows)
    features = {name: {**a, **b} for (name, a), b in zip(
        sight.probe_features(splits["train"], model, processor, order_tr, frames_tr).items(),
        sight.probe_features(splits["val"], model, processor, order_va, frames_va).values())}
    pooled = sight.probe_table(features, {**labels_tr, **labels_va}, order_tr, order_va)
    local = sight.local_sight_check(splits, model, processor, cfg.paths.data, "val", "in_domain")

    def records(table):
        return {i: {k: (None if isinstance(v, float) and np.isnan(v) else (v.item() if hasattr(v, "item") else v))
                    for k, v in row.items()} for i, row in table.iterrows()}

    return {"pooled": records(pooled), "local": records(local)}


def run(cfg: Config, arms: list[int], root: Path) -> dict:
    data = datastep.load_run_data(cfg)
    out = {}
    for epochs in arms:
        arm = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, vision_pretrain_epochs=epochs))
        model, processor = tower(arm)
        record = None
        if epochs:
            record = vision_pretrain.pretrain_tower(arm, model.model.visual, processor, data.splits, cfg.paths.data,
                                                    root / f"epochs{epochs}", f"ablation-{epochs}-{cfg.seed}")
        out[str(epochs)] = {"pretraining": record, **probe(arm, model, processor, data.splits)}
        print(json.dumps({k: out[str(epochs)]["local"][k].get("model_tower") for k in out[str(epochs)]["local"]}))
    return {"what": "the embedded tower before stage 0, per train.vision_pretrain_epochs arm: pooled probes per "
                    "question type and local probes per region, training clips -> val clips (never test)",
            "arms": out}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = record.parser(__doc__, "vision_pretrain")
    parser.add_argument("--epochs", type=int, nargs="+", default=[0, 4, 8])
    args = parser.parse_args(argv)
    cfg, root = record.setup(args, "vision_pretrain")
    record.write("vision_pretrain", run(cfg, args.epochs, root), argv, args.params)


if __name__ == "__main__":
    main()
