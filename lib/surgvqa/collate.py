"""Examples and the one collator every stage (and the evaluation) batches them with.

An `Example` is one prompt/answer pair of a task:
- `vqa`: the video clip + the question, heard (`mode="audio"`) or read (`mode="text"`) -> short answer, or
  with `long=True` the long-form answer (a sentence; the prompt's instruction says which);
- `transcribe`: speech -> its transcript (stage 1, and the graft as a transcriber);
- `caption`: the clip -> its dense caption (stage 0's conversations close with one).

The collator renders prompts with `prompts` (one chat template for every stage), right-pads
for training with loss on the answer only, left-pads for generation, and in audio mode
asserts that the question text is nowhere in the prompt.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from . import prompts
from .wording import clip_caption, speakable
from .audio import load_audio
from .data import Dataset, load_frames, row_key
from .caches import VIDEO_PROMPT, FeatureCache, VisionCache, pad_chunks

TASKS = ("vqa", "transcribe", "caption")


@dataclass
class Example:
    task: str
    answer: str  # the target: short (or, `long`, long-form) answer, transcript or caption
    mode: str = "text"  # vqa only: "audio" (heard) | "text" (read)
    long: bool = False  # vqa only: asked for a sentence; `answer` is the row's long-form `answer`
    question: str | None = None  # vqa text; in audio mode kept only to prove it is absent from the prompt
    audio: str | None = None  # absolute path of the spoken input
    frames: tuple[str, ...] = ()  # absolute paths of the clip's frames
    meta: dict = field(default_factory=dict)  # id, question_type, template, group, voice ... (for evaluation)
    # vqa only: further questions about the same clip, asked in the same conversation (training
    # conversations), optionally closed by the clip's caption
    follow_ups: tuple["Example", ...] = ()

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; one of {TASKS}")
        if self.task == "vqa" and self.mode not in ("audio", "text"):
            raise ValueError(f"vqa mode must be 'audio' or 'text', got {self.mode!r}")
        if self.long and self.task != "vqa":
            raise ValueError(f"example {self.meta.get('id', '?')}: only vqa examples have a long form")
        if (self.task == "transcribe" or self.mode == "audio") and not self.audio:
            raise ValueError(f"example {self.meta.get('id', '?')}: {self.task}/{self.mode} needs an audio file")
        questions, closing = self.follow_ups, ()
        if self.follow_ups and self.follow_ups[-1].task == "caption":  # the caption comes last: no answer can copy it
            questions, closing = self.follow_ups[:-1], self.follow_ups[-1:]
        if any(f.task != "vqa" or f.mode != self.mode or f.frames != self.frames for f in questions) or \
                any(f.frames != self.frames for f in closing):
            raise ValueError(f"example {self.meta.get('id', '?')}: follow-ups must be {self.mode} questions about "
                             "the same clip (and at most a closing caption of it)")

    @property
    def turns(self) -> tuple["Example", ...]:
        return (self, *self.follow_ups)


def vqa_examples(ds: Dataset, mode: str, audio_override: dict[tuple, str] | None = None, long: bool = False) -> list[Example]:
    """One example per row; `audio_override` maps a row's `row_key` (video_id, id, template) -> another audio file
    (noise, audio swap): the two wordings of one QA row are two rows with their own audio.
    `long`: the target is the row's long-form `answer`, asked for by the long instruction."""
    out = []
    for row in ds.rows:
        audio = None
        if mode == "audio":
            path = (audio_override or {}).get(row_key(row)) or ds.audio_path(row)
            if path is None:
                raise ValueError(f"row {row['id']}: audio mode but the row has no audio")
            audio = str(path)
        meta = {k: row.get(k) for k in ("id", "question_type", "template", "group", "voice", "video_id", "answer", "audio_s")}
        meta["question"] = row["question"]
        out.append(Example("vqa", row["answer"] if long else row["short_answer"], mode=mode, question=row["question"],
                           audio=audio, frames=tuple(str(p) for p in ds.frame_paths(row)), meta=meta, long=long))
    return out


def as_question(transcript: str) -> str:
    """A transcript asked as the question text; an empty one (nothing heard) asks "?"."""
    return transcript or "?"


def long_form(ex: Example) -> Example:
    """The same question asking for the long-form answer (the row's `answer` sentence)."""
    if not ex.meta.get("answer"):
        raise ValueError(f"example {ex.meta.get('id', '?')}: no long-form answer in its row")
    return replace(ex, answer=ex.meta["answer"], long=True)


def transcription_examples(corpus: list[dict], audio_root: str | Path) -> list[Example]:
    """Stage-1 corpus entries (`speech_corpus.jsonl`) -> speech -> transcript examples."""
    return [Example("transcribe", e["text"], audio=str(Path(audio_root) / e["audio"]),
                    meta={"id": e["id"], "voice": e["voice"], "kind": e["kind"], "split": e["split"]})
            for e in corpus]


def question_recordings(ds: Dataset) -> list[Example]:
    """Every distinct recording of a question in `ds` -> speech -> its spoken text: the questions VQA training
    hears, from every voice that asks them, as transcription examples."""
    first: dict[str, dict] = {}
    for row in ds.rows:
        path = ds.audio_path(row)
        if path is None:
            raise ValueError(f"row {row['id']}: no audio to transcribe")
        first.setdefault(str(path), row)
    return [Example("transcribe", speakable(row["question"]), audio=path,
                    meta={"id": f"{row['id']}:question", "voice": row.get("voice"), "kind": "question", "split": row.get("split")})
            for path, row in sorted(first.items())]


def dialogue(examples: list[Example]) -> Example:
    """VQA examples about one clip -> one conversation (the first asks with the video, the others follow)."""
    return replace(examples[0], follow_ups=tuple(examples[1:]))


class ClipDialogues(torch.utils.data.Dataset):
    """A training epoch of conversations, one per clip, re-drawn each epoch (`set_epoch`).

    Each conversation asks `questions_per_clip` questions of different types about one clip, in
    random order, each in a random wording/voice of that type. With `rarity` > 0 a conversation's types are
    drawn with weight (share of clips with this clip's answer to the type) ** -rarity instead of
    uniformly: a clip with blue dye is asked about the dye in most epochs, not in 6 of 20.
    `pool_draws` examples of `pool` are drawn anew each epoch (each once
    before any repeats), so a pool larger than one epoch's share is covered over the epochs. `read_draws`
    conversations of `read` (dialogues of the same clips in the other mode) join each epoch, from its own epoch.
    A share `long_fraction` of the questions asks for the long-form answer instead (the long
    instruction, the row's `answer` sentence as target); a short-answer prompt never has a long target.
    Deterministic given (seed, epoch); the length never changes, so Trainer's schedule holds.
    """

    def __init__(self, examples: list[Example], questions_per_clip: int, seed: int = 0, caption: bool = False,
                 long_fraction: float = 0.0,
                 rarity: float = 0.0, pool: list[Example] | None = None, pool_draws: int = 0,
                 read: "ClipDialogues | None" = None, read_draws: int = 0):
        clips: dict[tuple[str, ...], dict[str, list[Example]]] = {}
        for ex in examples:
            clips.setdefault(ex.frames, {}).setdefault(ex.meta["question_type"], []).append(ex)
        self.clips = list(clips.values())
        self.by_answer: dict[str, dict[str, list[int]]] = {}  # type -> answer -> clips
        for i, by_type in enumerate(self.clips):
            for qtype, exs in by_type.items():
                for answer in {e.answer for e in exs}:
                    self.by_answer.setdefault(qtype, {}).setdefault(answer, []).append(i)
        self.questions_per_clip = questions_per_clip
        self.rarity = rarity
        totals = {qtype: sum(map(len, by.values())) for qtype, by in self.by_answer.items()}
        share = {(qtype, a): len(c) / totals[qtype] for qtype, by in self.by_answer.items() for a, c in by.items()}
        # per clip, its types' draw weights (a clip has one answer per type)
        self.weights = [{t: share[t, exs[0].answer] ** -rarity for t, exs in by_type.items()} for by_type in self.clips]
        self.caption = caption  # close each conversation with the clip's dense caption (`wording.clip_caption`)
        self.long_fraction = long_fraction
        self.pool = list(pool or [])
        if pool_draws and not self.pool:
            raise ValueError(f"pool_draws={pool_draws} but the pool is empty")
        self.pool_draws = pool_draws
        if read_draws and (read is None or read_draws > len(read.clips)):
            raise ValueError(f"read_draws={read_draws} but the read dialogues have {0 if read is None else len(read.clips)} clips")
        self.read, self.read_draws = read, read_draws
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        rng = np.random.default_rng([self.seed, int(epoch), 0xD1A1])
        order = rng.permutation(len(self.clips))
        self.examples = [self._conversation(rng, self.clips[i], self.weights[i]) for i in order]
        if self.pool_draws:  # its own stream, so the conversations are those of a run without a pool
            order = np.random.default_rng([self.seed, int(epoch), 0x9001]).permutation(len(self.pool))
            self.examples += [self.pool[int(order[i % len(order)])] for i in range(self.pool_draws)]
        if self.read_draws:  # the read set's conversations (the other mode, the same clips), from its own epoch
            self.read.set_epoch(epoch)
            pick = np.random.default_rng([self.seed, int(epoch), 0x7EAD]).permutation(len(self.read.examples))
            self.examples += [self.read.examples[int(i)] for i in pick[: self.read_draws]]
        self.epoch = int(epoch)

    def _conversation(self, rng, by_type: dict[str, list[Example]], weights: dict[str, float]) -> Example:
        types = sorted(by_type)
        if self.rarity:  # drawn only when asked for, so runs without it keep their draws
            w = np.array([weights[t] for t in types])
            order = rng.choice(len(types), size=len(types), replace=False, p=w / w.sum())
        else:
            order = rng.permutation(len(types))
        types = [types[i] for i in order]
        picks = [by_type[t][rng.integers(len(by_type[t]))] for t in types[: self.questions_per_clip]]
        picks = [picks[i] for i in rng.permutation(len(picks))]
        if self.long_fraction:  # drawn only when asked for, so runs without long answers keep their draws
            picks = [long_form(p) if rng.random() < self.long_fraction else p for p in picks]
        if self.caption:
            text = clip_caption({t: exs[0].answer for t, exs in by_type.items()})
            picks.append(Example("caption", text, frames=picks[0].frames, meta={"id": "caption"}))
        return dialogue(picks)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> Example:
        return self.examples[i]


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
                 frame_size: int | None = None, vision_cache: VisionCache | None = None):
        self.processor = processor
        self.training = training
        self.feature_cache = feature_cache
        self.vision_cache = vision_cache
        self.frame_size = frame_size
        self._clips: dict[tuple[str, ...], tuple[torch.Tensor, torch.Tensor]] = {}  # a clip is shared by ~20 questions

    def messages(self, ex: Example) -> list[dict]:
        answer = ex.answer if self.training else None
        if ex.task == "transcribe":
            return prompts.transcribe_messages(answer)
        if ex.task == "caption":
            return prompts.caption_messages(answer, video=bool(ex.frames))
        messages: list[dict] = []
        for i, turn in enumerate(ex.turns):  # one turn, or a training conversation about one clip
            answer = turn.answer if self.training else None
            video = bool(ex.frames) and i == 0
            if turn.task == "caption":
                messages += prompts.caption_messages(answer, video=video)
            else:
                question = turn.question if ex.mode == "text" else None
                messages += prompts.vqa_messages(ex.mode, question=question, video=video, answer=answer, long=turn.long)
        return messages

    def prompt(self, ex: Example) -> str:
        text = prompts.render(self.processor, self.messages(ex))
        if ex.task == "vqa" and ex.mode == "audio":
            for turn in ex.turns:
                if turn.question:
                    prompts.assert_no_question_text(text, turn.question)
        return text

    def clip_patches(self, paths: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """A clip's frames as the vision tower's input (patches, (t, h, w) grid), made once per clip."""
        if paths not in self._clips:
            if len(self._clips) > 2048:
                self._clips.clear()
            out = self.processor(text=[VIDEO_PROMPT], videos=[list(load_frames(paths, self.frame_size))])
            self._clips[paths] = (out["pixel_values_videos"], out["video_grid_thw"][0])
        return self._clips[paths]

    def __call__(self, examples: list[Example]) -> dict:
        texts = [self.prompt(ex) for ex in examples]
        clips = [ex.frames for ex in examples if ex.frames]
        audio_paths = [t.audio for ex in examples if ex.task == "transcribe" or (ex.task == "vqa" and ex.mode == "audio")
                       for t in ex.turns if t.audio]
        kwargs: dict = {"padding_side": "right" if self.training else "left"}
        mm_outputs: dict = {}
        pixels = None
        if clips and self.vision_cache is not None:
            # The frozen tower's tokens come from the cache, pre-encoded (the processor expands the
            # placeholders from their grids), so neither pixels nor the tower are needed.
            tokens, grids = self.vision_cache.get(clips)
            kwargs["video_grid_thw"] = torch.stack(grids)
            mm_outputs["video"] = BaseModelOutputWithPooling(pooler_output=tokens)
        elif clips:  # the tower runs in the model: its input patches, and the grids to expand the placeholders
            patches = [self.clip_patches(c) for c in clips]
            pixels = torch.cat([p for p, _ in patches])
            kwargs["video_grid_thw"] = torch.stack([grid for _, grid in patches])
        encoded = None
        if audio_paths and self.feature_cache is not None:
            looked_up = [self.feature_cache.get(p) for p in audio_paths]
            kwargs["audio_lengths"] = [n for _, n in looked_up]
            encoded = pad_chunks([chunk for chunks, _ in looked_up for chunk in chunks])
        elif audio_paths:
            kwargs["audio"] = [load_audio(p) for p in audio_paths]
        batch = dict(self.processor(text=texts, **kwargs))
        if pixels is not None:
            batch["pixel_values_videos"] = pixels
        if encoded is not None:
            mm_outputs["audio"] = encoded
        if mm_outputs:
            batch["mm_encoder_outputs"] = mm_outputs
        if self.training:
            batch["labels"] = prompts.assistant_labels(batch["input_ids"], self.processor.tokenizer)
        return batch
