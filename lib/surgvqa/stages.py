"""The training stages, one public entry each, which notebooks 02/03 and `python -m surgvqa.train` both call:

- stage 0 (embedded default only): `train_stage0` — the tiny Qwen2-VL learns text-question VQA on the training
  split (conversations per clip, closed by its caption), so there is a base VLM that can see and read;
- stage 1: `prepare_stage1` -> `train_stage1` — speech -> transcript; the projector trains (the upstream recipe),
  and with `train.stage1_language_model: lora` a LoRA on the LLM too, merged at the end (towers frozen);
- stage 2: `prepare_stage2(mode)` -> `train_stage2` — LoRA on the language model (+ the projector for the graft),
  spoken question + clip -> short answer; the text-question model gets the same LoRA, data and budget.

`prepare_*` makes every random draw that makes weights right after the stage's seed, so a stage's initial weights
do not depend on what ran before it in the process; between prepare and train a notebook may look at the model.
Each stage writes `runs/<profile>/checkpoints/<stage>/`: Trainer checkpoints (an interrupted run resumes from the
last one), `final/` (stage 0/1) or `adapter/` + `merged/` (stage 2), and `stage.json` (what ran, how long, how fast).
A finished stage whose stamp (`checkpoints.stage_stamp`: code, data, seed and options) matches is reused, not retrained.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import WhisperFeatureExtractor

from . import models, vision_pretrain
from .caches import FeatureCache, VisionCache
from .checkpoints import (StageResult, base_vlm_source, feature_cache, load_text_base, stage_dir, stage_stamp,
                          vision_cache)
from .collate import ClipDialogues, Collator, Example
from .config import Config
from .data import RunData
from .lora import add_lora, is_peft
from .trainer import WERTrainer, is_main_process, one_stage, run_stage, wait_for_everyone
from .training_data import heard_transcripts, stage0_examples, stage1_examples, stage2_examples

STAGE_NAMES = ("stage0", "stage1", "stage2", "stage2_text")
MODES = {"stage2": "audio", "stage2_text": "text"}  # stage 2's two models: the graft hears, the text model reads


@dataclass
class PreparedStage:
    """A stage ready to train: the model with its trainables, what it trains and evaluates on, its caches."""

    name: str  # stage1, stage2 (the graft) or stage2_text (the text model)
    model: Any  # a PeftModel when the stage trains a LoRA
    processor: Any
    train: list[Example] | ClipDialogues
    evaluate: list[Example]
    feature_cache: FeatureCache | None = None
    vision_cache: VisionCache | None = None


def finished_run(cfg: Config, name: str, product: str) -> StageResult | None:
    """A finished run of stage `name` under its current stamp (which names the code, data, seed and every option
    it depends on), with its `product` folder saved: reused, never retrained, by every entry (`resume=False`
    retrains)."""
    out = stage_dir(cfg, name)
    if ((out / "stage.json").is_file() and (out / product).is_dir() and (out / "stamp.txt").is_file()
            and (out / "stamp.txt").read_text() == stage_stamp(cfg, name)):
        result = StageResult.load(out)
        result.reused = True
        return result
    return None


# ---- stage 0: the base VLM (embedded default) -------------------------------------------------


def train_stage0(cfg: Config, data: RunData, resume: bool = True, stop_after_steps: int | None = None) -> StageResult | None:
    """Stage 0: train the tiny Qwen2-VL from scratch on cached tokens of its frozen vision tower (embedded default
    only; None at paper scale). Reused when `final/` exists with the same stamp; `resume=False` retrains."""
    from .tiny_vlm import build_tiny_qwen2_vl

    if cfg.model.base_vlm != models.EMBEDDED_VLM:
        return None
    out = stage_dir(cfg, "stage0")
    stamp = stage_stamp(cfg, "stage0")
    if resume and (result := finished_run(cfg, "stage0", "final")):
        return result
    model, tokenizer, image_processor = build_tiny_qwen2_vl(models.tokenizer_corpus(cfg.seed), seed=cfg.seed,
                                                            **vars(cfg.model.tiny))
    # the base VLM hears nothing: its audio settings stay at their defaults (the graft takes its own)
    from qwen2_vl_audio import Qwen2VLAudioProcessor

    processor = Qwen2VLAudioProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                      feature_extractor=WhisperFeatureExtractor())
    train, evaluate = stage0_examples(cfg, data.splits)
    if cfg.train.vision_pretrain_epochs:  # the tower's own pretraining first (on the data step's region masks)
        vision_pretrain.pretrain_tower(cfg, model.model.visual, processor, data.splits, cfg.paths.data,
                                       stage_dir(cfg, "vision"), stamp)
    model.model.visual.requires_grad_(False)  # frozen: trained with stage 0's loss it did worse (docs/RECIPE.md)
    collator = Collator(processor, vision_cache=vision_cache(cfg, model, processor))
    trainer, result = run_stage(cfg, "stage0", model.train(), collator, train, evaluate,
                                out, stamp, resume=resume, stop_after_steps=stop_after_steps)
    if stop_after_steps:
        return result
    if cfg.train.stage0_refine:  # the second phase, in its own folder (a rerun resumes either phase)
        trainer, refined = run_stage(cfg, "stage0", trainer.model, collator, train, evaluate, out / "refine", stamp,
                                     resume=resume, **cfg.train.stage0_refine)
        result = one_stage(result, refined)
    if is_main_process():
        final = out / "final"
        for part in (trainer.model, processor, tokenizer, image_processor):
            part.save_pretrained(final)
        result.save()
    wait_for_everyone()
    return result


# ---- stage 1: speech -> transcript ----------------------------------------------------------------


def prepare_stage1(cfg: Config, data: RunData, use_feature_cache: bool = True) -> PreparedStage:
    """The graft on the base VLM (stage 0's output, or the hub model at paper scale), seeded, with stage 1's
    trainables: the projector, and with `train.stage1_language_model: lora` a LoRA on the language model."""
    base = base_vlm_source(cfg)
    if cfg.model.base_vlm == models.EMBEDDED_VLM and not Path(base).is_dir():
        raise FileNotFoundError(f"{base} not found: train the base VLM first (stage 0, `train_stage0`)")
    torch.manual_seed(cfg.seed)  # the projector's initialisation, then the LoRA's
    model, processor = models.build_graft(cfg, base=base)
    model = stage1_trainables(cfg, model)
    train, evaluate = stage1_examples(cfg, data.splits, data.corpus)
    cache = feature_cache(cfg, model, processor) if use_feature_cache else None
    return PreparedStage("stage1", model.train(), processor, train, evaluate, feature_cache=cache)


def stage1_trainables(cfg: Config, model):
    """Stage 1's trainables on a graft: the projector, and with `train.stage1_language_model: lora` a LoRA on the
    language model (a PeftModel); the towers never."""
    model.requires_grad_(False)
    model.model.audio_projector.requires_grad_(True)
    return add_lora(cfg, model, with_projector=True) if cfg.train.stage1_language_model == "lora" else model


def train_stage1(cfg: Config, stage: PreparedStage, resume: bool = True,
                 stop_after_steps: int | None = None) -> tuple[Any, StageResult]:
    """Stage 1: the checkpoint is kept by the val speech's WER; a LoRA is merged into the graft at the end.
    Saves the whole graft to `stage1/final`."""
    out = stage_dir(cfg, "stage1")
    if resume and not stop_after_steps and (result := finished_run(cfg, "stage1", "final")):
        return models.load_graft(out / "final", **models.load_kwargs(cfg))[0].eval(), result
    wer = dict(wer_examples=stage.evaluate,
               wer_collator=Collator(stage.processor, training=False, feature_cache=stage.feature_cache))
    trainer, result = run_stage(cfg, "stage1", stage.model, Collator(stage.processor, feature_cache=stage.feature_cache),
                                stage.train, stage.evaluate, out, stage_stamp(cfg, "stage1"), resume=resume,
                                stop_after_steps=stop_after_steps, trainer_class=WERTrainer, trainer_kwargs=wer)
    graft = trainer.model.merge_and_unload() if is_peft(trainer.model) else trainer.model
    if not stop_after_steps and is_main_process():
        models.save_graft(graft, stage.processor, out / "final")
        result.save()
    wait_for_everyone()
    return graft.eval(), result


def warm_cache(cache: FeatureCache, examples: list[Example], progress: bool = True) -> dict[str, float]:
    """Encode every audio file of `examples` once (a progress bar), so training never waits on the tower."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    paths = sorted({ex.audio for ex in examples if ex.audio})
    for path in tqdm(paths, desc="whisper features", disable=not progress, leave=False):
        cache.get(path)
    return {"files": len(paths), "seconds": round(time.perf_counter() - start, 2), **cache.stats()}


# ---- stage 2: (Q)LoRA ---------------------------------------------------------------------------


def prepare_stage2(cfg: Config, data: RunData, mode: str, use_feature_cache: bool = True,
                   stage1_of: Config | None = None) -> PreparedStage:
    """Stage 2's model with its LoRA, seeded: the graft after stage 1 (mode="audio", its projector trains too) or
    the base VLM reading the question (mode="text", the stage-1 graft's processor serves it); its conversations
    (`training_data.stage2_examples`; the text model reads `train.heard_question_fraction` of its questions as
    whisper-base heard them) and caches. `stage1_of`: the config whose stage 1 it continues (default `cfg`; the
    seed spread's: the run's, trained under the run's seed)."""
    if mode not in ("audio", "text"):
        raise ValueError(f"mode must be 'audio' or 'text', got {mode!r}")
    stage1_of = stage1_of or cfg
    stage1 = stage_dir(stage1_of, "stage1") / "final"
    if not finished_run(stage1_of, "stage1", "final"):  # a graft left by other code, data or options would be read
        raise RuntimeError(f"{stage1} is missing or was not made by this run's stage 1 (its stamp.txt differs from "
                           f"{stage_stamp(stage1_of, 'stage1')}): run stage 1 first (notebook 02, or "
                           f"stages.run_stages(cfg, data, ['stage1']))")
    if mode == "audio":
        model, processor = models.load_graft(stage1, **models.load_kwargs(cfg))
    else:
        model, processor = load_text_base(cfg), models.load_graft_processor(stage1)
    torch.manual_seed(cfg.seed)  # the LoRA's initialisation
    model = add_lora(cfg, model, with_projector=(mode == "audio")).train()
    inner = model.base_model.model
    audio_cache = feature_cache(cfg, inner, processor) if (use_feature_cache and mode == "audio") else None
    heard = heard_transcripts(cfg, data.splits["train"]) if mode == "text" and cfg.train.heard_question_fraction else None
    train, evaluate = stage2_examples(cfg, data.splits, mode, data.corpus, heard=heard)
    name = "stage2" if mode == "audio" else "stage2_text"
    return PreparedStage(name, model, processor, train, evaluate, feature_cache=audio_cache,
                         vision_cache=vision_cache(cfg, inner, processor))


def train_stage2(cfg: Config, stage: PreparedStage, resume: bool = True,
                 stop_after_steps: int | None = None) -> tuple[Any, StageResult]:
    """Stage 2 for the graft (dir stage2/) or the text model (dir stage2_text/): same LoRA, rows and
    TrainingArguments (`train.stage2`). Saves `adapter/` and a merged model `merged/`."""
    out = stage_dir(cfg, stage.name)
    if resume and not stop_after_steps and (result := finished_run(cfg, stage.name, "merged")):
        merged = (models.load_graft(out / "merged", **models.load_kwargs(cfg))[0] if stage.name == "stage2"
                  else load_text_base(cfg, out / "merged"))
        return merged.eval(), result
    collator = Collator(stage.processor, feature_cache=stage.feature_cache, vision_cache=stage.vision_cache)
    trainer, result = run_stage(cfg, "stage2", stage.model, collator, stage.train, stage.evaluate,
                                out, stage_stamp(cfg, stage.name), resume=resume, stop_after_steps=stop_after_steps)
    result.stage = stage.name
    if not stop_after_steps and is_main_process():
        trainer.model.save_pretrained(out / "adapter")
        stage.processor.save_pretrained(out / "adapter")
        merged = trainer.model.merge_and_unload()
        models.save_graft(merged, stage.processor, out / "merged")
        result.save()
        wait_for_everyone()
        return merged.eval(), result
    wait_for_everyone()
    return trainer.model.eval(), result


def run_stages(cfg: Config, data: RunData, stages: list[str] | tuple[str, ...], resume: bool = True) -> dict[str, StageResult]:
    """Run the named stages in order (stage0, stage1, stage2, stage2_text), each from the previous one's output:
    the same entries the notebooks call."""
    unknown = set(stages) - set(STAGE_NAMES)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}; the stages are {list(STAGE_NAMES)}")
    results: dict[str, StageResult] = {}
    for name in (s for s in STAGE_NAMES if s in stages):
        if name == "stage0":
            results[name] = train_stage0(cfg, data, resume=resume)
        elif name == "stage1":
            _, results[name] = train_stage1(cfg, prepare_stage1(cfg, data), resume=resume)
        else:
            _, results[name] = train_stage2(cfg, prepare_stage2(cfg, data, MODES[name]), resume=resume)
    return results
