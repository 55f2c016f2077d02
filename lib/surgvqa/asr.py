"""The ASR front end: faster-whisper on the CTranslate2 form of the graft's Whisper, greedy and cached.

Used by the evaluation's ASR pipeline and transcription table, the demo, and stage 2 of the text model
(`train.heard_question_fraction`), so every transcript of an audio file comes from one model, one set of
decode settings and one cache.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from faster_whisper import WhisperModel
from faster_whisper.audio import decode_audio

from .config import Config, EvalConfig
from .caches import TranscriptCache


def asr_model(cfg: Config, options: EvalConfig):
    """faster-whisper on the CTranslate2 form of the graft's Whisper: one stream with every thread (the latency the
    speed test and the demo time), and `model.surgvqa_workers`, the same weights as one single-thread worker per
    core, for bulk decoding into the transcript cache (`fill_transcript_caches`)."""
    from .whisper_conversion import EMBEDDED_WHISPER, embedded_ct2_dir

    source = str(embedded_ct2_dir(cfg.model.whisper_cache_dir)) if cfg.model.whisper == EMBEDDED_WHISPER else cfg.model.whisper
    device = "cuda" if torch.cuda.is_available() else "cpu"
    compute_type = options.asr_compute_type if device == "cpu" else "float16"
    threads = torch.get_num_threads()
    model = WhisperModel(source, device=device, compute_type=compute_type, cpu_threads=threads)
    model.surgvqa_id = asr_identity(source, device, compute_type)  # names its transcript cache
    # On 2 cores, two 1-thread workers decode 1.4x the files per second of one 2-thread stream, with the same text
    # (make bench: asr_throughput; tests/test_asr_workers.py)
    workers = 1 if device == "cuda" else threads
    model.surgvqa_workers = EncodeOnceWhisper(source, device=device, compute_type=compute_type, cpu_threads=1,
                                              num_workers=workers)
    return model


class EncodeOnceWhisper(WhisperModel):
    """faster-whisper that keeps each thread's last encoder output: decoding one file again with another prompt
    (the plain and the adapted cascade) reuses it, since the encoder output depends on the features alone."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.workers = kwargs.get("num_workers", 1)
        self._last = threading.local()

    def encode(self, features):
        key = hashlib.blake2b(features.tobytes(), digest_size=16).digest()
        last = getattr(self._last, "encoded", None)
        if last is None or last[0] != key:
            last = self._last.encoded = (key, super().encode(features))
        return last[1]


# Greedy English transcription. temperature=0 only: faster-whisper's default fallback re-decodes hard
# clips by unseeded sampling (T=0.2..1.0), which changed ~1 in 10 noisy transcripts from run to run.
DECODE_OPTIONS = dict(language="en", beam_size=1, temperature=0.0, without_timestamps=True,
                      condition_on_previous_text=False, vad_filter=False)


def asr_identity(source: str, device: str, compute_type: str) -> str:
    """What a transcript depends on besides the audio: the model (by its weights file), the numeric
    type, the device and the decode settings."""
    import ctranslate2
    import faster_whisper

    weights = Path(source) / "model.bin"
    model_id = hashlib.sha256(weights.read_bytes()).hexdigest()[:16] if weights.is_file() else source
    parts = [model_id, device, compute_type, ctranslate2.__version__, faster_whisper.__version__,
             json.dumps(DECODE_OPTIONS, sort_keys=True)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def transcript_cache(cfg: Config, asr, prompt: str | None = None) -> TranscriptCache:
    """The transcripts of this model and decode settings (and prompt: `domain_prompt`)."""
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


def decode(model, audio, prompt: str | None = None) -> str:
    """One greedy transcript of `audio` (a path or 16 kHz samples) with the project's decode settings."""
    segments, _ = model.transcribe(audio, initial_prompt=prompt or None, **DECODE_OPTIONS)
    return " ".join(s.text.strip() for s in segments).strip()


def fill_transcript_caches(model, paths: list[str], caches: dict[str | None, TranscriptCache], progress: bool = True,
                           desc: str = "faster-whisper") -> dict[str | None, dict[str, tuple[str, float]]]:
    """Every file's (transcript, seconds) under each cache's prompt (`{prompt: cache}`; None: no prompt). What a
    cache lacks is decoded on `model.surgvqa_workers`: one file per worker at a time, its audio read once and
    encoded once for all prompts. A stored entry's seconds are that worker's decode of the file, not a latency
    (the speed test times those)."""
    from tqdm.auto import tqdm

    found: dict[str | None, dict[str, tuple[str, float]]] = {prompt: {} for prompt in caches}
    todo = []
    for path in dict.fromkeys(paths):
        missing = []
        for prompt, cache in caches.items():
            if (hit := cache.lookup(path)) is None:
                missing.append((prompt, cache))
            else:
                found[prompt][path] = hit
        if missing:
            todo.append((path, missing))
    if not todo:
        return found
    workers = model.surgvqa_workers

    def one(path, missing):
        audio = decode_audio(str(path), sampling_rate=workers.feature_extractor.sampling_rate)
        out = []
        for prompt, cache in missing:
            t0 = time.perf_counter()
            out.append((prompt, cache, decode(workers, audio, prompt), time.perf_counter() - t0))
        return path, out

    with ThreadPoolExecutor(workers.workers) as pool:
        futures = [pool.submit(one, path, missing) for path, missing in todo]
        for future in tqdm(futures, desc=desc, disable=not progress, leave=False):
            path, out = future.result()
            for prompt, cache, text, seconds in out:
                cache.store(path, text, seconds)
                found[prompt][path] = (text, seconds)
    return found


def transcribe_faster_whisper(model, paths: list[str], progress: bool = True, cache=None,
                              prompt: str | None = None) -> tuple[list[str], list[float]]:
    """Greedy English transcription of each file, with per-file seconds (decoding included); `prompt`: the
    decoder's initial prompt (`domain_prompt`; its cache is `transcript_cache(cfg, asr, prompt)`).

    With a `TranscriptCache` (accuracy runs), files decoded before are read back and the rest are decoded by
    `fill_transcript_caches`. Timed runs pass none: one file at a time on the every-thread stream."""
    from tqdm.auto import tqdm

    desc = "faster-whisper" + (" (prompted)" if prompt else "")
    if cache is not None:
        found = fill_transcript_caches(model, paths, {prompt: cache}, progress, desc)[prompt]
        return [found[p][0] for p in paths], [found[p][1] for p in paths]
    texts, seconds = [], []
    for path in tqdm(paths, desc=desc, disable=not progress, leave=False):
        t0 = time.perf_counter()
        texts.append(decode(model, str(path), prompt))
        seconds.append(time.perf_counter() - t0)
    return texts, seconds
