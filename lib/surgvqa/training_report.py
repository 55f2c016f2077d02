"""Training as a reader sees it: loss curves (from the TensorBoard event files), parameters per
component, the training budget, the feature cache's speed-up, and notebooks 02/03's metrics.

Diagnostics beside `train` (which runs the stages).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from .collate import Collator, Example
from .config import Config
from .caches import FeatureCache
from .checkpoints import StageResult, stage_dir


def cache_speedup(model, processor, cache: FeatureCache, examples: list[Example], batch_size: int = 16,
                  steps: int = 6) -> dict[str, float]:
    """Seconds per training step (forward + backward) with and without the feature cache, and the
    implied epoch times; parameters are not updated."""
    batches = [examples[i * batch_size : (i + 1) * batch_size] for i in range(steps)]
    batches = [b for b in batches if b]
    model.train()
    timings = {}
    for name, collator in (("with_cache", Collator(processor, feature_cache=cache)), ("without_cache", Collator(processor))):
        collator(batches[0])  # warm the frame cache and kernels
        start = time.perf_counter()
        for batch in batches:
            loss = model(**collator(batch)).loss
            loss.backward()
        model.zero_grad(set_to_none=True)
        timings[name] = (time.perf_counter() - start) / len(batches)
    steps_per_epoch = -(-len(examples) // batch_size)
    return {"step_s_with_cache": round(timings["with_cache"], 4), "step_s_without_cache": round(timings["without_cache"], 4),
            "epoch_s_with_cache": round(timings["with_cache"] * steps_per_epoch, 2),
            "epoch_s_without_cache": round(timings["without_cache"] * steps_per_epoch, 2),
            "speedup": round(timings["without_cache"] / timings["with_cache"], 2), "steps_timed": len(batches)}


COMPONENTS = {"audio tower": "model.audio_tower.", "audio projector": "model.audio_projector.",
              "vision tower": "model.visual.", "language model": "model.language_model.", "lm head": "lm_head."}


def lora_report(model) -> "pd.DataFrame":
    """Per component: LoRA-wrapped modules, trainable and frozen parameters (towers must show 0 / 0), of a
    PeftModel or a plain graft."""
    import pandas as pd

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    rows = []
    for component, prefix in COMPONENTS.items():
        params = [(n, p) for n, p in inner.named_parameters() if n.startswith(prefix)]
        lora_modules = {n.rsplit(".lora_", 1)[0] for n, _ in params if ".lora_" in n}
        rows.append({"component": component, "lora_modules": len(lora_modules),
                     "trainable": sum(p.numel() for _, p in params if p.requires_grad),
                     "frozen": sum(p.numel() for _, p in params if not p.requires_grad)})
    return pd.DataFrame(rows).set_index("component")


def training_budget(cfg: Config) -> "pd.DataFrame":
    """Wall time and throughput of every finished stage of this run (from each stage.json)."""
    import pandas as pd

    rows = []
    for name in ("stage0", "stage1", "stage2", "stage2_text"):
        if (stage_dir(cfg, name) / "stage.json").is_file():
            r = StageResult.load(stage_dir(cfg, name))
            rows.append({"stage": name, "wall_time_s": r.wall_time_s, "train_samples_per_s": r.train_samples_per_s,
                         "global_step": r.global_step,
                         # evaluations and checkpoint saves included
                         "wall_s_per_step": round(r.wall_time_s / r.global_step, 3) if r.global_step else None,
                         "epochs": r.epochs, "best_eval_loss": r.best_eval_loss})
    return pd.DataFrame(rows).set_index("stage") if rows else pd.DataFrame(columns=["wall_time_s"])


def loss_curves(result: StageResult, log_dir: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, eval) DataFrames of loss vs step: from the log history kept in stage.json (it holds every phase of
    a stage, `train.one_stage`; a resumed run's history is the checkpoint's plus what followed), else from the
    stage's TensorBoard event files in `log_dir`."""
    hist = pd.DataFrame(result.log_history)
    if "step" not in hist or ("loss" not in hist and "eval_loss" not in hist):
        if log_dir is not None and any(Path(log_dir).glob("events.out.tfevents.*")):
            return _tensorboard_losses(Path(log_dir))
        hist = pd.DataFrame(columns=["step"])
    hist = hist.sort_values("step", kind="stable")
    return tuple(_last_per_step(hist.dropna(subset=[c])[["step", c]] if c in hist else pd.DataFrame(columns=["step", c]))
                 for c in ("loss", "eval_loss"))


def _last_per_step(frame: pd.DataFrame) -> pd.DataFrame:
    """A resumed run logs some steps twice: keep the last value of each step."""
    return frame.drop_duplicates("step", keep="last").reset_index(drop=True)


def _tensorboard_losses(log_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0}).Reload()
    tags = set(events.Tags()["scalars"])

    def scalars(tag: str, column: str) -> pd.DataFrame:
        points = events.Scalars(tag) if tag in tags else []
        return _last_per_step(pd.DataFrame({"step": [e.step for e in points], column: [e.value for e in points]}))

    return scalars("train/loss", "loss"), scalars("eval/loss", "eval_loss")


def plot_loss_curves(cfg: Config, results: list[StageResult], title: str = "Loss"):
    """Train and eval loss of each stage (all its phases), against the optimizer step."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 3.6), squeeze=False)
    for ax, result in zip(axes[0], results):
        train, evaluation = loss_curves(result, cfg.paths.logs / Path(result.output_dir).name)
        ax.plot(train["step"], train["loss"], label="train", color="tab:blue")
        if len(evaluation):
            ax.plot(evaluation["step"], evaluation["eval_loss"], "o-", label="eval", color="tab:orange")
        if result.best_checkpoint and len(evaluation):
            best = evaluation.loc[evaluation["eval_loss"].idxmin()]
            ax.axvline(best["step"], color="grey", ls=":", lw=1, label=f"best (step {int(best['step'])})")
        ax.set(xlabel="optimizer step", ylabel="cross-entropy (answer tokens)", title=f"{title}: {result.stage}", yscale="log")
        ax.legend()
    fig.tight_layout()
    return fig


def stage1_metrics(stage0: StageResult | None, stage1: StageResult, feature_cache: dict[str, float], asr: dict[str, dict],
                   transcripts: pd.DataFrame) -> dict[str, Any]:
    """Notebook 02's metrics JSON: stage 0 (if trained), stage 1, the feature cache, transcription WER/CER."""
    return {
        "stage0": stage0.metrics() if stage0 else None,
        "stage1": stage1.metrics(),
        "trainable_parameters": stage1.trainable_parameters,
        "frozen_parameters": stage1.frozen_parameters,
        "wall_time_s": stage1.wall_time_s + (stage0.wall_time_s if stage0 and not stage0.reused else 0.0),
        "feature_cache": feature_cache,
        # the graft after stage 1 on held-out voices, per sentence set (`evaluate.transcription_test`)
        **{f"wer_{name}": r["wer"] for name, r in asr["graft"].items()},
        **{f"cer_{name}": r["cer"] for name, r in asr["graft"].items()},
        "asr": asr,
        "transcription_rows": len(transcripts),
    }


def stage2_metrics(cfg: Config, audio: StageResult, text: StageResult, report: pd.DataFrame) -> dict[str, Any]:
    """Notebook 03's metrics JSON: both LoRA runs, where LoRA went, and the whole training budget."""
    budget = training_budget(cfg)
    return {
        "audio": audio.metrics(),
        "text": text.metrics(),
        "lora": {"r": cfg.lora.r, "alpha": cfg.lora.alpha, "dropout": cfg.lora.dropout, "target_modules": cfg.lora.target_modules,
                 "load_in_4bit": cfg.model.load_in_4bit},
        "lora_report": json.loads(report.to_json(orient="index")),
        "trainable_parameters": audio.trainable_parameters,
        "frozen_parameters": audio.frozen_parameters,
        "wall_time_s": audio.wall_time_s + text.wall_time_s,
        "final_train_loss": audio.final_train_loss,
        "best_eval_loss": audio.best_eval_loss,
        "samples_per_s": audio.train_samples_per_s,
        "peak_memory_mb": audio.peak_memory_mb,
        "training_budget_s": budget.to_dict(),
        "stages_0_to_2_s": float(budget["wall_time_s"].sum()),
    }
