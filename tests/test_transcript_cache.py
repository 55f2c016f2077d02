"""The ASR transcript cache: one decode per (audio bytes, ASR identity); damaged entries are decoded again."""
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from faster_whisper.audio import decode_audio

from surgvqa.audio import write_wav
from surgvqa.evaluate import transcribe_faster_whisper
from surgvqa.caches import TranscriptCache


class CountingASR:
    """Stands in for faster-whisper (and its bulk workers): the transcript is derived from the audio's length in
    samples; counts decodes."""

    workers = 1
    feature_extractor = SimpleNamespace(sampling_rate=16000)

    def __init__(self):
        self.calls = 0
        self.surgvqa_workers = self

    def transcribe(self, audio, **options):
        self.calls += 1
        assert options["temperature"] == 0.0  # the deterministic setting the cache relies on
        n = len(decode_audio(audio) if isinstance(audio, str) else audio)
        return iter([SimpleNamespace(text=f" file of {n} samples "), SimpleNamespace(text="ünïcode")]), None


@pytest.fixture
def wavs(tmp_path):
    paths = []
    for i, seconds in enumerate((0.5, 0.7)):
        p = tmp_path / f"q{i}.wav"
        write_wav(p, np.sin(np.linspace(0, 50, int(16000 * seconds))).astype(np.float32) * 0.1, 16000)
        paths.append(str(p))
    return paths


def test_second_run_decodes_nothing_and_returns_the_same(tmp_path, wavs):
    asr = CountingASR()
    cache = TranscriptCache(tmp_path / "cache", "asr-a")
    first, seconds = transcribe_faster_whisper(asr, wavs, progress=False, cache=cache)
    assert asr.calls == 2 and cache.misses == 2 and cache.hits == 0
    again = TranscriptCache(tmp_path / "cache", "asr-a")
    second, seconds2 = transcribe_faster_whisper(asr, wavs + wavs[:1], progress=False, cache=again)
    assert asr.calls == 2, "a cached file was decoded again"
    assert second == first + first[:1] and again.hits == 2  # a repeated file is looked up once
    assert seconds2[:2] == pytest.approx(seconds)  # the first decode's time travels with the entry
    assert first[0].endswith("ünïcode")


def test_other_asr_or_changed_audio_is_a_miss(tmp_path, wavs):
    asr = CountingASR()
    transcribe_faster_whisper(asr, wavs, progress=False, cache=TranscriptCache(tmp_path / "c", "asr-a"))
    transcribe_faster_whisper(asr, wavs, progress=False, cache=TranscriptCache(tmp_path / "c", "asr-b"))
    assert asr.calls == 4
    write_wav(wavs[0], np.zeros(16000 // 3, dtype=np.float32) + 0.01, 16000)  # same name, new content
    cache = TranscriptCache(tmp_path / "c", "asr-a")
    texts, _ = transcribe_faster_whisper(asr, wavs, progress=False, cache=cache)
    assert asr.calls == 5 and cache.hits == 1 and cache.misses == 1
    assert texts[0].startswith(f"file of {16000 // 3} samples")


def test_damaged_entry_is_decoded_again_with_a_warning(tmp_path, wavs):
    asr = CountingASR()
    cache = TranscriptCache(tmp_path / "c", "asr-a")
    expected, _ = transcribe_faster_whisper(asr, wavs[:1], progress=False, cache=cache)
    entry = next(cache.dir.glob("*.safetensors"))
    entry.write_bytes(entry.read_bytes()[:-3])  # truncated
    cache = TranscriptCache(tmp_path / "c", "asr-a")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        texts, _ = transcribe_faster_whisper(asr, wavs[:1], progress=False, cache=cache)
    assert texts == expected and asr.calls == 2 and cache.recomputed == 1
    assert any(str(entry) in str(w.message) for w in caught)


def test_empty_transcript_round_trips(tmp_path, wavs):
    cache = TranscriptCache(tmp_path / "c", "asr-a")
    cache.store(wavs[0], "", 0.25)
    assert TranscriptCache(tmp_path / "c", "asr-a").lookup(wavs[0]) == ("", 0.25)
