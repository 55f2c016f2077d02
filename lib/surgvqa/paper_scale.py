"""Paper scale without a hub or a GPU: the graft of a hub-sized profile built on the meta device.

The public `config.json` of Qwen2-VL-2B/7B-Instruct (with their `preprocessor_config.json`) and of
whisper-large-v3-turbo / small / base live in `model_configs/` (configs only, no weights). `meta_graft` builds the graft from them through
the overlay's own `graft()` with every tensor on the meta device (no memory, no download), so the
shapes a params file implies can be checked in seconds: parameters per component, the projector,
LoRA's wrapped modules and trainable parameters, visual and audio tokens from the processor itself,
and an estimate of a training step's peak GPU memory at batch 1 (`memory_estimate`).

The estimate is arithmetic, not a measurement. Its assumptions, as this project trains:
- bf16: every base weight in bf16, activations in bf16.
- nf4: `nn.Linear` weights of the language model in NF4 with double quantisation (0.5 byte + 1/64
  of an 8-bit absmax + 1/4096 for the fp32 scale per 256 blocks, per weight); `prepare_model_for_kbit_training`
  (train.add_lora) casts every other weight (towers, embeddings, norms, projector) to fp32, so the
  hidden states, and the activations with them, are fp32 too.
- trainable parameters (LoRA + the projector's trained copy): fp32 weight, gradient and two AdamW
  moments (16 bytes each); the projector's frozen original stays in the weights.
- activations at batch 1: with gradient checkpointing each decoder layer keeps its input (S x h) and
  one layer is recomputed at a time (~16 S x h + 5 S x I: attention and MLP tensors, LoRA dropout
  copies); without it every layer keeps that. The logits and the loss's fp32 copies cost 12-14 bytes
  per (token, vocabulary entry). SDPA keeps no S x S scores; eager attention adds heads x S^2 per
  layer. The frozen towers keep no activations (no gradient flows into them).
- a fixed 0.75 GB for the CUDA context and allocator slack.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .config import Config

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
# Hub ids (and the embedded whisper-base) -> the folder of their public config.json.
HUB_CONFIGS = {
    "Qwen/Qwen2-VL-7B-Instruct": "Qwen2-VL-7B-Instruct",
    "Qwen/Qwen2-VL-2B-Instruct": "Qwen2-VL-2B-Instruct",
    "openai/whisper-large-v3-turbo": "whisper-large-v3-turbo",
    "openai/whisper-small": "whisper-small",
    "openai/whisper-base": "whisper-base",
    "embedded:whisper-base": "whisper-base",
}
GB = 1e9
# Prompt text around the media, in tokens (the real Qwen2 tokenizer is not here): the system turn
# and chat markup once, then each question's instruction, markup and short answer.
SYSTEM_TOKENS = 32
TEXT_TOKENS_PER_QUESTION = 24
RUNTIME_OVERHEAD_GB = 0.75
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4 bits + double-quantised absmax (blocksize 64, 256 blocks per fp32 scale)
# What the seeds reported for the 7B graft (1500 audio tokens per 30 s, 8 frames at 384 px).
SEEDS_REPORTED = {"qlora_peak_gb_batch1": 21.0, "gpu": "A100"}


def config_dir(name: str) -> Path:
    """The folder holding the public config.json of hub id `name`."""
    if name not in HUB_CONFIGS:
        raise KeyError(f"no stored config for {name!r}; stored: {sorted(HUB_CONFIGS)} (add its config.json under {CONFIG_DIR})")
    return CONFIG_DIR / HUB_CONFIGS[name]


def _tokenizer():
    """A toy tokenizer with Qwen2-VL's special tokens and the audio tokens (only their ids matter here)."""
    from .tiny_vlm import train_tokenizer

    return train_tokenizer(["a spoken question about a colonoscopy clip"], 300)


def meta_graft(cfg: Config, **graft_options):
    """The graft `cfg.model` describes, built by `qwen2_vl_audio.graft` with every tensor on the meta
    device, and its processor (the checkpoint's image processor settings, Whisper's feature extractor).
    `graft_options` override the params' projector_type / projector_stack_factor / audio_length_mode."""
    from qwen2_vl_audio import graft
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, WhisperConfig, WhisperFeatureExtractor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    m = cfg.model
    options = dict(projector_type=m.projector_type, projector_stack_factor=m.projector_stack_factor,
                   audio_length_mode=m.audio_length_mode) | graft_options
    base_config = Qwen2VLConfig.from_pretrained(config_dir(m.base_vlm))
    whisper_config = WhisperConfig.from_pretrained(config_dir(m.whisper))
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(config_dir(m.base_vlm))  # the checkpoint's pixel limits
    with torch.device("meta"):
        base = Qwen2VLForConditionalGeneration(base_config).to(getattr(torch, m.dtype))
        encoder = WhisperEncoder(whisper_config)
        return graft(base, encoder, tokenizer=_tokenizer(), image_processor=image_processor,
                     feature_extractor=WhisperFeatureExtractor(feature_size=whisper_config.num_mel_bins), **options)


def visual_tokens(processor, num_frames: int, frame_size: int) -> int:
    """`<|video_pad|>` tokens of one clip of `num_frames` frames of `frame_size` px, as the processor expands them."""
    from PIL import Image

    frames = [Image.new("RGB", (frame_size, frame_size))] * num_frames
    inputs = processor(text=["<|vision_start|><|video_pad|><|vision_end|>"], videos=[frames])
    return int((inputs["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")).sum())


def audio_tokens(processor, seconds: float) -> int:
    """`<|audio_pad|>` tokens of a clip of `seconds` seconds (the processor featurises a silent clip)."""
    _, counts = processor.audio_features([np.zeros(int(round(seconds * 16000)), dtype=np.float32)])
    return counts[0]


def parameter_groups(model) -> dict[str, int]:
    """Parameters by component, and the ones a 4-bit load quantises (nn.Linear weights outside the skip list)."""
    from .models import QUANTIZATION_SKIP

    quantized = sum(mod.weight.numel() for name, mod in model.named_modules()
                    if isinstance(mod, torch.nn.Linear) and not name.startswith(tuple(QUANTIZATION_SKIP)))
    inner = model.model
    groups = {
        "language_model": sum(p.numel() for p in inner.language_model.parameters()),
        "lm_head": 0 if model.lm_head.weight is model.get_input_embeddings().weight else model.lm_head.weight.numel(),
        "visual": sum(p.numel() for p in inner.visual.parameters()),
        "audio_tower": sum(p.numel() for p in inner.audio_tower.parameters()),
        "audio_projector": sum(p.numel() for p in inner.audio_projector.parameters()),
    }
    groups["total"] = sum(p.numel() for p in model.parameters())
    groups["quantized"] = quantized
    return groups


def lora_counts(model, cfg: Config) -> dict[str, int]:
    """LoRA of `cfg.lora` on the (meta) graft as stage 2 adds it: wrapped modules, LoRA parameters,
    and everything trainable (LoRA + the projector's trained copy). Wraps `model` in place."""
    from peft import get_peft_model
    from peft.tuners.lora import LoraLayer

    from .lora import peft_lora_config

    peft_model = get_peft_model(model, peft_lora_config(cfg.lora))
    wrapped = [mod for mod in peft_model.modules() if isinstance(mod, LoraLayer)]
    lora = sum(p.numel() for name, p in peft_model.named_parameters() if "lora_" in name)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    return {"wrapped_modules": len(wrapped), "lora_params": lora, "trainable_params": trainable}


def sequence_tokens(visual: int, audio: int, questions: int) -> int:
    """Tokens of one training sample: the clip once, then `questions` spoken questions with their answers."""
    return SYSTEM_TOKENS + visual + questions * (audio + TEXT_TOKENS_PER_QUESTION)


def memory_estimate(groups: dict[str, int], trainable: int, text_config, seq_len: int, precision: str,
                    gradient_checkpointing: bool = True, attn_implementation: str = "sdpa") -> dict[str, float]:
    """Estimated peak GPU memory (GB) of one training step at batch 1 (assumptions: module docstring)."""
    if precision not in ("bf16", "nf4"):
        raise ValueError(f"precision must be 'bf16' or 'nf4', got {precision!r}")
    h, inner, layers = text_config.hidden_size, text_config.intermediate_size, text_config.num_hidden_layers
    vocab, heads = text_config.vocab_size, text_config.num_attention_heads
    frozen = groups["total"]  # the projector's original included: modules_to_save trains a copy
    if precision == "bf16":
        weights, act_bytes, logit_bytes = 2 * frozen, 2, 14
    else:
        weights, act_bytes, logit_bytes = NF4_BYTES * groups["quantized"] + 4 * (frozen - groups["quantized"]), 4, 12
    per_layer = seq_len * (16 * h + 5 * inner)
    if attn_implementation == "eager":
        per_layer += heads * seq_len ** 2
    kept = layers * seq_len * h + per_layer if gradient_checkpointing else layers * per_layer
    parts = {
        "weights": weights,
        "trainable_states": 16 * trainable,
        "activations": act_bytes * kept,
        "logits": logit_bytes * seq_len * vocab,
    }
    out = {k: v / GB for k, v in parts.items()}
    out["overhead"] = RUNTIME_OVERHEAD_GB
    out["peak"] = sum(out.values())
    return out


def _profile_report(cfg: Config, questions: int, seconds: float, **graft_options) -> dict:
    model, processor = meta_graft(cfg, **graft_options)
    text_config = model.config.text_config
    groups = parameter_groups(model)
    tokens = {"visual_tokens": visual_tokens(processor, cfg.data.num_frames, cfg.data.frame_size),
              "audio_tokens": audio_tokens(processor, seconds)}
    lora = lora_counts(model, cfg)
    seq = sequence_tokens(tokens["visual_tokens"], tokens["audio_tokens"], questions)
    memory = {p: memory_estimate(groups, lora["trainable_params"], text_config, seq, p, cfg.model.gradient_checkpointing,
                                 cfg.model.attn_implementation) for p in ("bf16", "nf4")}
    return {"parameters": groups, **tokens, "lora": lora, "sequence_tokens": seq, "questions_per_sample": questions,
            "memory_gb": memory}


def paper_scale_report(cfg: Config, seconds: float = 3.0, questions: int | None = None) -> dict:
    """Shapes and memory estimates of `cfg`'s graft, and of the upstream repository's audio setting on the same base
    (linear projector, no stacking, 30 s padded): `{"profile", "ours", "upstream"}`.
    `questions`: spoken questions per training sample (default: `train.questions_per_clip`)."""
    from .models import UPSTREAM_AUDIO

    questions = cfg.train.questions_per_clip if questions is None else questions
    return {"profile": cfg.profile, "base_vlm": cfg.model.base_vlm, "whisper": cfg.model.whisper,
            "num_frames": cfg.data.num_frames, "frame_size": cfg.data.frame_size, "seconds": seconds,
            "lora_r": cfg.lora.r,
            "ours": _profile_report(cfg, questions, seconds),
            "upstream": _profile_report(cfg, questions, seconds, **UPSTREAM_AUDIO)}


def format_report(report: dict) -> str:
    """The report as the plain-text table `make bench` prints."""
    lines = [f"{report['profile']}: {report['base_vlm']} + {report['whisper']}, {report['num_frames']} frames @ "
             f"{report['frame_size']} px, a {report['seconds']:g} s question, LoRA r={report['lora_r']}",
             f"{'setting':<15}{'projector':>11}{'visual':>8}{'audio':>7}{'seq':>7}{'LoRA mods':>10}{'trainable':>11}"
             f"{'bf16 GB':>9}{'NF4 GB':>8}"]
    for name in ("ours", "upstream"):
        r = report[name]
        lines.append(f"{name:<15}{r['parameters']['audio_projector'] / 1e6:>10.2f}M{r['visual_tokens']:>8}{r['audio_tokens']:>7}"
                     f"{r['sequence_tokens']:>7}{r['lora']['wrapped_modules']:>10}{r['lora']['trainable_params'] / 1e6:>10.1f}M"
                     f"{r['memory_gb']['bf16']['peak']:>9.1f}{r['memory_gb']['nf4']['peak']:>8.1f}")
    nf4 = report["ours"]["memory_gb"]["nf4"]
    lines.append("  ours, NF4 (GB): " + ", ".join(f"{k} {v:.2f}" for k, v in nf4.items()))
    lines.append(f"  ({report['ours']['questions_per_sample']} spoken question(s) per training sample, batch 1; an estimate, "
                 "not a measurement: assumptions in surgvqa.paper_scale)")
    return "\n".join(lines)


__all__ = ["meta_graft", "paper_scale_report", "memory_estimate", "parameter_groups", "lora_counts", "visual_tokens",
           "audio_tokens", "sequence_tokens", "config_dir", "format_report"]
