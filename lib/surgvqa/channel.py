"""Training audio heard through another speaker's pace and pitch, another room, microphone and line.

A synthesizer says a sentence the same way every time; a surgeon's question reaches the model through a room,
a microphone and often a codec. `data.augment_share` of the training recordings (stage 1's transcription pool and
stage 2's training questions) are replaced by a copy passed through a random channel; val and every test split
stay as spoken. The channel is drawn from (seed, file name), so a file gets the same channel in every pool and
run, and its parameters are recorded with the row (`channel`). The effects are Spotify's pedalboard (PyPI), not
hand-written DSP.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE, load_audio, write_wav

CHANNEL_VERSION = 1  # bump when draw() or apply() change: derived files are keyed by it

CODECS = ("none", "mp3", "gsm")


def draw(rng: np.random.Generator) -> dict:
    """One channel's parameters (plain floats and strings, so they go into a row as they are)."""
    return {
        "stretch": round(float(rng.uniform(0.9, 1.15)), 3),  # > 1: slower speech
        "semitones": round(float(rng.uniform(-2.0, 2.0)), 2),
        "room_size": round(float(rng.uniform(0.05, 0.6)), 3),
        "reverb_wet": round(float(rng.uniform(0.0, 0.3)), 3),
        "highpass_hz": round(float(rng.uniform(60.0, 400.0)), 1),  # microphone band
        "lowpass_hz": round(float(rng.uniform(3000.0, 7600.0)), 1),
        "gain_db": round(float(rng.uniform(-12.0, 3.0)), 2),  # microphone level
        "codec": str(rng.choice(CODECS)),
    }


def apply(audio: np.ndarray, params: dict, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """`audio` (mono float) through the channel `params`; float32, peak ≤ 1."""
    import pedalboard as pb

    x = np.asarray(audio, dtype=np.float32)[None, :]
    x = pb.time_stretch(x, sample_rate, stretch_factor=1.0 / params["stretch"],
                        pitch_shift_in_semitones=params["semitones"])
    effects = [pb.Reverb(room_size=params["room_size"], wet_level=params["reverb_wet"], dry_level=1.0),
               pb.HighpassFilter(params["highpass_hz"]), pb.LowpassFilter(params["lowpass_hz"]),
               pb.Gain(params["gain_db"])]
    if params["codec"] == "mp3":
        effects.append(pb.MP3Compressor(vbr_quality=6.0))
    elif params["codec"] == "gsm":
        effects.append(pb.GSMFullRateCompressor())
    elif params["codec"] != "none":
        raise ValueError(f"channel codec {params['codec']!r} is not one of {CODECS}")
    y = pb.Pedalboard(effects)(x, sample_rate)[0]
    peak = float(np.abs(y).max()) if y.size else 0.0
    return (y / peak if peak > 1.0 else y).astype(np.float32)


def _file_stream(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, 0xC4A, int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)])


def chosen(seed: int, name: str, share: float) -> bool:
    """Whether the recording called `name` is one of the `share` heard through a channel."""
    return share > 0 and float(_file_stream(seed, name).uniform()) < share


def channel_copy(clean: str | Path, out_dir: str | Path, seed: int) -> tuple[Path, dict]:
    """`clean` through the channel drawn from (seed, its file name), written once to
    `out_dir/<stem>-ch<key>.wav` (atomically); returns the path and the channel's parameters."""
    clean, out_dir = Path(clean), Path(out_dir)
    rng = _file_stream(seed, clean.name)
    rng.uniform()  # the draw `chosen` used
    params = draw(rng)
    made_by = repr((CHANNEL_VERSION, hashlib.sha256(clean.read_bytes()).hexdigest(), sorted(params.items())))
    out = out_dir / f"{clean.stem}-ch{hashlib.sha256(made_by.encode()).hexdigest()[:12]}.wav"
    if not out.is_file():
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".tmp{os.getpid()}-{out.name}")
        write_wav(tmp, apply(load_audio(clean), params))
        tmp.replace(out)
    return out, params
