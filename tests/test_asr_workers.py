"""Bulk decoding into the transcript cache (`asr.fill_transcript_caches`): the single-thread workers give the text of
the every-thread stream, plain and prompted, with one encoder pass per file for both prompts."""
from pathlib import Path

import faster_whisper
import pytest

from surgvqa import asr
from surgvqa.caches import TranscriptCache

pytestmark = pytest.mark.slow  # the real whisper-base, twice, on the smoke data step's speech

PROMPT = "Is there a polyp? Is blue dye visible? Which tool is in view?"


@pytest.fixture(scope="module")
def wavs(smoke_audio, tmp_path_factory):
    audio = smoke_audio(tmp_path_factory.mktemp("asr_workers")) / "audio"
    return sorted(str(p) for p in audio.glob("*.wav"))[:6]


def test_workers_match_the_serial_stream_and_encode_each_file_once(wavs, ct2_whisper_dir, tmp_path, monkeypatch):
    assert len(wavs) == 6
    stream = faster_whisper.WhisperModel(str(ct2_whisper_dir), device="cpu", compute_type="int8", cpu_threads=2)
    expected = {prompt: [asr.decode(stream, w, prompt) for w in wavs] for prompt in (None, PROMPT)}
    assert expected[None] != expected[PROMPT] or any(expected[None]), "nothing was heard"

    encodes = []
    plain_encode = faster_whisper.WhisperModel.encode
    monkeypatch.setattr(faster_whisper.WhisperModel, "encode",
                        lambda self, features: encodes.append(1) or plain_encode(self, features))
    stream.surgvqa_workers = asr.EncodeOnceWhisper(str(ct2_whisper_dir), device="cpu", compute_type="int8",
                                                   cpu_threads=1, num_workers=2)
    caches = {None: TranscriptCache(tmp_path, "plain"), PROMPT: TranscriptCache(tmp_path, "prompted")}
    asr.fill_transcript_caches(stream, wavs + wavs[:2], caches, progress=False)
    assert len(encodes) == len(wavs), "the prompted decode ran the encoder again"
    for prompt, cache in caches.items():
        assert [cache.lookup(w)[0] for w in wavs] == expected[prompt]
        assert cache.misses == len(wavs)

    asr.fill_transcript_caches(stream, wavs, caches, progress=False)
    assert len(encodes) == len(wavs), "a cached file was decoded again"


def test_transcribe_with_a_cache_reads_back_what_the_workers_stored(wavs, ct2_whisper_dir, tmp_path):
    stream = faster_whisper.WhisperModel(str(ct2_whisper_dir), device="cpu", compute_type="int8", cpu_threads=2)
    stream.surgvqa_workers = asr.EncodeOnceWhisper(str(ct2_whisper_dir), device="cpu", compute_type="int8",
                                                   cpu_threads=1, num_workers=2)
    cache = TranscriptCache(tmp_path, "plain")
    texts, seconds = asr.transcribe_faster_whisper(stream, wavs[:3] + wavs[:1], progress=False, cache=cache)
    assert texts == [asr.decode(stream, w) for w in wavs[:3] + wavs[:1]]
    assert all(s > 0 for s in seconds) and seconds[3] == seconds[0]
    assert Path(cache.dir).is_dir() and cache.misses == 3
