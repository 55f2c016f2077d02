"""Vision pretraining of the embedded tower: targets agree with the region masks and the clip's answers, the losses
train the tower, and a finished run is reused strictly by its stamp (smoke sizes)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from surgvqa import datastep, models, vision_pretrain
from surgvqa.config import REPO_ROOT, Config
from surgvqa.schema import ANSWER_VOCAB

MASKS = ["dye", "lesion", "fluid", "shaft", "flush", "tool"]


def test_token_shares_average_two_frames_and_two_by_two_patches():
    shares = np.zeros((4, 4, 4, 2), dtype=np.uint8)
    shares[0, 0, 0, 1] = 255  # one patch of one frame: a quarter of a token's patches, half its frames
    tok = vision_pretrain.token_shares(shares)
    assert tok.shape == (2, 2, 2, 2) and tok[0, 0, 0, 1] == pytest.approx(1 / 8) and tok.sum() == pytest.approx(1 / 8)
    with pytest.raises(ValueError, match="tile"):
        vision_pretrain.token_shares(np.zeros((3, 4, 4, 2), dtype=np.uint8))


def test_clip_targets_teach_a_kind_only_where_its_object_is_seen():
    shares = np.zeros((2, 4, 4, len(MASKS)), dtype=np.uint8)
    shares[:, :2, :2, MASKS.index("lesion")] = 255  # the lesion fills the top-left token
    shares[:, 2:, 2:, MASKS.index("tool")] = 30  # the tool covers ~12% of the bottom-right token
    answers = {"lesion_histology_extended": "hyperplastic", "lesion_size_range": ">10", "lesion_site": "rectum",
               "scope_motion_type": "withdrawing", "tool_identification": "snare"}
    t = vision_pretrain.clip_targets(shares, MASKS, answers)
    assert t.seen.shape == (1, 2, 2, len(MASKS)) and t.seen[0, 0, 0, MASKS.index("lesion")] == 1
    assert t.seen[0, 1, 1, MASKS.index("tool")] == 1 and t.seen.sum() == 2
    hist = ANSWER_VOCAB["lesion_histology_extended"].index("hyperplastic")
    assert t.tokens["histology"].tolist() == [[[hist, vision_pretrain.IGNORE], [vision_pretrain.IGNORE, vision_pretrain.IGNORE]]]
    assert t.tokens["tool"][0, 1, 1] == ANSWER_VOCAB["tool_identification"].index("snare")
    assert t.clip == {"site": ANSWER_VOCAB["lesion_site"].index("rectum"),
                      "motion": ANSWER_VOCAB["scope_motion_type"].index("withdrawing")}
    bare = vision_pretrain.clip_targets(shares, MASKS, {"scope_motion_type": "stable"})  # no lesion answer: nothing taught
    assert (bare.tokens["histology"] == vision_pretrain.IGNORE).all() and bare.clip["site"] == vision_pretrain.IGNORE


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("vision_run")
    cfg = Config.from_yaml(REPO_ROOT / "params" / "smoke.yaml",
                           {"run_root": str(root), "train": {"vision_pretrain_epochs": 2},
                            "data": {"voice_engines": ["espeak"], "heldout_engine": None}})  # the tower hears nothing
    return cfg, datastep.load_run_data(cfg)


def _tower(cfg, seed=0):
    from surgvqa.tiny_vlm import build_tiny_qwen2_vl
    from qwen2_vl_audio import Qwen2VLAudioProcessor
    from transformers import WhisperFeatureExtractor

    model, tokenizer, image_processor = build_tiny_qwen2_vl(models.tokenizer_corpus(cfg.seed), seed=seed, **vars(cfg.model.tiny))
    return model.model.visual, Qwen2VLAudioProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                                     feature_extractor=WhisperFeatureExtractor())


def test_pretraining_lowers_the_val_loss_and_a_finished_run_is_reused_strictly(smoke, tmp_path):
    cfg, data = smoke
    visual, processor = _tower(cfg)
    before = {k: v.clone() for k, v in visual.state_dict().items()}
    record = vision_pretrain.pretrain_tower(cfg, visual, processor, data.splits, cfg.paths.data, tmp_path / "vision", "s1")
    assert not record["reused"] and record["train_clips"] > 0 and record["val_clips"] > 0
    first, best = record["history"][0], min(h["val_loss"] for h in record["history"])
    assert np.isfinite(first["train_loss"]) and record["best_val_loss"] == best
    assert any(not torch.equal(before[k], v) for k, v in visual.state_dict().items())  # the tower learned
    assert not any(p.requires_grad for p in visual.parameters())  # and is frozen again
    trained = {k: v.clone() for k, v in visual.state_dict().items()}
    fresh, _ = _tower(cfg)
    again = vision_pretrain.pretrain_tower(cfg, fresh, processor, data.splits, cfg.paths.data, tmp_path / "vision", "s1")
    assert again["reused"] and all(torch.equal(trained[k], v) for k, v in fresh.state_dict().items())
    assert json.loads((tmp_path / "vision" / "vision.json").read_text())["stamp"] == "s1"
    other, _ = _tower(cfg)  # another stamp trains again
    assert not vision_pretrain.pretrain_tower(cfg, other, processor, data.splits, cfg.paths.data, tmp_path / "vision", "s2")["reused"]
