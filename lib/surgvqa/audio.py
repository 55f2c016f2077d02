"""Audio I/O: every clip enters the project through `load_audio` as 16 kHz mono float32.

wav/flac at any sample rate and channel count are accepted: soundfile (librosa's own backend)
reads them, librosa downmixes and resamples (its soxr path, `soxr_hq`). Empty, unreadable,
truncated (fewer samples than the header promises) or non-finite audio raises `AudioError`
naming the file; `to_mono_16k` applies the same checks to arrays (the processor uses it too).
"""
from __future__ import annotations

from pathlib import Path

import struct

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
    _check_wav_length(path)
    try:
        with sf.SoundFile(str(path)) as f:
            expected, rate = f.frames, f.samplerate
            data = f.read(dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types for corrupt headers/bodies
        raise AudioError(f"{path}: unreadable or corrupt audio ({e})") from None
    if len(data) < expected:
        raise AudioError(f"{path}: truncated audio (header promises {expected} samples, read {len(data)})")
    return to_mono_16k(data, rate, name=str(path), sample_rate=sample_rate)


def _check_wav_length(path: Path) -> None:
    """A WAV whose `data` chunk claims more bytes than the file holds is truncated.

    libsndfile quietly shrinks its frame count to what is there, so the header is read here.
    """
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return  # not a WAV: soundfile's own checks apply
        size = path.stat().st_size
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return  # no data chunk: soundfile reports it
            cid, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                # 0 and 0xFFFFFFFF mean "unknown length" (streamed writers)
                if length not in (0, 0xFFFFFFFF) and f.tell() + length > size:
                    raise AudioError(f"{path}: truncated WAV (data chunk promises {length} bytes, "
                                     f"the file holds {size - f.tell()})")
                return
            f.seek(length + (length & 1), 1)  # chunks are word-aligned


def to_mono_16k(data: np.ndarray, rate: int, name: str = "<array>", sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Downmix (frames, channels) or (frames,) audio and resample it to `sample_rate`.

    Float samples are taken as they are; integer PCM is rescaled to [-1, 1) (int16 by 32768).
    """
    data = np.asarray(data)
    if data.dtype.kind in "iu":
        bits = np.iinfo(data.dtype).bits
        offset = 2.0 ** (bits - 1) if data.dtype.kind == "u" else 0.0  # unsigned PCM is centred on its midpoint
        data = ((data.astype(np.float64) - offset) / 2.0 ** (bits - 1)).astype(np.float32)
    elif data.dtype.kind == "f":
        data = data.astype(np.float32)
    else:
        raise AudioError(f"{name}: expected float or integer PCM samples, got dtype {data.dtype}")
    if data.ndim not in (1, 2):
        raise AudioError(f"{name}: expected 1-D or (frames, channels) audio, got shape {data.shape}")
    if data.size == 0:
        raise AudioError(f"{name}: audio is empty (0 samples)")
    if not np.isfinite(data).all():  # before librosa, which would raise its own error without the name
        raise AudioError(f"{name}: audio contains {int((~np.isfinite(data)).sum())} NaN or infinite samples")
    if data.ndim == 2:
        data = librosa.to_mono(data.T)  # librosa wants (channels, frames)
    if rate != sample_rate:
        data = librosa.resample(data, orig_sr=int(rate), target_sr=sample_rate, res_type="soxr_hq").astype(np.float32)
    return data


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(audio, dtype=np.float32), sample_rate, subtype="PCM_16")
    return path
