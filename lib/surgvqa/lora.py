"""LoRA on the language model only.

A plain target list like ["q_proj", "v_proj"] also matches Whisper's attention layers, so the
targets are turned into one regex anchored inside `model.language_model.layers`; the towers are
never wrapped and the projector is trained in full (`modules_to_save`).
"""
from __future__ import annotations

import re

from peft import LoraConfig as PeftLoraConfig

from .config import Config, LoraConfig

ATTENTION = {"q_proj", "k_proj", "v_proj", "o_proj"}
MLP = {"gate_proj", "up_proj", "down_proj"}


def language_model_target_regex(target_modules: list[str]) -> str:
    unknown = set(target_modules) - ATTENTION - MLP
    if unknown:
        raise ValueError(f"lora.target_modules: unknown module(s) {sorted(unknown)}; choose from {sorted(ATTENTION | MLP)}")
    parts = []
    if attn := sorted(ATTENTION & set(target_modules)):
        parts.append(r"self_attn\.(" + "|".join(map(re.escape, attn)) + ")")
    if mlp := sorted(MLP & set(target_modules)):
        parts.append(r"mlp\.(" + "|".join(map(re.escape, mlp)) + ")")
    return r".*model\.language_model\.layers\.\d+\.(" + "|".join(parts) + ")"


def peft_lora_config(lora: LoraConfig, with_projector: bool = True) -> PeftLoraConfig:
    """`with_projector`: the graft trains its audio projector in full; a text-only VLM has none."""
    return PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=language_model_target_regex(lora.target_modules),
        modules_to_save=["audio_projector"] if with_projector else None,
        task_type="CAUSAL_LM",
    )


def add_lora(cfg: Config, model, with_projector: bool):
    """LoRA on the language model only (the towers are never wrapped); the projector trains in full.
    Its initial weights come from the current random state: a stage seeds before calling it (`stages`)."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    if cfg.model.load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.model.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_model = get_peft_model(model, peft_lora_config(cfg.lora, with_projector=with_projector))
    if hasattr(peft_model.base_model.model, "freeze_audio_tower"):
        peft_model.base_model.model.freeze_audio_tower()
    return peft_model


def is_peft(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)
