"""Training stages with HF `Trainer` (+ PEFT), one function per stage, all sharing `collate`.

- stage 0 (embedded default only): the tiny Qwen2-VL learns text-question VQA on the training
  split (conversations per clip, closed by its caption), so there is a base VLM that can see and read;
- stage 1: speech -> transcript; the projector trains (the upstream recipe), and with
  `train.stage1_language_model: lora` a LoRA on the LLM too, merged at the end (towers frozen);
- stage 2: LoRA on the language model + the projector, spoken question + clip -> short answer, with a
  share of transcription; the text-question model gets the same LoRA, data and budget.

Each stage writes `runs/<profile>/checkpoints/<stage>/`: Trainer checkpoints (an interrupted
run resumes from the last one), `final/` (stage 0/1) or `adapter/` + `merged/` (stage 2), and
`stage.json` (what ran, with which params, how long, how fast).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments, WhisperFeatureExtractor

from . import models
from .datastep import load_run_data
from .collate import (ClipDialogues, Collator, Example, ExampleDataset, as_question, question_recordings,
                      repeat_examples, transcription_examples, vqa_examples)
from .config import Config
from .data import clip_key, load_frames
from .caches import FeatureCache, VisionCache

COMMON_ARGS: dict[str, Any] = dict(
    per_device_eval_batch_size=32,
    lr_scheduler_type="cosine",
    weight_decay=0.0,
    eval_strategy="epoch",
    save_strategy="epoch",
    save_total_limit=2,
    logging_strategy="steps",
    logging_steps=5,
    remove_unused_columns=False,  # the collator needs the whole Example
    dataloader_num_workers=0,
)


def stage_dir(cfg: Config, stage: str) -> Path:
    return cfg.paths.stage(stage)


def feature_cache(cfg: Config, model, processor) -> FeatureCache:
    return FeatureCache(cfg.paths.cache("whisper_features"), model.get_base_model() if _is_peft(model) else model,
                        processor)


def vision_cache(cfg: Config, model, processor) -> VisionCache:
    """The frozen vision tower's tokens per clip (stages 0 with a frozen tower, 1, 2 and the evaluation)."""
    return VisionCache(cfg.paths.cache("vision_tokens"), model, processor, load_frames)


def training_arguments(cfg: Config, stage: str, output_dir: Path, **overrides) -> TrainingArguments:
    """`train.<stage>` of the params over the common settings; TensorBoard is attached by `run_stage`."""
    kwargs = {**COMMON_ARGS, "seed": cfg.seed, "data_seed": cfg.seed,
              "report_to": [r for r in cfg.train.report_to if r != "tensorboard"],
              "activation_checkpointing": cfg.model.gradient_checkpointing,
              "dataloader_pin_memory": torch.cuda.is_available(),
              "activation_checkpointing_kwargs": {"use_reentrant": False},
              **getattr(cfg.train, stage), **overrides}
    if kwargs.get("bf16") and not torch.cuda.is_available():
        kwargs.setdefault("use_cpu", True)  # Trainer refuses bf16 without a GPU unless told it is on the CPU
    if kwargs.get("eval_strategy", "no") != "no":
        kwargs.setdefault("load_best_model_at_end", True)
        kwargs.setdefault("metric_for_best_model", "eval_loss")
    return TrainingArguments(output_dir=str(output_dir), **kwargs)


# The train options stage 0's result depends on (its TrainingArguments come in as `extra`): a finished stage 0 is
# reused when its stamp matches, so an option of a later stage must not retrain the base VLM (~17 min here).
STAGE0_OPTIONS = ("early_stopping_patience", "repeat_sentences", "stage0_vision_tower", "stage0_refine",
                  "questions_per_clip", "balanced_fraction", "question_rarity", "stage0_caption", "eval_rows",
                  "loss_per_answer")


def stage_stamp(cfg: Config, stage: str, extra: Any = None) -> str:
    """What a stage's result depends on; a resumed or reused run must match it. Later stages (only ever resumed,
    never reused) take every train option."""
    from .datastep import data_stamp

    options = {k: v for k, v in dataclasses.asdict(cfg.train).items() if k not in ("report_to", "stage0", "stage1", "stage2")}
    if stage == "stage0":
        options = {k: options[k] for k in STAGE0_OPTIONS}
        options["early_stopping_patience"] = cfg.train.patience("stage0")  # not another stage's patience
    parts = {"stage": stage, "seed": cfg.seed, "model": dataclasses.asdict(cfg.model), "data": data_stamp(cfg),
             "options": options, "extra": extra}
    if stage != "stage0":  # stage 2's LoRA, and stage 1's with `train.stage1_language_model: lora`
        parts["lora"] = dataclasses.asdict(cfg.lora)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---- one stage ------------------------------------------------------------------------------


@dataclass
class StageResult:
    stage: str
    output_dir: str
    stamp: str
    train_examples: int
    eval_examples: int
    global_step: int = 0
    epochs: float = 0.0
    wall_time_s: float = 0.0
    train_samples_per_s: float = 0.0
    peak_memory_mb: float = 0.0
    final_train_loss: float | None = None
    best_eval_loss: float | None = None
    best_eval_wer: float | None = None  # stage 1: the val WER of the kept checkpoint
    best_checkpoint: str | None = None
    resumed_from: str | None = None
    stopped_early: bool = False
    trainable_parameters: int = 0
    frozen_parameters: int = 0
    log_history: list[dict] = field(default_factory=list)
    reused: bool = False

    def metrics(self) -> dict[str, Any]:
        """The scalar part (for the metrics JSON)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "log_history"}

    def save(self) -> Path:
        path = Path(self.output_dir) / "stage.json"
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2, default=str))
        return path

    @classmethod
    def load(cls, output_dir: Path) -> "StageResult":
        return cls(**json.loads((Path(output_dir) / "stage.json").read_text()))


class StopAfterSteps(TrainerCallback):
    """Stop (as if interrupted) after `steps` optimizer steps, with a checkpoint saved there."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.steps:
            control.should_save = True
            control.should_training_stop = True
        return control


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def count_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total - trainable


def resume_checkpoint(output_dir: Path, stamp: str, resume: bool) -> str | None:
    """The last checkpoint of an interrupted run with the same stamp, if resuming; else None."""
    marker = output_dir / "stamp.txt"
    finished = (output_dir / "stage.json").is_file()
    if resume and not finished and marker.is_file() and marker.read_text() == stamp and output_dir.is_dir():
        return last_complete_checkpoint(output_dir)
    return None


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """The newest `checkpoint-N` whose save finished: Trainer writes trainer_state.json last, and a
    run killed while saving leaves a newer folder without it (get_last_checkpoint would pick that)."""
    done = [p for p in output_dir.glob("checkpoint-*")
            if p.name.split("-", 1)[1].isdigit() and (p / "trainer_state.json").is_file()]
    return str(max(done, key=lambda p: int(p.name.split("-", 1)[1]))) if done else None  # none whole: start over


def prepare_output_dir(output_dir: Path, stamp: str, resume: bool) -> str | None:
    """Resume from an interrupted run with the same stamp, or start in a clean directory.

    Every process reads the decision before the main one deletes anything (DDP-safe).
    """
    from accelerate import PartialState

    state = PartialState()
    checkpoint = resume_checkpoint(output_dir, stamp, resume)
    state.wait_for_everyone()
    if checkpoint is None and state.is_main_process:
        if output_dir.exists():
            shutil.rmtree(output_dir)
        output_dir.mkdir(parents=True)
        (output_dir / "stamp.txt").write_text(stamp)
    state.wait_for_everyone()
    return checkpoint


class StageTrainer(Trainer):
    """`Trainer` that reloads full-model checkpoints through `from_pretrained`.

    `save_pretrained` writes Qwen2-VL's hub key names (`model.layers.*`), while Trainer's own
    reload (resume, best model at the end) calls `load_state_dict(strict=False)` with the
    in-memory names and silently matches nothing. PEFT adapters are unaffected.
    """

    def __init__(self, *args, loss_per_answer: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_per_answer = loss_per_answer  # `train.loss_per_answer`

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.loss_per_answer:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})  # Trainer may read inputs["labels"] after
        loss = per_answer_loss(outputs.logits, inputs["labels"])
        return (loss, outputs) if return_outputs else loss

    def _load_full_model(self, checkpoint: str) -> None:
        loaded = type(self.model).from_pretrained(checkpoint, dtype=self.model.dtype)
        self.model.load_state_dict(loaded.state_dict(), strict=True)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if _is_peft(self.model):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._load_full_model(resume_from_checkpoint)

    def _load_best_model(self):
        if _is_peft(self.model):
            return super()._load_best_model()
        self._load_full_model(self.state.best_model_checkpoint)


def per_answer_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy where each answer span (a contiguous run of labelled tokens) weighs the same:
    the mean over spans of each span's mean token loss."""
    targets = labels[:, 1:]
    token_loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets,
                                                   ignore_index=-100, reduction="none")
    labelled = targets != -100
    before = torch.zeros_like(labelled)
    before[:, 1:] = labelled[:, :-1]  # a span never continues across rows
    mask = labelled.flatten()
    span = torch.cumsum((labelled & ~before).flatten(), 0)[mask]  # 1, 1, 2, 3, 3, ...: each token's span
    if span.numel() == 0:
        return logits.sum() * 0.0
    weights = 1.0 / torch.bincount(span)[span].float()
    return (token_loss.flatten()[mask] * weights).sum() / span[-1]


class WERTrainer(StageTrainer):
    """Stage 1: every evaluation also transcribes the val speech (greedy) and adds its corpus WER as `eval_wer`,
    and `eval_wer_tiebroken`, which (STAGE_DEFAULTS) picks the best checkpoint and drives early stopping.

    `eval_wer_tiebroken` orders by WER, then by loss: a language model that cannot write yet (the embedded one
    before stage 2) scores the same WER every epoch, and without the tie-break stage 1 would stop after
    `patience` epochs and keep its least aligned projector. Its WER counts at most an utterance's own words as
    errors (`capped_word_errors`): a transcript longer than the truth and all wrong is no further from it than an
    empty one, and uncapped insertions (WER 2.26 after epoch 2, measured) made the 1-epoch projector "best"."""

    def __init__(self, *args, wer_examples: list[Example], wer_collator: Collator, max_new_tokens: int = 48, **kwargs):
        super().__init__(*args, **kwargs)
        self.wer_examples, self.wer_collator, self.wer_max_new_tokens = wer_examples, wer_collator, max_new_tokens

    def evaluation_loop(self, *args, **kwargs):
        from .infer import predict
        from .metrics import edit_counts

        output = super().evaluation_loop(*args, **kwargs)
        was_training = self.model.training
        hyps = predict(self.model, self.wer_collator, self.wer_examples, batch_size=self.args.per_device_eval_batch_size,
                       max_new_tokens=self.wer_max_new_tokens, progress=False)["predictions"]
        self.model.train(was_training)
        prefix = kwargs.get("metric_key_prefix", "eval")
        counts = edit_counts(hyps, [e.answer for e in self.wer_examples])
        words = int(counts["words"].sum())
        output.metrics[f"{prefix}_wer"] = int(counts["word_errors"].sum()) / words
        output.metrics[f"{prefix}_wer_tiebroken"] = wer_tiebroken(capped_word_errors(counts), words,
                                                                  output.metrics[f"{prefix}_loss"])
        return output


def capped_word_errors(counts: dict) -> int:
    """Word errors of `metrics.edit_counts`, each utterance's capped at its number of words."""
    return int(np.minimum(counts["word_errors"], counts["words"]).sum())


def wer_tiebroken(errors: int, words: int, loss: float) -> float:
    """Corpus WER plus a loss term below half of one word's step (1 / words): it only orders equal WERs."""
    return (errors + 0.5 * min(max(loss, 0.0), LOSS_CAP) / LOSS_CAP) / words


LOSS_CAP = 50.0  # token cross-entropy above this is a broken run; past it the tie-break saturates


def _is_peft(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


class ResampleEachEpoch(TrainerCallback):
    """Draws the next epoch's conversations (`ClipDialogues.set_epoch`) as each epoch begins, resumed runs too."""

    def __init__(self, dataset: ClipDialogues):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(int(state.epoch or 0))


def run_stage(cfg: Config, stage: str, model, collator: Collator, train: list[Example] | ClipDialogues, evaluate: list[Example],
              output_dir: Path, stamp: str, resume: bool = True, stop_after_steps: int | None = None,
              trainer_class: type[StageTrainer] = StageTrainer, trainer_kwargs: dict | None = None,
              **arg_overrides) -> tuple[Trainer, StageResult]:
    """Train `model` with HF Trainer; resume an interrupted run; best checkpoint (by eval loss) at the end."""
    args = training_arguments(cfg, stage, output_dir, **arg_overrides)  # also sets up the process group
    resume_from = prepare_output_dir(output_dir, stamp, resume)
    callbacks: list[TrainerCallback] = []
    patience = cfg.train.patience(stage)
    if args.load_best_model_at_end and patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
    if "tensorboard" in cfg.train.report_to:
        callbacks.append(tensorboard_callback(cfg.paths.logs / output_dir.name, fresh=resume_from is None))
    if stop_after_steps:
        callbacks.append(StopAfterSteps(stop_after_steps))
    if isinstance(train, ClipDialogues):
        callbacks.append(ResampleEachEpoch(train))
    trainer = trainer_class(model=model, args=args, data_collator=collator, **(trainer_kwargs or {}),
                           train_dataset=train if isinstance(train, ClipDialogues) else ExampleDataset(train),
                           eval_dataset=ExampleDataset(evaluate) if evaluate else None, callbacks=callbacks,
                           loss_per_answer=cfg.train.loss_per_answer)
    trainable, frozen = count_parameters(model)
    start = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume_from)
    wall = time.perf_counter() - start
    state = trainer.state
    train_losses = [h["loss"] for h in state.log_history if "loss" in h]
    eval_losses = [h["eval_loss"] for h in state.log_history if "eval_loss" in h]
    result = StageResult(
        stage=stage, output_dir=str(output_dir), stamp=stamp, train_examples=len(train), eval_examples=len(evaluate),
        global_step=state.global_step, epochs=round(state.epoch or 0.0, 3), wall_time_s=round(wall, 2),
        train_samples_per_s=round(output.metrics.get("train_samples_per_second", 0.0), 2),
        peak_memory_mb=round(peak_memory_mb(), 1), final_train_loss=train_losses[-1] if train_losses else output.training_loss,  # short runs log no step
        best_eval_loss=min(eval_losses) if eval_losses else None,
        best_eval_wer=best_logged(state, "eval_wer"),
        best_checkpoint=state.best_model_checkpoint, resumed_from=resume_from,
        stopped_early=bool(state.global_step < state.max_steps and not stop_after_steps),
        trainable_parameters=trainable, frozen_parameters=frozen, log_history=state.log_history,
    )
    return trainer, result


def one_stage(first: StageResult, second: StageResult) -> StageResult:
    """Two phases of a stage as one result: steps, epochs, time and logs add up (the second's steps after the
    first's); the kept checkpoint and its losses are the second's."""
    history = first.log_history + [{**h, "step": h.get("step", 0) + first.global_step} for h in second.log_history]
    return dataclasses.replace(second, output_dir=first.output_dir, global_step=first.global_step + second.global_step,
                               epochs=round(first.epochs + second.epochs, 3),
                               wall_time_s=round(first.wall_time_s + second.wall_time_s, 2),
                               resumed_from=first.resumed_from or second.resumed_from, log_history=history)


def best_logged(state, key: str) -> float | None:
    """`key` as logged at the kept (best) checkpoint's evaluation; None when never logged."""
    logged = [h for h in state.log_history if key in h]
    if not logged:
        return None
    at_best = [h[key] for h in logged if h.get("step") == state.best_global_step]
    return at_best[-1] if at_best else logged[-1][key]


def tensorboard_callback(log_dir: Path, fresh: bool) -> TrainerCallback:
    """Trainer's TensorBoard logger writing to the run's `logs/<stage>/` (a fresh run starts an empty folder)."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    if not is_main_process():  # Trainer logs on the main process only; a writer here would race the rmtree below
        return TensorBoardCallback()
    if fresh and log_dir.exists():
        shutil.rmtree(log_dir)
    return TensorBoardCallback(SummaryWriter(log_dir=str(log_dir)))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def wait_for_everyone() -> None:
    """Barrier after the main process wrote a stage's outputs (no-op in a single process)."""
    from accelerate import PartialState

    PartialState().wait_for_everyone()


# ---- stage 0: the base VLM (embedded default) -------------------------------------------------


def base_vlm_source(cfg: Config) -> str:
    """What the graft is built on: the stage-0 model (embedded default) or the hub id / dir in params."""
    return str(stage_dir(cfg, "stage0") / "final") if cfg.model.base_vlm == models.EMBEDDED_VLM else cfg.model.base_vlm


def repeat_sentences(cfg: Config, splits: dict, corpus: list[dict]) -> tuple[list[str], list[str]]:
    """Texts to copy in stage 0: the training questions and the stage-1 transcripts (train / val)."""
    train = sorted({r["question"] for r in splits["train"].rows} | {e["text"] for e in corpus if e["split"] == "train"})
    val = sorted({e["text"] for e in corpus if e["split"] == "val"} - set(train))
    limit = cfg.train.repeat_sentences
    return train[:limit], val


def new_tiny_processor(tokenizer, image_processor):
    """Stage 0's processor. The base VLM hears nothing, so its audio settings stay at their defaults;
    the graft's processor takes its own from the graft's config."""
    from qwen2_vl_audio import Qwen2VLAudioProcessor

    return Qwen2VLAudioProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                 feature_extractor=WhisperFeatureExtractor())


def vqa_training_examples(cfg: Config, splits: dict, mode: str, fixed: list[Example] | None = None,
                          caption: bool = False, long_fraction: float = 0.0, heard: dict[str, str] | None = None,
                          pool: list[Example] | None = None, pool_draws: int = 0,
                          read_ratio: float = 0.0) -> tuple[ClipDialogues, list[Example]]:
    """Training conversations about each clip (re-drawn each epoch) and a fixed sample of val questions.
    `heard` (audio path -> transcript): text mode reads `train.heard_question_fraction` of the questions so.
    `read_ratio` (audio mode): that many conversations read (text mode) per conversation heard join each epoch."""
    t = cfg.train
    examples = vqa_examples(splits["train"], mode)
    if heard is not None:
        examples = with_heard_questions(examples, splits["train"], heard, t.heard_question_fraction, cfg.seed)
    read = None
    if read_ratio:
        if mode != "audio":
            raise ValueError("read_ratio: read conversations join heard ones (mode='audio')")
        read = ClipDialogues(vqa_examples(splits["train"], "text"), t.questions_per_clip, t.balanced_fraction,
                             seed=cfg.seed + 1, long_fraction=long_fraction, rarity=t.question_rarity)
    train = ClipDialogues(examples, t.questions_per_clip, t.balanced_fraction,
                          fixed=fixed, seed=cfg.seed, caption=caption, long_fraction=long_fraction,
                          rarity=t.question_rarity, pool=pool, pool_draws=pool_draws,
                          read=read, read_draws=int(round(len(read.clips) * read_ratio)) if read else 0)
    val = vqa_examples(splits["val"], mode)
    keep = sorted(torch.randperm(len(val), generator=torch.Generator().manual_seed(cfg.seed))[: t.eval_rows].tolist())
    return train, [val[i] for i in keep]


def with_heard_questions(examples: list[Example], ds, heard: dict[str, str], fraction: float, seed: int) -> list[Example]:
    """A seeded share `fraction` of text-mode examples (one per row of `ds`, in order) asks its question as the
    ASR heard the row's own audio (`heard`: audio path -> transcript; empty -> "?", as the ASR pipeline asks it)."""
    rng = np.random.default_rng([seed, 0x4EA2D])
    out = []
    for row, ex in zip(ds.rows, examples, strict=True):
        if rng.random() < fraction:
            path = str(ds.audio_path(row))
            if path not in heard:
                raise KeyError(f"row {row['id']}: no transcript of its audio {path}")
            ex = dataclasses.replace(ex, question=as_question(heard[path]), meta={**ex.meta, "heard": True})
        out.append(ex)
    return out


def heard_transcripts(cfg: Config, ds) -> dict[str, str]:
    """whisper-base's transcript of every audio file of `ds`'s rows (the ASR pipeline's model, settings and
    transcript cache: the evaluation's val rows share these files, so their decodes are not repeated)."""
    from .asr import asr_model, transcribe_faster_whisper, transcript_cache

    missing = [r["id"] for r in ds.rows if not r.get("audio")]
    if missing:
        raise ValueError(f"train.heard_question_fraction > 0: row {missing[0]} (and {len(missing) - 1} more) has no audio")
    paths = sorted({str(ds.audio_path(r)) for r in ds.rows})
    asr = asr_model(cfg, cfg.eval)
    texts, _ = transcribe_faster_whisper(asr, paths, cache=transcript_cache(cfg, asr))
    return dict(zip(paths, texts))


def stage0_examples(cfg: Config, splits: dict, corpus: list[dict]) -> tuple[ClipDialogues, list[Example]]:
    """Conversations about the training clips, plus "repeat the sentence" when `train.repeat_sentences` > 0
    (then its val sentences join the eval set; without it they would score a task that was never trained)."""
    train_sentences, val_sentences = repeat_sentences(cfg, splits, corpus)
    train, evaluate = vqa_training_examples(cfg, splits, "text", fixed=repeat_examples(train_sentences),
                                            caption=cfg.train.stage0_caption)
    return train, evaluate + (repeat_examples(val_sentences) if train_sentences else [])


def train_base_vlm(cfg: Config, splits: dict, corpus: list[dict], resume: bool = True,
                   stop_after_steps: int | None = None) -> StageResult | None:
    """Stage 0: train the tiny Qwen2-VL from scratch (embedded default only; None at paper scale).

    Reused when `final/` exists with the same stamp (reruns do not retrain it); `resume=False` retrains.
    """
    from .tiny_vlm import build_tiny_qwen2_vl

    if cfg.model.base_vlm != models.EMBEDDED_VLM:
        return None
    out = stage_dir(cfg, "stage0")
    stamp = stage_stamp(cfg, "stage0", extra=cfg.train.stage0)
    if resume and (out / "stage.json").is_file() and (out / "stamp.txt").read_text() == stamp and (out / "final").is_dir():
        result = StageResult.load(out)
        result.reused = True
        return result
    model, tokenizer, image_processor = build_tiny_qwen2_vl(models.tokenizer_corpus(cfg.seed), seed=cfg.seed, **vars(cfg.model.tiny))
    processor = new_tiny_processor(tokenizer, image_processor)
    train, evaluate = stage0_examples(cfg, splits, corpus)
    cache = None
    if cfg.train.stage0_vision_tower == "frozen":
        model.model.visual.requires_grad_(False)
        cache = vision_cache(cfg, model, processor)
    collator = Collator(processor, vision_cache=cache)
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
        trainer.model.save_pretrained(final)
        processor.save_pretrained(final)
        tokenizer.save_pretrained(final)
        image_processor.save_pretrained(final)
        result.save()
    wait_for_everyone()
    return result


# ---- stage 1: projector alignment -------------------------------------------------------------


def freeze_for_stage1(model) -> None:
    """Only the projector learns; tower, vision and language model stay as they are."""
    model.requires_grad_(False)
    model.model.audio_projector.requires_grad_(True)


def prepare_stage1(cfg: Config, model):
    """The graft with stage 1's trainables: the projector, and with `train.stage1_language_model: lora` a LoRA
    on the language model (a PeftModel); the towers never."""
    freeze_for_stage1(model)
    return add_lora(cfg, model, with_projector=True) if cfg.train.stage1_language_model == "lora" else model


def build_stage1_graft(cfg: Config):
    """The graft on the base VLM (stage 0 output, or the hub model at paper scale)."""
    base = base_vlm_source(cfg)
    if cfg.model.base_vlm == models.EMBEDDED_VLM and not Path(base).is_dir():
        raise FileNotFoundError(f"{base} not found: train the base VLM first (stage 0, `train_base_vlm`)")
    torch.manual_seed(cfg.seed)  # the projector's initialisation
    return models.build_graft(cfg, base=base)


def stage1_examples(cfg: Config, splits: dict, corpus: list[dict]) -> tuple[list[Example], list[Example]]:
    """Stage 1's speech: the transcription pool (training corpus and every training question's recordings), with
    `train.stage1_vqa_fraction` of the examples text-mode questions about training clips (a seeded sample, the
    rehearsal of stage 0's sight); and the val corpus (unseen texts), whose WER picks the checkpoint."""
    val = transcription_examples([e for e in corpus if e["split"] == "val"], cfg.paths.data)
    train = transcription_pool(cfg, splits, corpus)
    share = cfg.train.stage1_vqa_fraction
    if share:
        rows, rng = vqa_examples(splits["train"], "text"), random.Random(cfg.seed)
        need = int(round(len(train) * share / (1 - share)))
        questions: list[Example] = []
        while rows and len(questions) < need:  # every row once before any twice
            questions += rng.sample(rows, len(rows))
        train += questions[:need]
    return train, val


def train_stage1(cfg: Config, model, processor, corpus: list[dict], splits: dict, resume: bool = True,
                    stop_after_steps: int | None = None, use_feature_cache: bool = True,
                    cache: FeatureCache | None = None) -> tuple[Any, StageResult]:
    """Stage 1: speech -> transcript; the projector learns, and with `train.stage1_language_model: lora` a LoRA
    on the language model too (merged at the end). Saves the whole graft to `stage1/final`."""
    out = stage_dir(cfg, "stage1")
    stamp = stage_stamp(cfg, "stage1", extra=cfg.train.stage1)
    if not _is_peft(model):  # else prepared already (notebook 02 shows its trainables first)
        model = prepare_stage1(cfg, model)
    model.train()
    cache = (cache or feature_cache(cfg, model, processor)) if use_feature_cache else None
    train, evaluate = stage1_examples(cfg, splits, corpus)
    wer = dict(wer_examples=evaluate, wer_collator=Collator(processor, training=False, feature_cache=cache))
    seen = vision_cache(cfg, model, processor) if cfg.train.stage1_vqa_fraction else None  # the rehearsal's clips
    trainer, result = run_stage(cfg, "stage1", model, Collator(processor, feature_cache=cache, vision_cache=seen),
                                train, evaluate, out, stamp, resume=resume, stop_after_steps=stop_after_steps,
                                trainer_class=WERTrainer, trainer_kwargs=wer)
    graft = trainer.model.merge_and_unload() if _is_peft(trainer.model) else trainer.model
    if not stop_after_steps and is_main_process():
        models.save_graft(graft, processor, out / "final")
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


def add_lora(cfg: Config, model, with_projector: bool):
    """LoRA on the language model only (the towers are never wrapped); the projector trains in full."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    from .lora import peft_lora_config

    if cfg.model.load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.model.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_model = get_peft_model(model, peft_lora_config(cfg.lora, with_projector=with_projector))
    if hasattr(peft_model.base_model.model, "freeze_audio_tower"):
        peft_model.base_model.model.freeze_audio_tower()
    return peft_model


def stage2_adapters(cfg: Config, model, mode: str):
    """Stage 2's LoRA (with the projector for the graft), initialised from `seed` alone: notebook 03 and `run_stages`
    train the text model after the graft in one process, and its adapters must not depend on what ran before them."""
    torch.manual_seed(cfg.seed)
    return add_lora(cfg, model, with_projector=(mode == "audio"))


def stage2_examples(cfg: Config, splits: dict, mode: str, corpus: list[dict] | None = None,
                    heard: dict[str, str] | None = None) -> tuple[ClipDialogues, list[Example]]:
    """Conversations about the training clips (a share asking for long answers: `train.long_answer_fraction`);
    for the graft also transcription of the training corpus (`train.transcription_fraction` of the examples),
    so one model answers and transcribes and the prompt picks the task, and conversations read instead of heard
    (`train.graft_read_ratio` per heard one); for the text model, with `heard`, a share of the questions as the ASR
    heard them (`train.heard_question_fraction`)."""
    t = cfg.train
    pool: list[Example] = []
    draws = 0
    if mode == "audio" and t.transcription_fraction:
        if not corpus:
            raise ValueError("train.transcription_fraction > 0 needs the speech corpus (train_lora(..., corpus=...))")
        pool = transcription_pool(cfg, splits, corpus)
        clips = len({clip_key(r) for r in splits["train"].rows})
        draws = int(round(clips * t.transcription_fraction / (1 - t.transcription_fraction)))
    return vqa_training_examples(cfg, splits, mode, pool=pool, pool_draws=draws, long_fraction=t.long_answer_fraction,
                                 heard=heard, read_ratio=t.graft_read_ratio if mode == "audio" else 0.0)


def transcription_pool(cfg: Config, splits: dict, corpus: list[dict]) -> list[Example]:
    """What the graft learns to transcribe (stage 1, and stage 2's share): the training corpus and every recording
    of a training question (all the training voices ask every question, where the corpus has two voices per
    text). Training voices only."""
    pool = transcription_examples([e for e in corpus if e["split"] == "train"], cfg.paths.data)
    known = {Path(ex.audio).resolve() for ex in pool}  # the corpus's questions are some of these recordings
    return pool + [ex for ex in question_recordings(splits["train"]) if Path(ex.audio).resolve() not in known]


def train_lora(cfg: Config, model, processor, splits: dict, mode: str, resume: bool = True,
               stop_after_steps: int | None = None, use_feature_cache: bool = True,
               corpus: list[dict] | None = None) -> tuple[Any, StageResult]:
    """Stage 2 for the audio graft (mode="audio", dir stage2/) or the text model (mode="text", dir stage2_text/).

    Same LoRA, rows and TrainingArguments for both (the text model reads `train.heard_question_fraction` of its
    questions as whisper-base heard them). Saves `adapter/` and a merged model `merged/`.
    """
    from peft import PeftModel

    name = "stage2" if mode == "audio" else "stage2_text"
    out = stage_dir(cfg, name)
    stamp = stage_stamp(cfg, name, extra=cfg.train.stage2)
    peft_model = model if isinstance(model, PeftModel) else stage2_adapters(cfg, model, mode)
    peft_model.train()
    inner = peft_model.base_model.model
    cache = feature_cache(cfg, inner, processor) if (use_feature_cache and mode == "audio") else None
    heard = heard_transcripts(cfg, splits["train"]) if mode == "text" and cfg.train.heard_question_fraction else None
    train, evaluate = stage2_examples(cfg, splits, mode, corpus, heard=heard)
    collator = Collator(processor, feature_cache=cache, vision_cache=vision_cache(cfg, inner, processor))
    trainer, result = run_stage(cfg, "stage2", peft_model, collator, train, evaluate,
                                out, stamp, resume=resume, stop_after_steps=stop_after_steps)
    result.stage = name
    if not stop_after_steps and is_main_process():
        trainer.model.save_pretrained(out / "adapter")
        processor.save_pretrained(out / "adapter")
        merged = trainer.model.merge_and_unload()
        models.save_graft(merged, processor, out / "merged")
        result.save()
        wait_for_everyone()
        return merged.eval(), result
    wait_for_everyone()
    return trainer.model.eval(), result


def load_text_base(cfg: Config, source: str | Path | None = None):
    """The base VLM (stage 0 or the hub model), or another text-only Qwen2-VL checkpoint at `source`
    (the merged text model), for text questions; the graft's processor serves it too."""
    from transformers import Qwen2VLForConditionalGeneration

    return Qwen2VLForConditionalGeneration.from_pretrained(source or base_vlm_source(cfg), **models.load_kwargs(cfg))


# ---- command line (also the `accelerate launch` entry point) ------------------------------------


def run_stages(cfg: Config, stages: list[str], resume: bool = True, build_data: bool = True) -> dict[str, StageResult]:
    """Run the named stages in order (stage0, stage1, stage2, stage2_text), each from the previous one's output."""
    unknown = set(stages) - {"stage0", "stage1", "stage2", "stage2_text"}
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}")
    splits, corpus = load_run_data(cfg, build=build_data)
    results: dict[str, StageResult] = {}
    if "stage0" in stages:
        results["stage0"] = train_base_vlm(cfg, splits, corpus, resume=resume)
    if "stage1" in stages:
        model, processor = build_stage1_graft(cfg)
        _, results["stage1"] = train_stage1(cfg, model, processor, corpus, splits, resume=resume)
    if "stage2" in stages:
        model, processor = models.load_graft(stage_dir(cfg, "stage1") / "final", **models.load_kwargs(cfg))
        _, results["stage2"] = train_lora(cfg, model, processor, splits, "audio", resume=resume, corpus=corpus)
    if "stage2_text" in stages:
        processor = models.load_graft_processor(stage_dir(cfg, "stage1") / "final")
        _, results["stage2_text"] = train_lora(cfg, load_text_base(cfg), processor, splits, "text", resume=resume)
    return results


def main(argv: list[str] | None = None) -> None:
    import argparse

    from .repro import set_seed

    parser = argparse.ArgumentParser(description="Run training stages headless, e.g. under `accelerate launch`.")
    parser.add_argument("--params", default="params/default.yaml")
    parser.add_argument("--stage", nargs="+", default=["stage0", "stage1", "stage2", "stage2_text"])
    parser.add_argument("--no-resume", action="store_true", help="start over even if an interrupted run exists")
    args = parser.parse_args(argv)
    cfg = Config.from_yaml(args.params)
    set_seed(cfg.seed)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.cuda.is_available():
        # Without it Trainer on CPU does not shard the data: each process would train on all of it.
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    results = run_stages(cfg, args.stage, resume=not args.no_resume, build_data=world == 1)
    if is_main_process():
        for name, result in results.items():
            if result is not None:
                print(json.dumps({"stage": name, "world_size": world, **{k: result.metrics()[k] for k in (
                    "global_step", "epochs", "wall_time_s", "train_samples_per_s", "final_train_loss", "best_eval_loss")}}))


if __name__ == "__main__":
    main()
