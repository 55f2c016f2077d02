"""Build, inspect and check the graft from a params config (notebook 00 and later stages)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from qwen2_vl_audio import Qwen2VLAudioConfig, Qwen2VLAudioForConditionalGeneration, Qwen2VLAudioProcessor, graft
from qwen2_vl_audio.configuration_qwen2_vl_audio import WHISPER_SAMPLE_RATE
from transformers import AutoProcessor, BitsAndBytesConfig, Qwen2VLConfig, Qwen2VLForConditionalGeneration

from . import prompts
from .config import Config
from .tiny_vlm import build_tiny_qwen2_vl
from .whisper_conversion import resolve_whisper

EMBEDDED_VLM = "embedded:tiny-qwen2-vl"
# Modules a 4-bit load must leave in full precision (full prefixes: short names are silently ignored).
QUANTIZATION_SKIP = ["model.audio_tower", "model.visual", "model.audio_projector", "lm_head"]


def graft_dir(cfg: Config) -> Path:
    return cfg.checkpoints_dir / "graft"


def tokenizer_corpus(seed: int = 0, narration: int = 400) -> list[str]:
    """Every text the embedded default will read or write: questions, paraphrases, answers, narration, prompts."""
    from . import data, synthetic

    texts = list(synthetic.IN_TEMPLATES.values())
    texts += [p for paraphrases in synthetic.OUT_TEMPLATES.values() for p in paraphrases]
    texts += [a for per_type in synthetic.LONG_ANSWERS.values() for answers in per_type.values() for a in answers]
    texts += [a for answers in data.ANSWER_VOCAB.values() for a in answers]
    texts += synthetic.narration_sentences(seed, narration)
    texts += [prompts.VQA_INSTRUCTION, prompts.TRANSCRIBE_INSTRUCTION, prompts.REPEAT_INSTRUCTION, "Question:", "You are a helpful assistant."]
    return texts


def sample_clip(cfg: Config, video_index: int = 0) -> list[np.ndarray]:
    """The frames of one synthetic endoscopy clip at the profile's size (for checks and demos)."""
    from . import synthetic

    scene = synthetic.sample_video(cfg.seed, video_index, 1, cfg.data.num_frames)[0]
    frames, _ = synthetic.render_clip(scene, cfg.data.frame_size)
    return list(frames)


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


def load_graft(path: Path, **kwargs) -> tuple[Qwen2VLAudioForConditionalGeneration, Qwen2VLAudioProcessor]:
    model = Qwen2VLAudioForConditionalGeneration.from_pretrained(path, **kwargs).eval()
    return model, load_graft_processor(path)


def load_graft_processor(path: Path) -> Qwen2VLAudioProcessor:
    return AutoProcessor.from_pretrained(path)


def parameter_table(model) -> pd.DataFrame:
    """Parameters per component, split into trainable and frozen."""
    components = {
        "audio tower (Whisper encoder)": model.model.audio_tower,
        "audio projector": model.model.audio_projector,
        "vision tower": model.model.visual,
        "language model": model.model.language_model,
    }
    rows = []
    for name, module in components.items():
        params = list(module.parameters())
        trainable = sum(p.numel() for p in params if p.requires_grad)
        rows.append({"component": name, "parameters": sum(p.numel() for p in params), "trainable": trainable})
    head = model.lm_head.weight
    tied = head is model.get_input_embeddings().weight
    if not tied:
        rows.append({"component": "lm head", "parameters": head.numel(), "trainable": head.numel() if head.requires_grad else 0})
    table = pd.DataFrame(rows)
    table["frozen"] = table["parameters"] - table["trainable"]
    return table


def audio_prompt_batch(processor, clips: list[np.ndarray], video_frames: list | None = None, padding_side: str = "left"):
    text = prompts.render(processor, prompts.vqa_messages("audio", video=video_frames is not None))
    videos = [video_frames] * len(clips) if video_frames is not None else None
    return processor(text=[text] * len(clips), audio=clips, videos=videos, padding_side=padding_side)


@torch.no_grad()
def audio_sensitivity(model, processor, clip_a: np.ndarray, clip_b: np.ndarray, video_frames=None) -> dict:
    """Two different spoken questions of equal token length: logits must differ after the audio, never before."""
    n = min(len(clip_a), len(clip_b))
    batch_a = audio_prompt_batch(processor, [clip_a[:n]], video_frames)
    batch_b = audio_prompt_batch(processor, [clip_b[:n]], video_frames)
    first = int((batch_a["input_ids"][0] == model.config.audio_token_id).nonzero()[0])
    la, lb = model(**batch_a).logits[0].float(), model(**batch_b).logits[0].float()
    return {
        "max_logit_change_before_audio": float((la[:first] - lb[:first]).abs().max()) if first else 0.0,
        "min_logit_change_after_audio": float((la[first:] - lb[first:]).abs().amax(-1).min()),
        "mean_logit_change_after_audio": float((la[first:] - lb[first:]).abs().mean()),
    }


def stock_twin(model: Qwen2VLAudioForConditionalGeneration) -> Qwen2VLForConditionalGeneration:
    """A stock Qwen2-VL holding the graft's non-audio weights (for the vision-unchanged check)."""
    config = Qwen2VLConfig(**{k: v for k, v in model.config.to_dict().items()
                              if k in ("text_config", "vision_config", "image_token_id", "video_token_id",
                                       "vision_start_token_id", "vision_end_token_id", "tie_word_embeddings")})
    twin = Qwen2VLForConditionalGeneration(config).to(model.dtype).eval()
    twin.load_state_dict({k: v for k, v in model.state_dict().items() if ".audio_" not in k})
    return twin


@torch.no_grad()
def vision_parity(model, processor, video_frames, question: str = "is a tool visible") -> dict:
    """Text + video input: the graft and a stock Qwen2-VL with the same weights must agree exactly."""
    twin = stock_twin(model)
    text = prompts.render(processor, prompts.vqa_messages("text", question=question))
    batch = processor(text=[text], videos=[video_frames])
    ours, theirs = model(**batch).logits, twin(**batch).logits
    gen_ours = model.generate(**batch, max_new_tokens=8, do_sample=False)
    gen_theirs = twin.generate(**batch, max_new_tokens=8, do_sample=False)
    return {
        "max_logit_diff_vs_stock": float((ours - theirs).abs().max()),
        "same_generation_as_stock": bool(torch.equal(gen_ours, gen_theirs)),
        "video_grid_thw": batch["video_grid_thw"][0].tolist(),
        "video_tokens": int(batch["video_grid_thw"][0].prod()) // processor.image_processor.merge_size**2,
    }


SEED_FAITHFUL = dict(projector_type="linear", projector_stack_factor=1, audio_length_mode="padded")


def seed_faithful_processor(processor: Qwen2VLAudioProcessor) -> Qwen2VLAudioProcessor:
    """The same processor with the seeds' audio setting: every 30 s window padded, 1500 tokens each."""
    return Qwen2VLAudioProcessor.from_config(Qwen2VLAudioConfig(**SEED_FAITHFUL), processor.image_processor,
                                             processor.tokenizer, processor.feature_extractor)


def tokens_vs_seconds(processor: Qwen2VLAudioProcessor, seconds: np.ndarray) -> pd.DataFrame:
    """Audio tokens per clip length under this graft's setting and the seed-faithful one."""
    seeds = seed_faithful_processor(processor)
    rows = [(s, processor.audio_token_count(int(s * WHISPER_SAMPLE_RATE)), seeds.audio_token_count(int(s * WHISPER_SAMPLE_RATE)))
            for s in seconds]
    return pd.DataFrame(rows, columns=["seconds", "ours", "seed_faithful"])


def plot_tokens_vs_seconds(tokens: pd.DataFrame, config):
    """Log-scale figure of `tokens_vs_seconds`, with the 3 s question annotated."""
    import matplotlib.pyplot as plt

    at_3s = tokens.loc[tokens.seconds == 3.0].iloc[0]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(tokens.seconds, tokens.seed_faithful, color="tab:red", label="seed-faithful (each 30 s window padded -> 1500 tokens)")
    ax.plot(tokens.seconds, tokens.ours, color="tab:blue",
            label=f"ours ({config.audio_length_mode}, stack {config.projector_stack_factor}, {config.projector_type})")
    ax.axvline(30, color="grey", ls=":", lw=1)
    ax.annotate(f"3 s question: {at_3s.ours} vs {at_3s.seed_faithful} tokens", (3, at_3s.ours), xytext=(6, 12),
                arrowprops=dict(arrowstyle="->", color="grey"))
    ax.set(xlabel="clip length (s)", ylabel="audio tokens", yscale="log", title="Audio tokens per spoken clip")
    ax.legend(loc="lower right")
    return fig


@torch.no_grad()
def forward_latency(model, batch, repeats: int = 5) -> float:
    """Median seconds of one forward pass (after a warm-up)."""
    model(**batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(**batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times))
