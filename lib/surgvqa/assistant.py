"""Ask the trained graft a question yourself: a spoken question (a file or an array) about a clip (a video
file, a folder of frames or a list of them), answered by the graft, next to the ASR pipeline.

    from surgvqa.assistant import Assistant
    assistant = Assistant.from_run("runs/default")            # or a params file
    reply = assistant.ask(audio="q.wav", frames="clip.mp4")   # Reply(answer, transcript, seconds, ...)
    assistant.ask_asr(audio="q.wav", frames="clip.mp4")       # faster-whisper -> the text model

Models load once, in `from_run`. The graft hears the question (audio mode: the question text is never
in its prompt); its own transcript of the question comes from the stage-1 graft as a transcriber (as in
the evaluation). A typed question (`text=`) is answered by the text model (the same base fine-tuned on
question texts), as the ASR pipeline answers a transcript.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import checkpoints, models
from .asr import asr_model, transcribe_faster_whisper
from .audio import SAMPLE_RATE, AudioError, load_audio, to_mono_16k
from .collate import Collator, Example, as_question
from .config import Config, ConfigError, shown_path
from .infer import predict
from .video import VideoError, read_clip

MAX_QUESTION_S = 30.0  # one Whisper window; longer audio is a talk, not a question
SILENCE_RMS = 1e-3  # below this (full scale 1.0) nothing was said: about -60 dBFS
# What each answer needs from the run (under checkpoints/).
CHECKPOINTS = {"graft": ("stage2", "merged"), "transcriber": ("stage1", "final"), "text": ("stage2_text", "merged")}


class AssistantError(ValueError):
    """A question the assistant cannot take (or a run it cannot load); the message says why."""


# What the CLI and the app report as a message rather than a traceback.
USER_ERRORS = (AssistantError, AudioError, VideoError, ConfigError, models.CheckpointError, FileNotFoundError, NotImplementedError)


@dataclass
class Reply:
    system: str  # "audio_finetuned" (the graft hears), "asr_pipeline" or "text_finetuned" (typed question)
    answer: str
    transcript: str | None  # how the question was understood: the graft's / faster-whisper's transcript, or the typed text
    # "total": from files to the answer; "answer": collating + generating; "transcript": the transcript (for the graft,
    # timed apart from its answer; for the ASR pipeline, part of the total)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def question_audio(audio, name: str | None = None) -> np.ndarray:
    """A question as 16 kHz mono float32, from a path or (array, rate); silence and > 30 s are refused."""
    if isinstance(audio, (str, Path)):
        name = name or str(audio)
        samples = load_audio(audio)
    elif isinstance(audio, tuple) and len(audio) == 2:
        array, rate = audio
        name = name or "<recording>"
        if not isinstance(rate, (int, np.integer)) or not 8_000 <= int(rate) <= 192_000:
            raise AudioError(f"{name}: sample rate must be an integer in 8000..192000 Hz, got {rate!r}")
        samples = to_mono_16k(array, int(rate), name=name)
    else:
        raise AudioError(f"audio must be a file path or (array, sample_rate), got {type(audio).__name__}")
    seconds = len(samples) / SAMPLE_RATE
    if seconds > MAX_QUESTION_S:
        raise AudioError(f"{name}: {seconds:.1f} s of audio; a question must be at most {MAX_QUESTION_S:g} s")
    if seconds < 0.1:
        raise AudioError(f"{name}: {seconds * 1000:.0f} ms of audio is too short to hold a question")
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    if rms < SILENCE_RMS:
        raise AudioError(f"{name}: the audio is silent (RMS {rms:.1e}); check the microphone and ask again")
    return samples


def find_config(run: str | Path, overrides: dict | None = None) -> Config:
    """The Config of a run: a params file, or a run folder (the params its notebooks recorded in metrics/*.json)."""
    path = Path(run)
    if path.suffix in (".yaml", ".yml"):
        return Config.from_yaml(path, overrides)
    if not path.is_dir():
        raise AssistantError(f"{run}: neither a run folder nor a params file (.yaml)")
    recorded = sorted((path / "metrics").glob("*.json"))
    for metrics_file in recorded:
        payload = json.loads(metrics_file.read_text())
        if isinstance(payload, dict) and isinstance(payload.get("params"), dict):
            params = {**payload["params"], "run_root": str(path.resolve().parent), "profile": path.name}
            return Config.from_params(_merged(params, overrides or {}), source=shown_path(metrics_file))
    raise AssistantError(f"{shown_path(path)}: no metrics/*.json with the run's params; is this a run folder "
                         "(runs/<profile>)? Run `make report` first, or pass the params file instead")


def _merged(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for k, v in overrides.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def check_checkpoints(cfg: Config, needed=tuple(CHECKPOINTS)) -> dict[str, Path]:
    """The checkpoint folders the assistant loads, or a message naming what is missing."""
    folders = {k: checkpoints.stage_dir(cfg, CHECKPOINTS[k][0]) / CHECKPOINTS[k][1] for k in needed}
    missing = [shown_path(p) for p in folders.values() if not any((p / n).is_file() for n in models.SAFE_WEIGHTS)]
    if missing:
        raise AssistantError(f"{shown_path(cfg.paths.run)} has no trained checkpoints ({', '.join(missing)} missing): "
                             "train it first (`make report`, notebooks 00-03)")
    return folders


class Assistant:
    """The trained graft (and the ASR pipeline) of one run, loaded once, asked one question at a time."""

    def __init__(self, cfg: Config, graft, transcriber, text_model, processor, asr=None):
        self.cfg = cfg
        self.graft, self.transcriber, self.text_model, self.processor, self.asr = graft, transcriber, text_model, processor, asr
        self.collator = Collator(processor, training=False, frame_size=cfg.data.frame_size)
        self._tmp = tempfile.TemporaryDirectory(prefix="surgvqa-ask-")  # arrays become files the collator reads

    @classmethod
    def from_run(cls, run: str | Path, overrides: dict | None = None, asr: bool = True) -> "Assistant":
        """Load a run's trained models: `run` is a run folder (runs/default) or a params file."""
        return cls.from_config(find_config(run, overrides), asr)

    @classmethod
    def from_config(cls, cfg: Config, asr: bool = True) -> "Assistant":
        folders = check_checkpoints(cfg)
        kw = models.load_kwargs(cfg)
        graft, processor = models.load_graft(folders["graft"], **kw)
        transcriber, _ = models.load_graft(folders["transcriber"], **kw)
        text_model = checkpoints.load_text_base(cfg, folders["text"]).eval()
        return cls(cfg, graft, transcriber, text_model, processor, asr_model(cfg, cfg.eval) if asr else None)

    # ---- inputs ---------------------------------------------------------------------------------

    def _stash(self, kind: str, data: bytes, write) -> Path:
        """A file in the assistant's temp folder named by its content (so a clip asked twice is one clip)."""
        path = Path(self._tmp.name) / kind / hashlib.sha256(data).hexdigest()[:16]
        if not path.exists():
            write(path)
        return path

    def audio_file(self, audio) -> str:
        """A question's audio as a file the collator loads (checked first: silence, > 30 s, odd rates)."""
        samples = question_audio(audio)
        if isinstance(audio, (str, Path)):
            return str(audio)
        # Float WAV at 16 kHz: exactly the samples checked above, loaded back unchanged.
        return str(self._stash("audio", samples.tobytes(), lambda p: _write_float_wav(p.with_suffix(".wav"), samples))
                   .with_suffix(".wav"))

    def frame_files(self, frames, at: float | None = None) -> tuple[str, ...]:
        """A clip as `num_frames` PNGs of the run's frame size (lossless, so the clip is exactly what was decoded)."""
        if frames is None:
            raise AssistantError("a question needs a clip: a video file, a folder of frames or a list of images")
        clip = read_clip(frames, self.cfg.data.num_frames, at=at, size=self.cfg.data.frame_size)
        folder = self._stash("frames", clip.tobytes(), lambda p: _write_pngs(p, clip))
        return tuple(str(p) for p in sorted(folder.glob("*.png")))

    # ---- questions ------------------------------------------------------------------------------

    def _generate(self, model, examples: list[Example], max_new_tokens: int | None = None) -> tuple[str, float]:
        out = predict(model, self.collator, examples, batch_size=1, max_new_tokens=max_new_tokens or self.cfg.eval.max_new_tokens,
                      progress=False)
        return out["predictions"][0], out["seconds"]

    def ask(self, audio=None, frames=None, text: str | None = None, long: bool = False, at: float | None = None,
            transcript: bool = True) -> Reply:
        """The graft's answer to a spoken question about a clip (or the text model's to a typed one).

        `at`: sample the clip around this time (s) of a video instead of over all of it. `transcript`:
        also let the graft transcribe what it heard (its timing is reported apart from the answer's).
        `long`: ask for a sentence (the long instruction); runs trained with `train.long_answer_fraction` > 0
        answer in one, others still answer in a few words.
        """
        if (audio is None) == (text is None):
            raise AssistantError("ask with either a spoken question (audio=...) or a typed one (text=...), not both or neither")
        t0 = time.perf_counter()
        clip = self.frame_files(frames, at)
        budget = self.cfg.eval.long_max_new_tokens if long else None
        if text is not None:
            if not text.strip():
                raise AssistantError("the typed question is empty")
            answer, seconds = self._generate(self.text_model, [Example("vqa", "", mode="text", question=text.strip(), frames=clip,
                                                                       long=long)], budget)
            return Reply("text_finetuned", answer, text.strip(), {"answer": seconds, "total": time.perf_counter() - t0})
        path = self.audio_file(audio)
        answer, seconds = self._generate(self.graft, [Example("vqa", "", mode="audio", audio=path, frames=clip, long=long)], budget)
        total = time.perf_counter() - t0
        heard, heard_s = self.transcribe(path) if transcript else (None, 0.0)
        return Reply("audio_finetuned", answer, heard, {"answer": seconds, "transcript": heard_s, "total": total})

    def transcribe(self, audio) -> tuple[str, float]:
        """The graft (after stage 1) as a transcriber: what it heard, and the seconds it took."""
        path = self.audio_file(audio)
        return self._generate(self.transcriber, [Example("transcribe", "", audio=path)], max_new_tokens=48)

    def transcribe_asr(self, audio) -> tuple[str, float]:
        """faster-whisper with the same Whisper: the transcript and the seconds it took."""
        if self.asr is None:
            raise AssistantError("this assistant was loaded without the ASR pipeline (asr=False)")
        texts, seconds = transcribe_faster_whisper(self.asr, [self.audio_file(audio)], progress=False)
        return texts[0], seconds[0]

    def ask_asr(self, audio, frames, at: float | None = None, long: bool = False) -> Reply:
        """The ASR pipeline: faster-whisper transcribes, the text model answers the transcript (times add up)."""
        t0 = time.perf_counter()
        clip = self.frame_files(frames, at)
        heard, heard_s = self.transcribe_asr(audio)
        answer, seconds = self._generate(self.text_model, [Example("vqa", "", mode="text", question=as_question(heard), frames=clip,
                                                                   long=long)],
                                         self.cfg.eval.long_max_new_tokens if long else None)
        return Reply("asr_pipeline", answer, heard, {"transcript": heard_s, "answer": seconds, "total": time.perf_counter() - t0})

    def compare(self, audio, frames, at: float | None = None, long: bool = False) -> dict[str, Reply]:
        """The graft and the ASR pipeline on the same question and clip."""
        out = {"audio_finetuned": self.ask(audio=audio, frames=frames, at=at, long=long)}
        if self.asr is not None:
            out["asr_pipeline"] = self.ask_asr(audio, frames, at, long=long)
        return out


def _write_float_wav(path: Path, samples: np.ndarray) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, SAMPLE_RATE, subtype="FLOAT")


def _write_pngs(folder: Path, clip: np.ndarray) -> None:
    from PIL import Image

    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(clip):
        Image.fromarray(frame).save(tmp / f"{i:03d}.png")
    tmp.rename(folder)


__all__ = ["Assistant", "AssistantError", "Reply", "USER_ERRORS", "find_config", "question_audio"]
