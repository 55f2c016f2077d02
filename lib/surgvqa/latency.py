"""Single-stream latency: one spoken question at a time, as a live operating-room assistant answers.

Measured the careful way (`single_stream`): batch 1; on each sample every system answers in turn
(A/B/C, the starting system rotated sample by sample so none always runs first); the first
`warmup` samples are discarded; medians with the interquartile range and p95. Each answer is
decomposed into transcription (the ASR pipeline's faster-whisper), preprocessing (files -> model
inputs), prefill (generate() up to the first new token: the towers and the prompt) and decoding per
token, with the input-token counts. Every system decodes exactly `max_new_tokens` tokens, so the
differences come from what goes in, not from how long an answer happens to be.

`batched_asr_pipeline` is the strongest batched ASR baseline: whisper (the same weights, converted
to transformers) transcribes a whole batch in one `generate`, then the text model answers the batch.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
from transformers.generation.streamers import BaseStreamer

from .collate import Collator, Example, as_question, vqa_examples
from .config import Config, EvalConfig
from .data import Dataset
from .infer import predict

SINGLE_STREAM_SYSTEMS = ("audio_finetuned", "asr_pipeline", "audio_upstream")
TIMED = ("latency_ms", "transcription_ms", "preprocess_ms", "prefill_ms", "decode_ms_per_token")
COUNTED = ("input_tokens", "audio_tokens", "visual_tokens", "new_tokens")


class TokenClock(BaseStreamer):
    """Times generate(): `put` is called once with the prompt (before prefill), then with each new token."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, value) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


@torch.no_grad()
def answer_one(model, processor, example: Example, max_new_tokens: int) -> dict:
    """One example at batch 1, from files to text, timed by phase (ms) with its token counts."""
    t0 = time.perf_counter()
    inputs = Collator(processor, training=False)([example])  # a fresh collator: no clip is cached from a previous call
    inputs = {k: (v.to(model.device) if hasattr(v, "to") else v) for k, v in inputs.items()}
    t1 = time.perf_counter()
    clock = TokenClock()
    tokenizer = processor.tokenizer
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False,
                         streamer=clock, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    prompt_len = inputs["input_ids"].shape[1]
    text = tokenizer.decode(out[0, prompt_len:], skip_special_tokens=True).strip()
    t2 = time.perf_counter()
    new = len(clock.times) - 1
    ids = inputs["input_ids"][0]
    config = getattr(model, "config", None)
    audio_id = getattr(config, "audio_token_id", None)
    return {
        "prediction": text,
        "latency_ms": 1000 * (t2 - t0),
        "preprocess_ms": 1000 * (t1 - t0),
        "prefill_ms": 1000 * (clock.times[1] - t1),
        "decode_ms_per_token": 1000 * (clock.times[-1] - clock.times[1]) / max(new - 1, 1),
        "input_tokens": int(prompt_len),
        "audio_tokens": int((ids == audio_id).sum()) if audio_id is not None else 0,
        "visual_tokens": int((ids == config.video_token_id).sum()),
        "new_tokens": new,
    }


def answer_asr(models, example: Example, max_new_tokens: int) -> dict:
    """The ASR pipeline on one example: faster-whisper transcribes the file, the text model answers."""
    from .asr import transcribe_faster_whisper

    texts, seconds = transcribe_faster_whisper(models.asr, [example.audio], progress=False)
    text_example = dataclasses.replace(example, mode="text", question=as_question(texts[0]), audio=None)
    out = answer_one(models.text_finetuned, models.processor, text_example, max_new_tokens)
    out["transcription_ms"] = 1000 * seconds[0]
    out["latency_ms"] += out["transcription_ms"]
    out["transcript"] = texts[0]
    return out


def summarize(samples: list[dict]) -> dict:
    """Median, IQR and p95 of each timed phase; medians of the token counts."""
    out: dict = {"samples": len(samples)}
    for key in TIMED:
        values = np.array([s.get(key, 0.0) for s in samples], dtype=float)
        p25, p50, p75, p95 = np.percentile(values, [25, 50, 75, 95]) if len(values) else [float("nan")] * 4
        out.update({f"{key}_p50": round(float(p50), 2), f"{key}_iqr": [round(float(p25), 2), round(float(p75), 2)],
                    f"{key}_p95": round(float(p95), 2)})
    for key in COUNTED:
        out[key] = float(np.median([s[key] for s in samples])) if samples else float("nan")
    return out


def speed_rows(ds: Dataset, rows: int) -> Dataset:
    """The test rows the speed figures run on (the same as `evaluate.speed_test`: test splits, in order)."""
    return Dataset([r for r in ds.rows if r["split"] != "val"][:rows], ds.root, ds.audio_root)


def single_stream(cfg: Config, models, ds: Dataset, rows: int | None = None, warmup: int = 2,
                  max_new_tokens: int | None = None, upstream=None) -> dict:
    """Batch-1 latency of the graft, the ASR pipeline and the upstream-style graft, interleaved per sample.

    `models`: an `evaluate.Models`; `ds`: evaluation rows (`evaluate.evaluation_rows`), of which the
    first `rows` test rows (default `eval.speed_rows`) are timed after `warmup` more; `upstream`:
    (model, processor), built from the base when None. Returns a JSON-able dict: `systems[ID]` holds
    `latency_ms_p50`, `latency_ms_p95`, `latency_ms_iqr` and the same for each phase, plus token counts.
    """
    from .evaluate import upstream_graft

    rows = cfg.eval.speed_rows if rows is None else rows
    max_new_tokens = max_new_tokens or cfg.eval.max_new_tokens
    sub = speed_rows(ds, rows + warmup)
    if len(sub.rows) <= warmup:
        raise ValueError(f"single_stream needs more than warmup={warmup} test rows, got {len(sub.rows)}")
    seed_model, seed_processor = upstream or upstream_graft(cfg)
    runners = {
        "audio_finetuned": lambda ex: answer_one(models.audio_finetuned, models.processor, ex, max_new_tokens),
        "asr_pipeline": lambda ex: answer_asr(models, ex, max_new_tokens),
        "audio_upstream": lambda ex: answer_one(seed_model, seed_processor, ex, max_new_tokens),
    }
    samples: dict[str, list[dict]] = {s: [] for s in SINGLE_STREAM_SYSTEMS}
    for i, example in enumerate(vqa_examples(sub, "audio")):
        order = SINGLE_STREAM_SYSTEMS[i % 3:] + SINGLE_STREAM_SYSTEMS[: i % 3]
        for system in order:
            result = runners[system](example)
            if i >= warmup:
                samples[system].append(result)
    systems = {s: summarize(v) for s, v in samples.items()}
    asr = systems["asr_pipeline"]["latency_ms_p50"]
    return {
        "method": {"batch_size": 1, "rows": len(sub.rows) - warmup, "warmup": warmup, "max_new_tokens": max_new_tokens,
                   "order": "interleaved per sample, starting system rotated", "torch_threads": torch.get_num_threads(),
                   "device": str(models.audio_finetuned.device)},
        "systems": systems,
        "ratios": {f"{s}_vs_asr_pipeline_p50": round(systems[s]["latency_ms_p50"] / asr, 3)
                   for s in ("audio_finetuned", "audio_upstream")},
    }


# ---- batched ASR baseline ----------------------------------------------------------------------------


def load_hf_whisper(cfg: Config):
    """Whisper for conditional generation from the graft's Whisper (the embedded whisper-base converted once)."""
    from transformers import WhisperForConditionalGeneration, WhisperTokenizer

    from .whisper_conversion import load_whisper_feature_extractor, resolve_whisper

    path = resolve_whisper(cfg.model.whisper, cfg.model.whisper_cache_dir)
    model = WhisperForConditionalGeneration.from_pretrained(path).eval()
    return model, load_whisper_feature_extractor(path), WhisperTokenizer.from_pretrained(path)


@torch.no_grad()
def hf_transcribe(whisper, audio_paths: list[str]) -> list[str]:
    """Greedy English transcripts of a batch of files in one generate() (each clip padded to 30 s)."""
    from .audio import load_audio

    model, feature_extractor, tokenizer = whisper
    features = feature_extractor([load_audio(p) for p in audio_paths], sampling_rate=16000, return_tensors="pt")
    out = model.generate(features["input_features"].to(model.device, model.dtype), language="en", task="transcribe",
                         do_sample=False, num_beams=1, max_new_tokens=64)
    return [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]


def batched_asr_pipeline(cfg: Config, models, ds: Dataset, options: EvalConfig | None = None, whisper=None) -> dict:
    """Samples/s of ASR -> text model with batched transcription (transformers' Whisper generate), on the
    same `speed_rows` test rows and batch size as `evaluate.speed_test`; a sample's latency is its batch's."""
    options = options or cfg.eval
    whisper = whisper or load_hf_whisper(cfg)
    sub = speed_rows(ds, options.speed_rows)
    examples = vqa_examples(sub, "audio")
    bs = options.batch_size
    asr_seconds, transcripts = [], []
    for start in range(0, len(examples), bs):
        t0 = time.perf_counter()
        transcripts += hf_transcribe(whisper, [e.audio for e in examples[start:start + bs]])
        asr_seconds.append(time.perf_counter() - t0)
    text_examples = [dataclasses.replace(e, mode="text", question=as_question(t), audio=None) for e, t in zip(examples, transcripts)]
    out = predict(models.text_finetuned, Collator(models.processor, training=False), text_examples, batch_size=bs,
                  max_new_tokens=options.max_new_tokens, progress=False)
    batch_total = [a + b for a, b in zip(asr_seconds, out["batch_seconds"])]
    latencies = [t for b, t in enumerate(batch_total) for _ in examples[b * bs:(b + 1) * bs]]
    return {"samples_per_s": round(len(examples) / sum(batch_total), 3),
            "latency_ms_p50": round(float(np.percentile(latencies, 50) * 1000), 3),
            "latency_ms_p95": round(float(np.percentile(latencies, 95) * 1000), 3),
            "speed_rows": len(examples), "batch_size": bs, "transcripts": transcripts}


def latency_metrics(cfg: Config, splits: dict, models=None, rows: int | None = None, warmup: int = 2) -> dict:
    """Notebook 04's single-stream figures on the evaluation rows (`single_stream`'s result).
    `models`: an `evaluate.Models` already loaded, else loaded here. The batched ASR row costs a
    batch of 30 s Whisper windows, so only `make bench` times it (`batched_asr_pipeline`)."""
    from .evaluate import Models, evaluation_rows

    models = models or Models.load(cfg, cfg.eval)
    ds = evaluation_rows(splits, cfg.eval.max_rows, cfg.seed)
    return single_stream(cfg, models, ds, rows=rows, warmup=warmup)


def format_single_stream(result: dict) -> str:
    """The single-stream table `make bench` prints."""
    m = result["method"]
    lines = [f"{'system':<22}{'p50 ms':>9}{'IQR ms':>16}{'p95 ms':>9}{'asr ms':>8}{'prep ms':>9}{'prefill':>9}"
             f"{'ms/tok':>8}{'in tok':>8}{'audio':>7}   (batch 1, {m['rows']} rows after {m['warmup']} warm-up, "
             f"{m['max_new_tokens']} new tokens each)"]
    for name, r in result["systems"].items():
        iqr = f"{r['latency_ms_iqr'][0]:.0f}-{r['latency_ms_iqr'][1]:.0f}"
        lines.append(f"{name:<22}{r['latency_ms_p50']:>9.0f}{iqr:>16}{r['latency_ms_p95']:>9.0f}{r['transcription_ms_p50']:>8.0f}"
                     f"{r['preprocess_ms_p50']:>9.0f}{r['prefill_ms_p50']:>9.0f}{r['decode_ms_per_token_p50']:>8.1f}"
                     f"{r['input_tokens']:>8.0f}{r['audio_tokens']:>7.0f}")
    for key, value in result["ratios"].items():
        lines.append(f"{key:<40}{value:>8.2f}x")
    return "\n".join(lines)
