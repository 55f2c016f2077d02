"""Examples and the one collator every stage (and the evaluation) batches them with.

An `Example` is one prompt/answer pair of a task:
- `vqa`: the video clip + the question, heard (`mode="audio"`) or read (`mode="text"`) -> short answer;
- `transcribe`: speech -> its transcript (stage 1, and the graft as a transcriber);
- `repeat`: a sentence -> the same sentence (stage 0, so the base model can read and copy).

The collator renders prompts with `prompts` (one chat template for every stage), right-pads
for training with loss on the answer only, left-pads for generation, and in audio mode
asserts that the question text is nowhere in the prompt.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import prompts
from .audio import load_audio
from .data import Dataset, load_frames
from .features import FeatureCache, pad_chunks

TASKS = ("vqa", "transcribe", "repeat")


@dataclass
class Example:
    task: str
    answer: str  # the target: short answer, transcript, or the sentence to repeat
    mode: str = "text"  # vqa only: "audio" (heard) | "text" (read)
    question: str | None = None  # vqa text; in audio mode kept only to prove it is absent from the prompt
    audio: str | None = None  # absolute path of the spoken input
    frames: tuple[str, ...] = ()  # absolute paths of the clip's frames
    meta: dict = field(default_factory=dict)  # id, question_type, template, group, voice ... (for evaluation)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; one of {TASKS}")
        if self.task == "vqa" and self.mode not in ("audio", "text"):
            raise ValueError(f"vqa mode must be 'audio' or 'text', got {self.mode!r}")
        if (self.task == "transcribe" or self.mode == "audio") and not self.audio:
            raise ValueError(f"example {self.meta.get('id', '?')}: {self.task}/{self.mode} needs an audio file")


def vqa_examples(ds: Dataset, mode: str, audio_override: dict[str, str] | None = None) -> list[Example]:
    """One example per row; `audio_override` maps row id -> another audio file (noise, audio swap)."""
    out = []
    for row in ds.rows:
        audio = None
        if mode == "audio":
            path = (audio_override or {}).get(row["id"]) or ds.audio_path(row)
            if path is None:
                raise ValueError(f"row {row['id']}: audio mode but the row has no audio")
            audio = str(path)
        meta = {k: row.get(k) for k in ("id", "question_type", "template", "group", "voice", "video_id", "answer", "audio_s")}
        meta["question"] = row["question"]
        out.append(Example("vqa", row["short_answer"], mode=mode, question=row["question"], audio=audio,
                           frames=tuple(str(p) for p in ds.frame_paths(row)), meta=meta))
    return out


def transcription_examples(corpus: list[dict], audio_root: str | Path) -> list[Example]:
    """Stage-1 corpus entries (`speech_corpus.jsonl`) -> speech -> transcript examples."""
    return [Example("transcribe", e["text"], audio=str(Path(audio_root) / e["audio"]),
                    meta={"id": e["id"], "voice": e["voice"], "kind": e["kind"], "split": e["split"]})
            for e in corpus]


def repeat_examples(sentences: list[str]) -> list[Example]:
    return [Example("repeat", s, meta={"id": f"repeat{i:05d}"}) for i, s in enumerate(sentences)]


class ExampleDataset(torch.utils.data.Dataset):
    def __init__(self, examples: list[Example]):
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> Example:
        return self.examples[i]


class Collator:
    """Examples -> model inputs.

    training=True: the answer is in the prompt, right padding, `labels` on the answer tokens only.
    training=False: the prompt ends at the assistant header, left padding (for `generate`).
    With a `FeatureCache`, audio goes in pre-encoded (`mm_encoder_outputs["audio"]`) so the
    frozen encoder runs once per file; without one, as log-mel features.
    """

    def __init__(self, processor, training: bool = True, feature_cache: FeatureCache | None = None,
                 frame_size: int | None = None):
        self.processor = processor
        self.training = training
        self.feature_cache = feature_cache
        self.frame_size = frame_size
        self._frames: dict[tuple[str, ...], np.ndarray] = {}  # a clip is shared by ~20 questions

    def messages(self, ex: Example) -> list[dict]:
        answer = ex.answer if self.training else None
        if ex.task == "transcribe":
            return prompts.transcribe_messages(answer)
        if ex.task == "repeat":
            return prompts.repeat_messages(ex.answer, answer)
        question = ex.question if ex.mode == "text" else None
        return prompts.vqa_messages(ex.mode, question=question, video=bool(ex.frames), answer=answer)

    def prompt(self, ex: Example) -> str:
        text = prompts.render(self.processor, self.messages(ex))
        if ex.task == "vqa" and ex.mode == "audio" and ex.question:
            prompts.assert_no_question_text(text, ex.question)
        return text

    def frames(self, paths: tuple[str, ...]) -> np.ndarray:
        if paths not in self._frames:
            if len(self._frames) > 512:
                self._frames.clear()
            self._frames[paths] = load_frames(paths, self.frame_size)
        return self._frames[paths]

    def __call__(self, examples: list[Example]) -> dict:
        texts = [self.prompt(ex) for ex in examples]
        videos = [list(self.frames(ex.frames)) for ex in examples if ex.frames]
        audio_paths = [ex.audio for ex in examples if ex.audio and (ex.task == "transcribe" or ex.mode == "audio")]
        kwargs: dict = {"videos": videos or None, "padding_side": "right" if self.training else "left"}
        encoded = None
        if audio_paths and self.feature_cache is not None:
            looked_up = [self.feature_cache.get(p) for p in audio_paths]
            kwargs["audio_lengths"] = [n for _, n in looked_up]
            encoded = pad_chunks([chunk for chunks, _ in looked_up for chunk in chunks])
        elif audio_paths:
            kwargs["audio"] = [load_audio(p) for p in audio_paths]
        batch = dict(self.processor(text=texts, **kwargs))
        if encoded is not None:
            batch["mm_encoder_outputs"] = {"audio": encoded}
        if self.training:
            batch["labels"] = prompts.assistant_labels(batch["input_ids"], self.processor.tokenizer)
        return batch
