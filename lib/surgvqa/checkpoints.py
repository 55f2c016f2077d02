"""A run's trained stages on disk: where each stage writes, what it depends on (its stamp), its result record,
and loading what it left (the base VLM, the text model) with the towers' caches. Everything outside training
reads checkpoints through here, never through the trainer.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import models
from .caches import FeatureCache, VisionCache
from .config import REPO_ROOT, STAGE_INPUTS, Config, TrainConfig
from .data import load_frames, read_data_meta
from .lora import is_peft


def stage_dir(cfg: Config, stage: str) -> Path:
    """Checkpoints of one training stage (stage0, stage1, stage2, stage2_text) or the untrained graft."""
    return cfg.paths.stage(stage)


def base_vlm_source(cfg: Config) -> str:
    """What the graft is built on: the stage-0 model (embedded default) or the hub id / dir in params."""
    return str(stage_dir(cfg, "stage0") / "final") if cfg.model.base_vlm == models.EMBEDDED_VLM else cfg.model.base_vlm


def load_text_base(cfg: Config, source: str | Path | None = None):
    """The base VLM (stage 0 or the hub model), or another text-only Qwen2-VL checkpoint at `source`
    (the merged text model), for text questions; the graft's processor serves it too."""
    from transformers import Qwen2VLForConditionalGeneration

    return Qwen2VLForConditionalGeneration.from_pretrained(source or base_vlm_source(cfg), **models.load_kwargs(cfg))


def feature_cache(cfg: Config, model, processor) -> FeatureCache:
    """The frozen Whisper encoder's output per audio file (stages 1, 2 and the evaluation)."""
    return FeatureCache(cfg.paths.cache("whisper_features"), model.get_base_model() if is_peft(model) else model,
                        processor)


def vision_cache(cfg: Config, model, processor) -> VisionCache:
    """The frozen vision tower's tokens per clip (stages 0, 1, 2 and the evaluation)."""
    return VisionCache(cfg.paths.cache("vision_tokens"), model, processor, load_frames)


def stage_options(cfg: Config, stage: str) -> dict[str, Any]:
    """The train options `stage`'s result depends on: those declared for it or for a stage it is made from
    (`config.option`, `config.STAGE_INPUTS`), with each of those stages' early-stopping patience."""
    stages = {stage, *STAGE_INPUTS[stage]}
    options = {f.name: getattr(cfg.train, f.name) for f in dataclasses.fields(TrainConfig)
               if stages & set(f.metadata["stages"])}
    options["early_stopping_patience"] = {s: cfg.train.patience(s) for s in sorted(stages)}
    return options


def training_code_files() -> list[Path]:
    """The source a stage's result is made by: the `surgvqa` modules that `stages` imports, directly or not, and
    the model overlay (`qwen2_vl_audio`)."""
    lib = Path(__file__).resolve().parent
    todo, seen = ["stages"], set()
    while todo:
        name = todo.pop()
        if name in seen or not (lib / f"{name}.py").is_file():
            continue
        seen.add(name)
        for node in ast.walk(ast.parse((lib / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                todo += [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
    overlay = REPO_ROOT / "transformers_fork" / "qwen2_vl_audio"
    return sorted(lib / f"{m}.py" for m in seen) + sorted(overlay.glob("*.py"))


def code_hash(paths: list[Path]) -> str:
    """A hash of what these modules do: their syntax trees without docstrings, so an edit of a comment, a docstring
    or the layout reuses every result made by them, while any change to a statement does not."""
    digest = hashlib.sha256()
    for path in paths:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                    and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        digest.update(path.name.encode() + b"\0" + ast.dump(tree).encode() + b"\0")
    return digest.hexdigest()[:16]


@functools.cache
def training_code_hash() -> str:
    """`code_hash` of `training_code_files`: a stage trained by other code is neither reused nor resumed."""
    return code_hash(training_code_files())


def stage_stamp(cfg: Config, stage: str) -> str:
    """What a stage's result depends on: a resumed or reused run must match it (a finished stage is reused when
    its stamp matches, so an option of a later stage never retrains the base VLM, while a change to the code that
    trains it does: `training_code_hash`)."""
    parts = {"stage": stage, "seed": cfg.seed, "code": training_code_hash(), "model": dataclasses.asdict(cfg.model),
             "data": read_data_meta(cfg.paths.data)["stamp"], "options": stage_options(cfg, stage)}
    if stage != "stage0":  # stage 2's LoRA, and stage 1's with `train.stage1_language_model: lora`
        parts["lora"] = dataclasses.asdict(cfg.lora)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class StageResult:
    """What one stage run did (saved as `stage.json` next to its checkpoints)."""

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
