"""One typed config for every notebook, built from a papermill params file.

A params YAML's top-level keys are the notebooks' parameters (papermill injects them);
`Config.from_params` validates them into dataclasses, so a misspelt key or a wrong type
fails loudly with the key's dotted name instead of silently using a default.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
# The reference run writes to the committed reports/ and figures/; every other profile
# keeps its reports inside its own run directory so it can never overwrite them.
REFERENCE_PROFILE = "default"


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
        if self.projector_stack_factor < 1:
            raise ConfigError(f"model.projector_stack_factor must be >= 1, got {self.projector_stack_factor}")


@dataclass
class DataConfig:
    source: str = "synthetic"  # synthetic | a folder with REAL-Colon-VQA style JSONL + frames
    num_videos: int = 6
    clips_per_video: int = 12
    num_frames: int = 8
    frame_size: int = 112
    num_voices: int = 10
    heldout_videos: int = 1
    heldout_voices: int = 2
    val_fraction: float = 0.15
    train_templates: list[str] = field(default_factory=lambda: ["in"])
    test_templates: list[str] = field(default_factory=lambda: ["out"])
    noise_snr_db: float | None = None  # operating-room noise mixed into speech; None = clean
    heldout_video_ids: list[str] = field(default_factory=list)  # explicit test videos; [] = last `heldout_videos` sorted
    priors: dict[str, float] = field(default_factory=dict)  # synthetic scene priors overriding synthetic.DEFAULT_PRIORS
    narration_sentences: int = 60  # template narration sentences in the stage-1 speech corpus
    corpus_voices_per_text: int = 2  # training voices speaking each stage-1 corpus text

    def __post_init__(self):
        if self.num_frames % 2:
            raise ConfigError(f"data.num_frames must be even (temporal patch 2), got {self.num_frames}")
        if not 16 <= self.frame_size <= 384:
            raise ConfigError(f"data.frame_size must be in 16..384, got {self.frame_size}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        for key in ("train_templates", "test_templates"):
            bad = [t for t in getattr(self, key) if t not in ("in", "out")]
            if bad or not getattr(self, key):
                raise ConfigError(f"data.{key} must be a non-empty list of 'in'/'out', got {getattr(self, key)}")
        if not 0 <= self.heldout_voices < self.num_voices:
            raise ConfigError(f"data.heldout_voices must be in 0..num_voices-1 ({self.num_voices - 1}), got {self.heldout_voices}")
        if self.source == "synthetic" and self.num_videos < self.heldout_videos + 1:
            raise ConfigError(f"data.num_videos ({self.num_videos}) must exceed data.heldout_videos ({self.heldout_videos})")


@dataclass
class LoraConfig:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class Config:
    profile: str = "default"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    # Free-form sections consumed by later stages (TrainingArguments kwargs per stage, eval options).
    train: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
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
    def from_yaml(cls, path: str | Path) -> "Config":
        path = Path(path)
        try:
            params = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"params file not found: {path}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(params, dict):
            raise ConfigError(f"{path}: expected a mapping of parameters at the top level")
        return cls.from_params(params, source=str(path))

    # ---- derived paths ------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        # SURGVQA_RUNS_DIR moves every run directory (tests put the smoke pipeline in a temp dir).
        return Path(os.environ.get("SURGVQA_RUNS_DIR", REPO_ROOT / "runs")) / self.profile

    @property
    def checkpoints_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def metrics_dir(self) -> Path:
        return self.run_dir / "metrics"

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    @property
    def reports_dir(self) -> Path:
        return REPO_ROOT / "reports" if self.profile == REFERENCE_PROFILE else self.run_dir / "reports"

    @property
    def figures_dir(self) -> Path:
        return REPO_ROOT / "figures" if self.profile == REFERENCE_PROFILE else self.run_dir / "figures"

    # ---- reporting ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("params_source")
        return d

    def params_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def write_metrics(self, name: str, metrics: dict[str, Any]) -> Path:
        """Write a notebook's metrics JSON together with the params that produced it."""
        self.metrics_dir.mkdir(parents=True, exist_ok=True)
        out = self.metrics_dir / f"{name}.json"
        payload = {"metrics": metrics, "params": self.to_dict(), "params_hash": self.params_hash(), "params_source": self.params_source}
        out.write_text(json.dumps(payload, indent=2, sort_keys=True, default=json_default))
        return out


def json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


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
