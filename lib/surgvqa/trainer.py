"""HF `Trainer` as every stage runs it: TrainingArguments from params, resume from the last whole checkpoint,
early stopping, the best checkpoint at the end, TensorBoard logs, and (stage 1) the val speech's WER as the metric
that keeps a checkpoint. DDP-safe: only the main process deletes or writes a stage's folder.
"""
from __future__ import annotations

import dataclasses
import os
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments

from .checkpoints import StageResult
from .collate import ClipDialogues, Collator, Example, ExampleDataset
from .config import Config
from .infer import predict
from .lora import is_peft
from .metrics import edit_counts

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

    def _load_full_model(self, checkpoint: str) -> None:
        loaded = type(self.model).from_pretrained(checkpoint, dtype=self.model.dtype)
        self.model.load_state_dict(loaded.state_dict(), strict=True)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if is_peft(self.model):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._load_full_model(resume_from_checkpoint)

    def _load_best_model(self):
        if is_peft(self.model):
            return super()._load_best_model()
        self._load_full_model(self.state.best_model_checkpoint)

class WERTrainer(StageTrainer):
    """Stage 1: every evaluation also transcribes the val speech (greedy) and adds its corpus WER as `eval_wer`,
    and `eval_wer_tiebroken`, which (STAGE_DEFAULTS) picks the best checkpoint and drives early stopping.

    `eval_wer_tiebroken` orders by WER, then by loss: a language model that cannot write yet (the embedded one
    before stage 2) scores the same WER every epoch, and without the tie-break stage 1 would stop after
    `patience` epochs and keep its least aligned projector. Its WER counts at most an utterance's own words as
    errors (`capped_word_errors`): a transcript longer than the truth and all wrong is no further from it than an
    empty one, and uncapped insertions made the 1-epoch projector "best" (docs/RECIPE.md)."""

    def __init__(self, *args, wer_examples: list[Example], wer_collator: Collator, max_new_tokens: int = 48, **kwargs):
        super().__init__(*args, **kwargs)
        self.wer_examples, self.wer_collator, self.wer_max_new_tokens = wer_examples, wer_collator, max_new_tokens

    def evaluation_loop(self, *args, **kwargs):
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
                           eval_dataset=ExampleDataset(evaluate) if evaluate else None, callbacks=callbacks)
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
