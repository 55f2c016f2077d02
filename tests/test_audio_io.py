"""Audio files enter through surgvqa.audio.load_audio: any rate/channels, or a clear error naming the file."""
import numpy as np
import pytest
import soundfile as sf

from surgvqa.audio import AudioError, load_audio


def tone(seconds, rate):
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_stereo_44k_is_downmixed_and_resampled(tmp_path):
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([tone(2.0, 44100), tone(2.0, 44100)], axis=1), 44100)
    audio = load_audio(path)
    assert audio.ndim == 1 and audio.dtype == np.float32
    assert abs(len(audio) - 32000) <= 1
    assert 0.3 < np.abs(audio).max() < 0.6


def test_flac_at_8k_is_resampled(tmp_path):
    path = tmp_path / "q.flac"
    sf.write(path, tone(1.5, 8000), 8000)
    assert abs(len(load_audio(path)) - 24000) <= 1


def test_empty_audio_names_the_file(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match=r"empty\.wav.*empty"):
        load_audio(path)


def test_corrupt_audio_names_the_file(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    with pytest.raises(AudioError, match=r"corrupt\.wav.*unreadable or corrupt"):
        load_audio(path)


def test_missing_audio_names_the_file(tmp_path):
    with pytest.raises(AudioError, match=r"nothere\.wav.*not found"):
        load_audio(tmp_path / "nothere.wav")
