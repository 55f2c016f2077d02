"""Checks and figures about a built graft (notebook 00, bench): parameters per component, audio
sensitivity, parity with stock Qwen2-VL, audio tokens per second, forward latency."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
from qwen2_vl_audio import Qwen2VLAudioForConditionalGeneration, Qwen2VLAudioProcessor
from qwen2_vl_audio.configuration_qwen2_vl_audio import WHISPER_SAMPLE_RATE
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

from . import prompts
from .models import upstream_processor


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


def tokens_vs_seconds(processor: Qwen2VLAudioProcessor, seconds: np.ndarray) -> pd.DataFrame:
    """Audio tokens per clip length under this graft's setting and the upstream-style one."""
    seeds = upstream_processor(processor)
    rows = [(s, processor.audio_token_count(int(s * WHISPER_SAMPLE_RATE)), seeds.audio_token_count(int(s * WHISPER_SAMPLE_RATE)))
            for s in seconds]
    return pd.DataFrame(rows, columns=["seconds", "ours", "upstream"])


def plot_tokens_vs_seconds(tokens: pd.DataFrame, config):
    """Log-scale figure of `tokens_vs_seconds`, with the 3 s question annotated."""
    import matplotlib.pyplot as plt

    at_3s = tokens.loc[tokens.seconds == 3.0].iloc[0]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(tokens.seconds, tokens.upstream, color="tab:red", label="upstream-style (each 30 s window padded -> 1500 tokens)")
    ax.plot(tokens.seconds, tokens.ours, color="tab:blue",
            label=f"ours ({config.audio_length_mode}, stack {config.projector_stack_factor}, {config.projector_type})")
    ax.axvline(30, color="grey", ls=":", lw=1)
    ax.annotate(f"3 s question: {at_3s.ours} vs {at_3s.upstream} tokens", (3, at_3s.ours), xytext=(6, 12),
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


def graft_metrics(table: pd.DataFrame, sensitivity: dict, parity: dict, tokens: pd.DataFrame, round_trip: dict,
                  build_seconds: float) -> dict:
    """Notebook 00's metrics JSON: audio tokens of a 3 s question, parameters, the audio / vision / save checks."""
    at_3s = tokens.loc[tokens.seconds == 3.0].iloc[0]
    return {
        "audio_tokens_3s": int(at_3s["ours"]),
        "audio_tokens_3s_upstream": int(at_3s["upstream"]),
        "trainable_params": int(table["trainable"].sum()),
        "frozen_params": int(table["frozen"].sum()),
        "parameters_by_component": table.to_dict(orient="records"),
        **sensitivity,
        **parity,
        **round_trip,
        "build_seconds": round(build_seconds, 2),
    }


@torch.no_grad()
def save_round_trip(model, reloaded, batch) -> dict:
    """A saved-and-reloaded graft must give the same logits and keep its audio tower frozen."""
    return {"round_trip_max_logit_diff": float((reloaded(**batch).logits - model(**batch).logits).abs().max()),
            "tower_frozen_after_load": not any(p.requires_grad for p in reloaded.model.audio_tower.parameters())}
