"""Batched greedy generation with timing: the one inference loop of stage 1's WER and the evaluation."""
from __future__ import annotations

import time

import numpy as np
import torch
from tqdm.auto import tqdm

from .collate import Collator, Example


@torch.no_grad()
def predict(model, collator: Collator, examples: list[Example], batch_size: int = 16, max_new_tokens: int = 12,
            progress: bool = True, desc: str = "generate") -> dict:
    """Answers for `examples` (collator in generation mode), timed per batch.

    The time of a batch covers everything from files to text: loading and featurising audio
    and frames, encoding (the audio tower too, unless the collator has a feature cache) and
    decoding. Returns predictions, samples/s and per-sample latency percentiles (a sample's
    answer is ready when its batch is).
    """
    if collator.training:
        raise ValueError("predict needs a collator with training=False (prompts end at the assistant turn)")
    model.eval()
    tokenizer = collator.processor.tokenizer
    predictions: list[str] = []
    batch_seconds: list[float] = []
    latencies: list[float] = []
    for start in tqdm(range(0, len(examples), batch_size), desc=desc, disable=not progress, leave=False):
        batch = examples[start : start + batch_size]
        t0 = time.perf_counter()
        inputs = collator(batch)
        inputs = {k: (v.to(model.device) if hasattr(v, "to") else v) for k, v in inputs.items()}
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        texts = tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        seconds = time.perf_counter() - t0
        predictions += [t.strip() for t in texts]
        batch_seconds.append(seconds)
        latencies += [seconds] * len(batch)
    total = sum(batch_seconds)
    return {
        "predictions": predictions,
        "batch_size": batch_size,
        "seconds": total,
        "batch_seconds": batch_seconds,
        "samples_per_s": len(examples) / total if total else float("nan"),
        "latency_ms_p50": float(np.percentile(latencies, 50) * 1000) if latencies else float("nan"),
        "latency_ms_p95": float(np.percentile(latencies, 95) * 1000) if latencies else float("nan"),
    }
