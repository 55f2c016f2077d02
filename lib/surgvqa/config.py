"""Settings: one typed config for every notebook and command, built from a params file.

`Config.from_yaml` validates a params YAML into dataclasses, so a misspelt key or a wrong type
fails loudly with the key's dotted name instead of silently using a default. Each setting has
one owner here (a stage's TrainingArguments included); `RunPaths` names every folder a run writes.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]


LOCATION_KEYS = ("run_root", "reports_dir", "figures_dir")
# transformers' attention back-ends (kept here: importing transformers to list them is slow).
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
# CTranslate2 compute types faster-whisper accepts.
ASR_COMPUTE_TYPES = ("default", "auto", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16",
                     "float16", "bfloat16", "float32")
# Ranges of TrainingArguments values (types are checked against transformers' own hints):
# (low, high, low inclusive); these fail only minutes later inside torch when out of range.
TRAINING_RANGES: dict[str, tuple[float, float | None, bool]] = {
    "learning_rate": (0.0, None, False),
    "num_train_epochs": (0.0, None, False),
    "per_device_train_batch_size": (1, None, True),
    "per_device_eval_batch_size": (1, None, True),
    "gradient_accumulation_steps": (1, None, True),
    "warmup_steps": (0.0, None, True),
    "weight_decay": (0.0, None, True),
    "max_grad_norm": (0.0, None, True),
    "save_total_limit": (1, None, True),
}


# What the data step does with a test row whose wording the dataset uses in both its template files (data.shared_wordings)
SHARED_WORDING_RULES = ("score_apart", "exclude")

# Options that lost their ablation and left the product (their record: docs/RECIPE.md, reports/ablations/).
REMOVED_OPTIONS = {f"train.{k}" for k in ("repeat_sentences", "balanced_fraction", "loss_per_answer",
                                          "stage1_vqa_fraction", "stage0_vision_tower")}


class ConfigError(ValueError):
    """A params file or dict is malformed; the message names the file and key."""


@dataclass
class TinyVLMConfig:
    """Shape of the tiny Qwen2-VL built from a config for the embedded (offline) default."""

    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 768
    vision_depth: int = 2
    vision_embed_dim: int = 96
    vision_num_heads: int = 4
    vocab_size: int = 2048


@dataclass
class ModelConfig:
    # "embedded:tiny-qwen2-vl" builds a tiny Qwen2-VL from `tiny`; otherwise a hub id or a local dir.
    base_vlm: str = "embedded:tiny-qwen2-vl"
    # "embedded:whisper-base" = the CTranslate2 whisper-base shipped on PyPI; or a hub id / dir.
    whisper: str = "embedded:whisper-base"
    projector_type: str = "mlp"  # linear | mlp
    projector_stack_factor: int = 4  # encoder frames stacked into one audio token
    audio_length_mode: str = "trimmed"  # trimmed (real clip length) | padded (Whisper's native 30 s)
    tiny: TinyVLMConfig = field(default_factory=TinyVLMConfig)
    load_in_4bit: bool = False
    attn_implementation: str = "sdpa"
    dtype: str = "float32"
    gradient_checkpointing: bool = False
    whisper_cache_dir: str | None = None  # None: the user cache dir (platformdirs)

    def __post_init__(self):
        _choice("model.projector_type", self.projector_type, ("linear", "mlp"))
        _choice("model.audio_length_mode", self.audio_length_mode, ("trimmed", "padded"))
        _choice("model.dtype", self.dtype, ("float32", "bfloat16", "float16"))
        _choice("model.attn_implementation", self.attn_implementation, ATTN_IMPLEMENTATIONS)
        _at_least("model.projector_stack_factor", self.projector_stack_factor, 1)


@dataclass
class DataConfig:
    source: str = "synthetic"  # synthetic | a folder with REAL-Colon-VQA style JSONL + frames
    # >= 1,000 training clips over >= 20 videos: every answer of every varying type on >= 20 training clips
    # (notebook 01 checks it). Audio is per (question text, voice), so it does not grow with clips.
    num_videos: int = 30
    clips_per_video: int = 56
    num_frames: int = 8
    frame_size: int = 112
    num_voices: int = 10  # espeak-ng voices (speech.VOICES); the other engines bring their own (speech.ENGINE_VOICES)
    heldout_videos: int = 2  # the dev-test: scored in every notebook and ablation
    # the final test: whole videos (>= 6: a video-level interval) spoken by held-out voices, scored only where
    # `eval.score_final_test` (the reference run); recipes are never chosen on it
    final_test_videos: int = 6
    # per training engine, its last `heldout_voices` voices are held out (an engine with fewer than twice as many keeps
    # them all for training)
    heldout_voices: int = 2
    # the speech engines (speech.ENGINES) whose voices ask the training questions and speak the stage-1 corpus, and the
    # one engine family no training pool of any stage hears: its voices re-ask the dev-test rows (`heldout_engine`)
    # and speak the transcription test sentences; None = none
    voice_engines: list[str] = field(default_factory=lambda: ["espeak", "flite", "festival"])
    heldout_engine: str | None = "piper"
    val_fraction: float = 0.15
    # both wordings in training: a tiny LM trained from scratch does not understand unseen paraphrases (docs/RECIPE.md)
    train_templates: list[str] = field(default_factory=lambda: ["in", "out"])
    test_templates: list[str] = field(default_factory=lambda: ["out"])
    # synthetic data: each `out` row's wording is drawn from its type's first `out_wordings` (the 3 hand-written
    # paraphrases, then generated ones: `wording.out_wordings`); real data brings its own wordings
    out_wordings: int = 3
    noise_snr_db: float | None = None  # operating-room noise mixed into speech; None = clean
    # share of the training recordings (stage-1 pool, stage-2 questions) heard through a random room, microphone and
    # codec (surgvqa.channel); val and the tests stay as spoken. 0 = off
    augment_share: float = 0.0
    # explicit dev-test / final-test videos; [] = the last `final_test_videos` sorted, and the `heldout_videos` before them
    heldout_video_ids: list[str] = field(default_factory=list)
    final_test_video_ids: list[str] = field(default_factory=list)
    # A held-out-wording split (train and test templates disjoint) and a wording the dataset itself uses in both its
    # template files (REAL-Colon-VQA: 2 of its 15 `out` wordings are `in` wordings): "score_apart" keeps those test
    # rows, marked `seen_wording: true`, which the evaluation scores apart; "exclude" leaves them out of the test
    # split, counted in dataset.json. Never a leakage error: the dataset's own property (docs/DATA.md)
    shared_wordings: str = "score_apart"
    # synthetic scene priors over synthetic.DEFAULT_PRIORS: polyps on half the clips that allow one (every histology,
    # size and site on enough training clips)
    priors: dict[str, float] = field(default_factory=lambda: {"lesion": 0.5})
    narration_sentences: int = 100  # template narration sentences in the stage-1 speech corpus
    # texts of the stage-1 corpus held out as unseen speech (stage-1 val by a training voice, the unseen transcription
    # test by the held-out voices): drawn from the texts no training pool of any stage uses (datastep.build_speech_corpus)
    unseen_texts: int = 40
    corpus_voices_per_text: int = 2  # training voices speaking each stage-1 corpus text

    def __post_init__(self):
        _at_least("data.num_videos", self.num_videos, 1)
        _at_least("data.clips_per_video", self.clips_per_video, 1)
        _at_least("data.num_frames", self.num_frames, 2)
        _at_least("data.heldout_videos", self.heldout_videos, 0)
        _at_least("data.final_test_videos", self.final_test_videos, 0)
        _at_least("data.narration_sentences", self.narration_sentences, 0)
        _at_least("data.unseen_texts", self.unseen_texts, 0)
        _at_least("data.out_wordings", self.out_wordings, 1)
        _at_least("data.corpus_voices_per_text", self.corpus_voices_per_text, 1)
        _at_least("data.num_voices", self.num_voices, 1)  # the upper bound (voices that exist): datastep.run_voices
        if self.noise_snr_db is not None and not math.isfinite(self.noise_snr_db):
            raise ConfigError(f"data.noise_snr_db must be a finite number or null, got {self.noise_snr_db}")
        if self.num_frames % 2:
            raise ConfigError(f"data.num_frames must be even (temporal patch 2), got {self.num_frames}")
        if not 16 <= self.frame_size <= 384:
            raise ConfigError(f"data.frame_size must be in 16..384, got {self.frame_size}")
        if not 0.0 <= self.augment_share <= 1.0:
            raise ConfigError(f"data.augment_share must be in [0, 1], got {self.augment_share}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        _choice("data.shared_wordings", self.shared_wordings, SHARED_WORDING_RULES)
        if not self.voice_engines:
            raise ConfigError("data.voice_engines must name at least one speech engine")
        if self.heldout_engine is not None and self.heldout_engine in self.voice_engines:
            raise ConfigError(f"data.heldout_engine {self.heldout_engine!r} is also in data.voice_engines "
                              f"{self.voice_engines}: a held-out engine is heard by no training pool")
        for key in ("train_templates", "test_templates"):
            bad = [t for t in getattr(self, key) if t not in ("in", "out")]
            if bad or not getattr(self, key):
                raise ConfigError(f"data.{key} must be a non-empty list of 'in'/'out', got {getattr(self, key)}")
        if not 0 <= self.heldout_voices < self.num_voices:
            raise ConfigError(f"data.heldout_voices must be in 0..num_voices-1 ({self.num_voices - 1}), got {self.heldout_voices}")
        if set(self.heldout_video_ids) & set(self.final_test_video_ids):
            raise ConfigError(f"videos in both data.heldout_video_ids and data.final_test_video_ids: "
                              f"{sorted(set(self.heldout_video_ids) & set(self.final_test_video_ids))}")
        held = self.heldout_videos + self.final_test_videos
        if self.source == "synthetic" and self.num_videos < held + 1:
            raise ConfigError(f"data.num_videos ({self.num_videos}) must exceed data.heldout_videos + "
                              f"data.final_test_videos ({held})")


@dataclass
class LoraConfig:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )

    def __post_init__(self):
        _at_least("lora.r", self.r, 1)
        _at_least("lora.alpha", self.alpha, 1)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ConfigError("lora.target_modules must name at least one module")


# TrainingArguments of each stage (the reference recipe); params `train.<stage>` overrides any field (merged, not
# replaced). Stage 1 keeps its checkpoint (and stops early) by the val speech's WER, what it is for, with ties in
# WER going to the lower loss (trainer.wer_tiebroken).
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    # bf16: CPU autocast, 0.64x stage 0's wall time at no loss on val (reports/ablations/stage0_bf16.json)
    "stage0": dict(num_train_epochs=8, learning_rate=1e-3, per_device_train_batch_size=8, warmup_steps=0.05, bf16=True),
    "stage1": dict(num_train_epochs=20, learning_rate=1e-3, per_device_train_batch_size=16, warmup_steps=0.05,
                   metric_for_best_model="eval_wer_tiebroken", greater_is_better=False),
    "stage2": dict(num_train_epochs=4, learning_rate=1e-3, per_device_train_batch_size=8, warmup_steps=0.05),
}
# The training stages in order, and the stages each one's result is made from: a stage's stamp covers the train
# options of every stage it is made from (`option`), so a later stage's option never retrains an earlier stage.
STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "stage0": (),
    "stage1": ("stage0",),
    "stage2": ("stage0", "stage1"),
    "stage2_text": ("stage0",),
}


def option(default: Any, *stages: str):
    """A train option and the stages whose result it changes (their stamps cover it; `STAGE_INPUTS`)."""
    unknown = set(stages) - set(STAGE_INPUTS)
    assert not unknown, f"unknown stage(s) {unknown}"
    kind = {"default_factory": lambda: copy.deepcopy(default)} if isinstance(default, (dict, list)) else {"default": default}
    return field(metadata={"stages": stages}, **kind)


@dataclass
class TrainConfig:
    """Training: TrainingArguments per stage (checked against transformers' own fields) + stage options."""

    # TrainingArguments per stage, over STAGE_DEFAULTS (stage2 serves the graft and the text model alike)
    stage0: dict[str, Any] = option({}, "stage0")
    stage1: dict[str, Any] = option({}, "stage1")
    stage2: dict[str, Any] = option({}, "stage2", "stage2_text")
    # evaluations without improvement before a stage stops (0 = never): one number for every stage, or one per
    # stage (a stage not named never stops early); a stage's stamp takes its own (`patience`)
    early_stopping_patience: int | dict[str, int] = option({"stage0": 2, "stage1": 4, "stage2": 2})
    # A second phase of stage 0 from where the first ended, with these TrainingArguments over train.stage0; {} = none
    stage0_refine: dict[str, Any] = option({"num_train_epochs": 6, "learning_rate": 3.0e-4}, "stage0")
    # Stage 1's language model: "frozen" (the upstream recipe: only the projector learns, which aligns speech to a
    # pretrained LLM) or "lora" (projector and a LoRA on the language model, merged into the graft at the end): the
    # embedded LM, trained on VQA alone, cannot be steered into writing by the projector alone
    stage1_language_model: str = option("lora", "stage1")
    # The graft's stage 2: this many conversations about a training clip READ (text mode, clip seen) per conversation
    # heard, on top of the heard ones and drawn anew each epoch, so its language model keeps the sight that stage 1's
    # LoRA erased
    graft_read_ratio: float = option(0.5, "stage2")
    # VQA training examples (stages 0 and 2) are conversations about one clip, re-drawn each epoch:
    questions_per_clip: int = option(6, "stage0", "stage2", "stage2_text")  # questions per conversation, types differ
    # types of a conversation drawn with weight (share of clips with the clip's answer) ** -question_rarity:
    # 0 = uniform; 1 = a rare answer (dye, a tool) is asked about in most epochs of its clip
    question_rarity: float = option(1.0, "stage0", "stage2", "stage2_text")
    stage0_caption: bool = option(True, "stage0")  # stage 0's conversations close with the clip's dense caption
    # Stage 0's first phase on synthetic data: epochs of vision pretraining of the embedded tower on where the lesion,
    # tool, shaft, flush, fluid and dye are (`vision_pretrain`); 0 = the tower stays at its random initialisation
    vision_pretrain_epochs: int = option(0, "stage0")
    eval_rows: int = option(400, "stage0", "stage2", "stage2_text")  # val rows (a fixed sample) of the eval loss
    # Stage 2's mixture (graft and text model alike): this share of the questions asks for the long-form answer
    long_answer_fraction: float = option(0.2, "stage2", "stage2_text")
    # Stage 2 of the graft: this share of its training examples is transcription (train corpus, "Transcribe the speech.")
    transcription_fraction: float = option(0.3, "stage2")
    # Stage 2 of the text model: this share of its training questions is read as whisper-base heard it (the
    # transcript of the row's own audio, training voices only), so the ASR -> text baseline's text model has
    # read misheard questions before it is given them
    heard_question_fraction: float = option(0.3, "stage2_text")
    # Where Trainer logs go (TensorBoard event files under the run dir by default); e.g. [wandb] or []. No result.
    report_to: list[str] = option(["tensorboard"])

    def __post_init__(self):
        if isinstance(self.early_stopping_patience, dict):
            unknown = set(self.early_stopping_patience) - set(STAGE_DEFAULTS)
            if unknown:
                raise ConfigError(f"train.early_stopping_patience: unknown stage(s) {sorted(unknown)}; "
                                  f"the stages are {sorted(STAGE_DEFAULTS)}")
        for stage in STAGE_DEFAULTS:
            patience = self.patience(stage)
            if isinstance(patience, bool) or not isinstance(patience, int):
                raise ConfigError(f"train.early_stopping_patience.{stage} must be an integer, got {patience!r}")
            _at_least(f"train.early_stopping_patience.{stage}", patience, 0)
        _at_least("train.questions_per_clip", self.questions_per_clip, 1)
        _at_least("train.vision_pretrain_epochs", self.vision_pretrain_epochs, 0)
        _at_least("train.eval_rows", self.eval_rows, 1)
        if not isinstance(self.stage0_caption, bool):
            raise ConfigError(f"train.stage0_caption must be true or false, got {self.stage0_caption!r}")
        if self.stage1_language_model not in ("frozen", "lora"):
            raise ConfigError(f"train.stage1_language_model must be 'frozen' or 'lora', got {self.stage1_language_model!r}")
        if not 0.0 <= self.question_rarity <= 2.0:
            raise ConfigError(f"train.question_rarity must be in [0, 2], got {self.question_rarity}")
        # a mixture's share stays below 1 (the rest is what it is mixed into); read per heard conversation may be 1
        for key, top in (("long_answer_fraction", ")"), ("transcription_fraction", ")"), ("heard_question_fraction", ")"),
                         ("graft_read_ratio", "]")):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0 \
                    or (top == ")" and value == 1.0):
                raise ConfigError(f"train.{key} must be a number in [0, 1{top}, got {value!r}")
        _check_training_arguments("stage0_refine", self.stage0_refine)
        for stage, defaults in STAGE_DEFAULTS.items():
            given = getattr(self, stage)
            _check_training_arguments(stage, given)
            setattr(self, stage, {**defaults, **given})

    def patience(self, stage: str) -> int:
        """Early-stopping patience of `stage` (stage0, stage1, stage2; the text model's stage 2 is stage2)."""
        stage = "stage2" if stage == "stage2_text" else stage
        if isinstance(self.early_stopping_patience, dict):
            return self.early_stopping_patience.get(stage, 0)
        return self.early_stopping_patience


@dataclass
class EvalConfig:
    batch_size: int = 32
    max_new_tokens: int = 8
    speed_rows: int = 48  # rows every system is timed on (same rows, same batch size)
    noise_snr_db: float = 5.0  # SNR of the operating-room noise for the noisy condition
    bootstrap: int = 1000
    asr_compute_type: str = "int8"  # faster-whisper on the CPU: its usual (fastest) setting, so the speed ratio is conservative
    max_rows: int | None = 1000  # rows per split, a seeded sample (the same rows for every system); None = all
    max_transcription_rows: int | None = None  # cap per transcription test set (a seeded sample); None = all
    long_answer_rows: int = 200  # held-out-video rows (a seeded sample) answered in a sentence by each system
    long_max_new_tokens: int = 40  # generation budget of a long answer
    # the final test (`data.final_test_videos`) is scored only by the reference run (params/default.yaml): recipes
    # and ablations are chosen on val and the dev-test (held-out video / voice)
    score_final_test: bool = False

    def __post_init__(self):
        _at_least("eval.batch_size", self.batch_size, 1)
        _at_least("eval.max_new_tokens", self.max_new_tokens, 1)
        _at_least("eval.speed_rows", self.speed_rows, 1)
        _at_least("eval.bootstrap", self.bootstrap, 0)
        if self.max_rows is not None:
            _at_least("eval.max_rows", self.max_rows, 1)
        _at_least("eval.long_answer_rows", self.long_answer_rows, 0)
        _at_least("eval.long_max_new_tokens", self.long_max_new_tokens, 1)
        if self.max_transcription_rows is not None:
            _at_least("eval.max_transcription_rows", self.max_transcription_rows, 1)
        if not math.isfinite(self.noise_snr_db):
            raise ConfigError(f"eval.noise_snr_db must be a finite number, got {self.noise_snr_db}")
        _choice("eval.asr_compute_type", self.asr_compute_type, ASR_COMPUTE_TYPES)


@dataclass
class Config:
    profile: str = "default"
    seed: int = 0
    # Every file a run writes goes under <run_root>/<profile>/ (relative paths: to the repository).
    run_root: str = "runs"
    # Executed notebooks + index.html, and figures; None = inside the run dir. Only the reference
    # profile points them at the committed reports/ and figures/.
    reports_dir: str | None = None
    figures_dir: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    params_source: str = "<defaults>"  # where the params came from, for error messages and reports

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_params(cls, params: dict[str, Any] | None = None, source: str = "<params>") -> "Config":
        params = dict(params or {})
        profile = str(params.get("profile", cls.profile))
        if not profile.replace("-", "_").isidentifier():
            raise ConfigError(f"{source}: 'profile' must be a simple name (used as runs/<profile>/), got {profile!r}")
        cfg = _build(cls, params, source, prefix="")
        cfg.params_source = source
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> "Config":
        """The params file at `path` (relative: to the repository), with `overrides` merged in
        section by section (e.g. {"run_root": "/tmp/runs"} or {"eval": {"max_rows": 8}})."""
        path = Path(path)
        if not path.is_absolute() and not path.exists():
            path = REPO_ROOT / path
        if path.is_dir():
            raise ConfigError(f"params path is a directory, not a YAML file: {path}")
        try:
            params = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"params file not found: {path}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the params file ({e.strerror})") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(params, dict):
            raise ConfigError(f"{path}: expected a mapping of parameters at the top level")
        return cls.from_params(_merge(params, overrides or {}), source=shown_path(path))

    # ---- derived paths ------------------------------------------------------------------
    @property
    def paths(self) -> "RunPaths":
        return RunPaths(self)

    # ---- reporting ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("params_source")
        return d

    def params_hash(self) -> str:
        """Hash of what the params make (where the run writes is left out: a moved run is the same run)."""
        what = {k: v for k, v in self.to_dict().items() if k not in LOCATION_KEYS}
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]

    def write_metrics(self, name: str, metrics: dict[str, Any]) -> Path:
        """Write a notebook's metrics JSON together with the params that produced it."""
        out = self.paths.metrics / f"{name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"metrics": metrics, "params": self.to_dict(), "params_hash": self.params_hash(), "params_source": self.params_source}
        out.write_text(json.dumps(payload, indent=2, sort_keys=True, default=json_default))
        return out


class RunPaths:
    """Every folder and file a run writes, named once (all under `<run_root>/<profile>/`)."""

    def __init__(self, cfg: Config):
        self.run = _under_repo(cfg.run_root) / cfg.profile
        self.reports = _under_repo(cfg.reports_dir) if cfg.reports_dir else self.run / "reports"
        self.figures = _under_repo(cfg.figures_dir) if cfg.figures_dir else self.run / "figures"
        self.data = self.run / "data"
        self.checkpoints = self.run / "checkpoints"
        self.metrics = self.run / "metrics"
        self.eval = self.run / "eval"  # predictions and derived (noisy) audio of the evaluation
        self.logs = self.run / "logs"  # training logs (TensorBoard event files), one folder per stage
        self.timings = self.run / "pipeline_timings.json"

    def stage(self, name: str) -> Path:
        """Checkpoints of one training stage (stage0, stage1, stage2, stage2_text) or the untrained graft."""
        return self.checkpoints / name

    def noisy(self, snr_db: float) -> Path:
        """Audio mixed with operating-room noise at `snr_db` (`speech.noisy_copy`), shared by every notebook."""
        return self.eval / f"noisy_snr{snr_db:g}"

    def cache(self, name: str) -> Path:
        return self.run / "cache" / name

    def make(self) -> "RunPaths":
        for d in (self.run, self.data, self.checkpoints, self.metrics, self.reports, self.figures):
            d.mkdir(parents=True, exist_ok=True)
        return self


def shown_path(path: str | Path) -> str:
    """A path as reports show it: relative to the repository when inside it."""
    p = Path(path).resolve()
    return p.relative_to(REPO_ROOT).as_posix() if p.is_relative_to(REPO_ROOT) else str(path)


def _under_repo(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def _merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _check_training_arguments(stage: str, given: dict[str, Any]) -> None:
    """Keys must be TrainingArguments fields (did-you-mean), values of the field's simple type."""
    from transformers import TrainingArguments  # heavy: only when a params file has a train section

    hints = typing.get_type_hints(TrainingArguments)
    fields = {f.name for f in dataclasses.fields(TrainingArguments)} - {"output_dir"}
    for name, value in given.items():
        dotted = f"train.{stage}.{name}"
        if name not in fields:
            close = difflib.get_close_matches(name, fields, n=1)
            raise ConfigError(f"'{dotted}' is not a TrainingArguments field" + (f" (did you mean 'train.{stage}.{close[0]}'?)" if close else ""))
        simple = [t for t in (typing.get_args(hints[name]) or (hints[name],)) if t in (int, float, str, bool)]
        if simple and value is not None and not any(_is_instance(value, t) for t in simple):
            raise ConfigError(f"'{dotted}' must be {' or '.join(t.__name__ for t in simple)}, got {value!r}")
        if name in TRAINING_RANGES and _is_instance(value, float):
            low, high, inclusive = TRAINING_RANGES[name]
            if not math.isfinite(value) or (value < low if inclusive else value <= low) or (high is not None and value > high):
                bound = f">= {low}" if inclusive else f"> {low}"
                raise ConfigError(f"'{dotted}' must be {bound}, got {value!r}")


def _is_instance(value, tp) -> bool:
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _at_least(key: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"{key} must be >= {low}, got {value}")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {list(allowed)}, got {value!r}")


def _build(dc_type, values: dict[str, Any], source: str, prefix: str):
    """Instantiate dataclass `dc_type` from `values`, checking every key and type."""
    hints = typing.get_type_hints(dc_type)
    names = {f.name for f in dataclasses.fields(dc_type) if f.name != "params_source"}
    kwargs = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if dotted in REMOVED_OPTIONS:
            raise ConfigError(f"{source}: '{dotted}' was removed: it lost its ablation (docs/RECIPE.md)")
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"{source}: unknown key '{dotted}'{hint}")
        kwargs[key] = _coerce(hints[key], value, source, dotted)
    try:
        return dc_type(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def _coerce(tp, value, source: str, dotted: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{dotted}' must be a mapping, got {type(value).__name__}")
        return _build(tp, value, source, prefix=f"{dotted}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, source, dotted)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: '{dotted}' must be a list, got {type(value).__name__}")
        return [_coerce(args[0], v, source, f"{dotted}[{i}]") for i, v in enumerate(value)] if args else value
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{dotted}' must be a mapping, got {type(value).__name__}")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{source}: '{dotted}' must be {tp.__name__}, got {value!r}")
        return value
    return value
