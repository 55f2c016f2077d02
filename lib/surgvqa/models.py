"""The project's build helpers: build, save and load the graft and its base VLM from a params config.

The model itself (config, modeling, processing, `graft()`) is the overlay package `qwen2_vl_audio`;
this module decides *which* model a profile builds (embedded tiny VLM or hub ids, 4-bit or not).
Checks and figures about a built graft live in `model_checks`.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from qwen2_vl_audio import Qwen2VLAudioConfig, Qwen2VLAudioForConditionalGeneration, Qwen2VLAudioProcessor, graft
from transformers import AutoProcessor, BitsAndBytesConfig

from . import prompts, wording
from .config import Config
from .tiny_vlm import build_tiny_qwen2_vl
from .whisper_conversion import resolve_whisper

EMBEDDED_VLM = "embedded:tiny-qwen2-vl"
# Modules a 4-bit load must leave in full precision (full prefixes: short names are silently ignored).
QUANTIZATION_SKIP = ["model.audio_tower", "model.visual", "model.audio_projector", "lm_head"]


def graft_dir(cfg: Config) -> Path:
    """The untrained graft of notebook 00."""
    return cfg.paths.stage("graft")


def tokenizer_corpus(seed: int = 0) -> list[str]:
    """Every text the embedded default will read or write: the domain's texts and the prompts' own words."""
    # "Repeat the sentence." is the instruction of a stage-0 task that lost its ablation (docs/RECIPE.md); it stays
    # in the corpus so the embedded tokenizer, and so every run, is the one the recorded runs used
    return wording.domain_texts(seed) + [prompts.VQA_INSTRUCTION, prompts.TRANSCRIBE_INSTRUCTION,
                                         "Repeat the sentence.", "Question:", "You are a helpful assistant."]


def build_graft(cfg: Config, corpus: list[str] | None = None, base: str | None = None
                ) -> tuple[Qwen2VLAudioForConditionalGeneration, Qwen2VLAudioProcessor]:
    """Graft per `cfg.model` onto `base` (a hub id or dir; default `cfg.model.base_vlm`).

    The embedded default without a trained base builds an untrained tiny Qwen2-VL whose tokenizer
    is trained on `corpus`.
    """
    m = cfg.model
    options = dict(
        projector_type=m.projector_type,
        projector_stack_factor=m.projector_stack_factor,
        audio_length_mode=m.audio_length_mode,
    )
    whisper = resolve_whisper(m.whisper, m.whisper_cache_dir)  # the overlay loads HF checkpoints only
    base = base or m.base_vlm
    if base == EMBEDDED_VLM:
        tiny, tokenizer, image_processor = build_tiny_qwen2_vl(corpus or tokenizer_corpus(cfg.seed), seed=cfg.seed, **vars(m.tiny))
        return graft(tiny, whisper, tokenizer=tokenizer, image_processor=image_processor, **options)
    return graft(base, whisper, **options, **load_kwargs(cfg))


def load_kwargs(cfg: Config) -> dict:
    """from_pretrained kwargs of the base VLM: dtype, attention, and 4-bit NF4 when params say so."""
    m = cfg.model
    kwargs = dict(dtype=getattr(torch, m.dtype), attn_implementation=m.attn_implementation)
    if m.load_in_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=getattr(torch, m.dtype),
            bnb_4bit_use_double_quant=True,
            llm_int8_skip_modules=QUANTIZATION_SKIP,
        )
        if torch.cuda.is_available():  # each DDP process holds its replica on its own GPU
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))}
    return kwargs


def save_graft(model, processor, path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


class CheckpointError(RuntimeError):
    """A checkpoint that would load wrong (pickled, or with weights missing / left over); names the folder."""


SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.ckpt")


def _listed(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_graft(path: Path, **kwargs) -> tuple[Qwen2VLAudioForConditionalGeneration, Qwen2VLAudioProcessor]:
    """A saved graft, strictly: safetensors only (never pickle), and every weight present and used.

    transformers would otherwise initialise a missing module (the projector, say) at random with
    only a log line, and unpickle a `pytorch_model.bin`.
    """
    path = Path(path)
    if not any((path / name).is_file() for name in SAFE_WEIGHTS):
        pickled = [name for name in PICKLED_WEIGHTS if (path / name).is_file()]
        raise CheckpointError(f"{path}: no {SAFE_WEIGHTS[0]}" + (f"; {', '.join(pickled)} is a pickle, which this project never loads "
                              "(re-save it with save_pretrained(safe_serialization=True))" if pickled else ""))
    model, info = Qwen2VLAudioForConditionalGeneration.from_pretrained(path, use_safetensors=True, output_loading_info=True, **kwargs)
    problems = [f"{len(info[k])} {k.replace('_', ' ')}: {_listed(map(str, info[k]))}"
                for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(k)]
    if problems:
        raise CheckpointError(f"{path}: checkpoint does not match the model ({'; '.join(problems)})")
    return model.eval(), load_graft_processor(path)


def load_graft_processor(path: Path) -> Qwen2VLAudioProcessor:
    return AutoProcessor.from_pretrained(path)


UPSTREAM_AUDIO = dict(projector_type="linear", projector_stack_factor=1, audio_length_mode="padded")


def upstream_processor(processor: Qwen2VLAudioProcessor) -> Qwen2VLAudioProcessor:
    """The same processor with the upstream repository's audio setting: every 30 s window padded, 1500 tokens each."""
    return Qwen2VLAudioProcessor.from_config(Qwen2VLAudioConfig(**UPSTREAM_AUDIO), processor.image_processor,
                                             processor.tokenizer, processor.feature_extractor)


