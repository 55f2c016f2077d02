"""Audio I/O: every clip enters the project through `load_audio` as 16 kHz mono float32.

wav/flac at any sample rate and channel count are accepted: soundfile (librosa's own backend)
reads them, librosa downmixes and resamples (its soxr path, `soxr_hq`). Empty, unreadable or
non-finite audio raises `AudioError` naming the file.
"""
from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

SAMPLE_RATE = 16_000


class AudioError(ValueError):
    """Audio that cannot be used; the message names the file and the reason."""


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types for corrupt headers/bodies
        raise AudioError(f"{path}: unreadable or corrupt audio ({e})") from None
    return to_mono_16k(data, rate, name=str(path), sample_rate=sample_rate)


def to_mono_16k(data: np.ndarray, rate: int, name: str = "<array>", sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Downmix (frames, channels) or (frames,) audio and resample it to `sample_rate`."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 2:
        data = librosa.to_mono(data.T)  # librosa wants (channels, frames)
    elif data.ndim != 1:
        raise AudioError(f"{name}: expected 1-D or (frames, channels) audio, got shape {data.shape}")
    if data.size == 0:
        raise AudioError(f"{name}: audio is empty (0 samples)")
    if not np.isfinite(data).all():
        raise AudioError(f"{name}: audio contains NaN or infinite samples")
    if rate != sample_rate:
        data = librosa.resample(data, orig_sr=int(rate), target_sr=sample_rate, res_type="soxr_hq").astype(np.float32)
    return data


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(audio, dtype=np.float32), sample_rate, subtype="PCM_16")
    return path
