"""Vision pretraining of the embedded tower: the stand-in for Qwen2-VL's ViT pretraining (paper-scale profiles, whose
tower arrives pretrained, skip it; so does data without region masks).

The embedded Qwen2-VL's vision tower starts random and stays frozen, so the language model is given what a random
projection of the frames keeps: their colour, not the polyp. This step, the first phase of stage 0, trains the tower on
the training clips' frames against what the data step knows exactly, at the tokens the language model reads (after
the patch merger: one per 2 x 2 patches x 2 frames):

* which of the region masks (`data.read_regions`: lesion, tool, scope shaft, flush, fluid, dye) is seen in the token;
* where the lesion is seen, its histology and size class; where the tool is seen, its kind (the clip's answers);
* per clip (mean and max of its tokens, as the sight check pools them), the colon segment of a lesion and the
  scope's motion.

Linear heads on the tokens learn these and are thrown away; the tower is kept (`tower.safetensors` in
`<run>/checkpoints/vision/`, with the val losses it reached) and stays, frozen, in the base VLM that stage 0 trains.
`train.vision_pretrain_epochs` (0 = off) is the one setting; the val clips' summed loss picks the epoch kept.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .config import Config
from .data import Dataset, clip_key, load_frames, read_regions
from .schema import ANSWER_VOCAB

SEEN = 0.05  # a mask is "in" a token when it covers this share of the token's pixels
TOKEN_TARGETS = {"histology": "lesion_histology_extended", "size": "lesion_size_range", "tool": "tool_identification"}
CLIP_TARGETS = {"site": "lesion_site", "motion": "scope_motion_type"}
WHERE = {"histology": "lesion", "size": "lesion", "tool": "tool"}  # a token target is taught where its object is seen
IGNORE = -100
BATCH = 16


@dataclass
class ClipTargets:
    """What one clip's tokens (t, h, w) and the clip itself should be told."""

    seen: np.ndarray  # (t, h, w, masks) float 0/1
    tokens: dict[str, np.ndarray]  # TOKEN_TARGETS name -> (t, h, w) int class, IGNORE where not taught
    clip: dict[str, int]  # CLIP_TARGETS name -> class, IGNORE where the clip has no such answer


def token_shares(shares: np.ndarray, merge: int = 2, temporal: int = 2) -> np.ndarray:
    """(T, P, P, masks) uint8 patch shares -> (T/temporal, P/merge, P/merge, masks) float token shares."""
    t, p, _, m = shares.shape
    if t % temporal or p % merge:
        raise ValueError(f"{t} frames x {p} patches do not tile into tokens of {temporal} frames x {merge} patches")
    x = shares.astype(np.float32).reshape(t // temporal, temporal, p // merge, merge, p // merge, merge, m) / 255.0
    return x.mean(axis=(1, 3, 5))


def clip_targets(shares: np.ndarray, masks: list[str], answers: dict[str, str]) -> ClipTargets:
    """The targets of one clip: its region shares (`data.read_regions`) and its short answers per question type."""
    tok = token_shares(shares)
    seen = (tok > SEEN).astype(np.float32)
    tokens = {}
    for name, qtype in TOKEN_TARGETS.items():
        where = seen[..., masks.index(WHERE[name])] > 0
        label = ANSWER_VOCAB[qtype].index(answers[qtype]) if qtype in answers else IGNORE
        tokens[name] = np.where(where & (label != IGNORE), label, IGNORE).astype(np.int64)
    clip = {name: ANSWER_VOCAB[qtype].index(answers[qtype]) if qtype in answers else IGNORE
            for name, qtype in CLIP_TARGETS.items()}
    return ClipTargets(seen, tokens, clip)


def split_clips(ds: Dataset, group: str) -> tuple[list[tuple[str, ...]], dict[str, dict[str, str]], list[str]]:
    """The clips of `ds`'s rows of `group`: (frame paths per clip, answers per clip, clip keys), in first-seen order."""
    frames, answers = {}, {}
    for r in ds.rows:
        if r["group"] != group:
            continue
        k = clip_key(r)
        frames.setdefault(k, tuple(str(p) for p in ds.frame_paths(r)))
        answers.setdefault(k, {})[r["question_type"]] = r["short_answer"]
    keys = list(frames)
    return [frames[k] for k in keys], answers, keys


class Heads(torch.nn.Module):
    """Linear read-outs of the tower's tokens (per token) and of its pooled tokens (per clip)."""

    def __init__(self, hidden: int, masks: int):
        super().__init__()
        self.seen = torch.nn.Linear(hidden, masks)
        self.tokens = torch.nn.ModuleDict({n: torch.nn.Linear(hidden, len(ANSWER_VOCAB[q])) for n, q in TOKEN_TARGETS.items()})
        self.clip = torch.nn.ModuleDict({n: torch.nn.Linear(2 * hidden, len(ANSWER_VOCAB[q])) for n, q in CLIP_TARGETS.items()})


def token_grids(visual, processor, clips: list[np.ndarray]) -> list[torch.Tensor]:
    """Each clip's merged tokens as a (t, h, w, hidden) grid."""
    video_inputs, _ = processor._process_videos([list(c) for c in clips])
    pix = torch.from_numpy(video_inputs["pixel_values_videos"]).to(visual.dtype)
    grid = torch.from_numpy(video_inputs["video_grid_thw"])
    out = visual(pix, grid_thw=grid)
    out = out.pooler_output if hasattr(out, "pooler_output") else out
    merge = visual.spatial_merge_size
    sizes = (grid.prod(-1) // merge**2).tolist()
    return [f.reshape(g[0], g[1] // merge, g[2] // merge, -1) for f, g in zip(torch.split(out, sizes), grid.tolist())]


def losses(heads: Heads, grids: list[torch.Tensor], targets: list[ClipTargets]) -> dict[str, torch.Tensor]:
    """Each target's loss over a batch (a class target over the tokens or clips that have one)."""
    if any(g.shape[:3] != t.seen.shape[:3] for g, t in zip(grids, targets)):
        raise ValueError(f"token grid {tuple(grids[0].shape[:3])} != target grid {targets[0].seen.shape[:3]}")
    tok = torch.cat([g.reshape(-1, g.shape[-1]) for g in grids])
    pooled = torch.stack([torch.cat([g.mean(dim=(0, 1, 2)), g.amax(dim=(0, 1, 2))]) for g in grids])
    seen = torch.from_numpy(np.concatenate([t.seen.reshape(-1, t.seen.shape[-1]) for t in targets]))
    out = {"seen": torch.nn.functional.binary_cross_entropy_with_logits(heads.seen(tok), seen)}
    for name in TOKEN_TARGETS:
        y = torch.from_numpy(np.concatenate([t.tokens[name].reshape(-1) for t in targets]))
        if (y != IGNORE).any():  # a batch where no lesion (or tool) is seen teaches nothing about its kind
            out[name] = torch.nn.functional.cross_entropy(heads.tokens[name](tok), y, ignore_index=IGNORE)
    for name in CLIP_TARGETS:
        y = torch.tensor([t.clip[name] for t in targets])
        if (y != IGNORE).any():
            out[name] = torch.nn.functional.cross_entropy(heads.clip[name](pooled), y, ignore_index=IGNORE)
    return out


@torch.no_grad()
def evaluate_heads(visual, heads: Heads, processor, clips: list[np.ndarray], targets: list[ClipTargets]) -> dict[str, float]:
    """Mean val loss per target, and their sum ("loss"), over batches of `BATCH` clips."""
    parts: dict[str, list[float]] = {}
    for i in range(0, len(clips), BATCH):
        for k, v in losses(heads, token_grids(visual, processor, clips[i:i + BATCH]), targets[i:i + BATCH]).items():
            parts.setdefault(k, []).append(float(v))
    out = {k: float(np.mean(v)) for k, v in parts.items()}
    out["loss"] = float(sum(out.values()))
    return out


def pretrain_tower(cfg: Config, visual, processor, splits: dict[str, Dataset], data_dir: Path, out: Path,
                   stamp: str) -> dict:
    """Train `visual` (in place) for `train.vision_pretrain_epochs` epochs on the training clips, keep the epoch with
    the lowest val loss (val clips), save it to `out/tower.safetensors` with `out/vision.json`; a finished run with
    the same `stamp` (stage 0's: it covers the data, seed, model, options and code) is loaded instead (strictly).
    Returns the record."""
    record_path, weights = out / "vision.json", out / "tower.safetensors"
    if record_path.is_file() and weights.is_file() and json.loads(record_path.read_text()).get("stamp") == stamp:
        visual.load_state_dict(load_file(str(weights)), strict=True)
        return {**json.loads(record_path.read_text()), "reused": True}
    t0 = time.perf_counter()
    info, regions = read_regions(data_dir)
    data = {}
    for split, group in (("train", "train"), ("val", "in_domain")):
        paths, answers, keys = split_clips(splits[split], group)
        missing = [k for k in keys if k not in regions]
        if missing:
            raise KeyError(f"{data_dir / info['file']}: no region masks for clip {missing[0]} ({len(missing)} clips)")
        clips = [load_frames(p) for p in tqdm(paths, desc=f"vision pretraining: {split} frames")]
        data[split] = (clips, [clip_targets(regions[k], info["masks"], answers[k]) for k in keys])
    torch.manual_seed(cfg.seed)
    heads = Heads(visual.config.hidden_size, len(info["masks"]))
    visual.requires_grad_(True).train()
    opt = torch.optim.AdamW([*visual.parameters(), *heads.parameters()], lr=1e-3, weight_decay=0.01)
    rng = np.random.default_rng([cfg.seed, 0x715])
    (train_clips, train_t), (val_clips, val_t) = data["train"], data["val"]
    history, best = [], (float("inf"), None, 0)
    for epoch in range(1, cfg.train.vision_pretrain_epochs + 1):
        order, seen_loss = rng.permutation(len(train_clips)), []
        for i in tqdm(range(0, len(order), BATCH), desc=f"vision pretraining epoch {epoch}", leave=False):
            idx = order[i:i + BATCH]
            loss = sum(losses(heads, token_grids(visual, processor, [train_clips[j] for j in idx]),
                              [train_t[j] for j in idx]).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen_loss.append(float(loss))
        visual.eval()
        val = evaluate_heads(visual, heads, processor, val_clips, val_t)
        visual.train()
        history.append({"epoch": epoch, "train_loss": float(np.mean(seen_loss)), **{f"val_{k}": v for k, v in val.items()}})
        if val["loss"] < best[0]:
            best = (val["loss"], {k: v.detach().clone().contiguous() for k, v in visual.state_dict().items()}, epoch)
    visual.load_state_dict(best[1], strict=True)
    visual.requires_grad_(False).eval()
    out.mkdir(parents=True, exist_ok=True)
    save_file(best[1], str(weights))
    record = {"stamp": stamp, "epochs": cfg.train.vision_pretrain_epochs, "best_epoch": best[2], "best_val_loss": best[0],
              "train_clips": len(train_clips), "val_clips": len(val_clips), "masks": info["masks"], "history": history,
              "wall_time_s": round(time.perf_counter() - t0, 1)}
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    return {**record, "reused": False}
