"""The ASR front end: faster-whisper on the CTranslate2 form of the graft's Whisper, greedy and cached.

Used by the evaluation's ASR pipeline and transcription table, the demo, and stage 2 of the text model
(`train.heard_question_fraction`), so every transcript of an audio file comes from one model, one set of
decode settings and one cache.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .config import Config, EvalConfig
from .caches import TranscriptCache


def asr_model(cfg: Config, options: EvalConfig):
    """faster-whisper on the CTranslate2 form of the graft's Whisper."""
    from faster_whisper import WhisperModel
    from .whisper_conversion import EMBEDDED_WHISPER, embedded_ct2_dir

    source = str(embedded_ct2_dir(cfg.model.whisper_cache_dir)) if cfg.model.whisper == EMBEDDED_WHISPER else cfg.model.whisper
    device = "cuda" if torch.cuda.is_available() else "cpu"
    compute_type = options.asr_compute_type if device == "cpu" else "float16"
    model = WhisperModel(source, device=device, compute_type=compute_type, cpu_threads=torch.get_num_threads())
    model.surgvqa_id = asr_identity(source, device, compute_type)  # names its transcript cache
    return model


# Greedy English transcription. temperature=0 only: faster-whisper's default fallback re-decodes hard
# clips by unseeded sampling (T=0.2..1.0), which changed ~1 in 10 noisy transcripts from run to run.
DECODE_OPTIONS = dict(language="en", beam_size=1, temperature=0.0, without_timestamps=True,
                      condition_on_previous_text=False, vad_filter=False)


def asr_identity(source: str, device: str, compute_type: str) -> str:
    """What a transcript depends on besides the audio: the model (by its weights file), the numeric
    type, the device and the decode settings."""
    import hashlib
    import ctranslate2
    import faster_whisper

    weights = Path(source) / "model.bin"
    model_id = hashlib.sha256(weights.read_bytes()).hexdigest()[:16] if weights.is_file() else source
    parts = [model_id, device, compute_type, ctranslate2.__version__, faster_whisper.__version__,
             json.dumps(DECODE_OPTIONS, sort_keys=True)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def transcript_cache(cfg: Config, asr, prompt: str | None = None) -> TranscriptCache:
    """The transcripts of this model and decode settings (and prompt: `domain_prompt`)."""
    import hashlib

    identity = asr.surgvqa_id if prompt is None else hashlib.sha256(f"{asr.surgvqa_id}|{prompt}".encode()).hexdigest()[:16]
    return TranscriptCache(cfg.paths.cache("asr_transcripts"), identity)


PROMPT_WORDS = 120  # well inside Whisper's 224-token prompt window


def domain_prompt(questions: list[str], max_words: int = PROMPT_WORDS) -> str:
    """The adapted cascade's prompt: the training questions' distinct wordings, most asked first, up to `max_words`
    words (Whisper conditions its decode on the prompt: the domain's vocabulary and phrasing)."""
    from collections import Counter

    out: list[str] = []
    words = 0
    for text, _ in sorted(Counter(questions).items(), key=lambda kv: (-kv[1], kv[0])):
        n = len(text.split())
        if words + n > max_words:
            break
        out.append(text)
        words += n
    return " ".join(out)


def transcribe_faster_whisper(model, paths: list[str], progress: bool = True, cache=None,
                              prompt: str | None = None) -> tuple[list[str], list[float]]:
    """Greedy English transcription of each file, with per-file seconds (decoding included); `prompt`: the
    decoder's initial prompt (`domain_prompt`; its cache is `transcript_cache(cfg, asr, prompt)`).

    With a `TranscriptCache` (accuracy runs), a file decoded before is not decoded again; its
    seconds are those of its first decode. Timed runs pass none."""
    from tqdm.auto import tqdm

    texts, seconds = [], []
    for path in tqdm(paths, desc="faster-whisper" + (" (prompted)" if prompt else ""), disable=not progress, leave=False):
        found = cache.lookup(path) if cache is not None else None
        if found is None:
            t0 = time.perf_counter()
            segments, _ = model.transcribe(str(path), initial_prompt=prompt or None, **DECODE_OPTIONS)
            found = (" ".join(s.text.strip() for s in segments).strip(), time.perf_counter() - t0)
            if cache is not None:
                cache.store(path, *found)
        texts.append(found[0])
        seconds.append(found[1])
    return texts, seconds
