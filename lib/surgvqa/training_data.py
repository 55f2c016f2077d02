"""What each stage trains on: conversations about the training clips (re-drawn each epoch, with the mixtures
of the recipe: captions, long answers, transcription, read and heard questions) and the val examples of its
eval loss. Built from the data step's splits and speech corpus only.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from .collate import ClipDialogues, Example, as_question, question_recordings, transcription_examples, vqa_examples
from .config import Config
from .data import clip_key


def vqa_training_examples(cfg: Config, splits: dict, mode: str, caption: bool = False, long_fraction: float = 0.0, heard: dict[str, str] | None = None,
                          pool: list[Example] | None = None, pool_draws: int = 0,
                          read_ratio: float = 0.0) -> tuple[ClipDialogues, list[Example]]:
    """Training conversations about each clip (re-drawn each epoch) and a fixed sample of val questions.
    `heard` (audio path -> transcript): text mode reads `train.heard_question_fraction` of the questions so.
    `read_ratio` (audio mode): that many conversations read (text mode) per conversation heard join each epoch."""
    t = cfg.train
    examples = vqa_examples(splits["train"], mode)
    if heard is not None:
        examples = with_heard_questions(examples, splits["train"], heard, t.heard_question_fraction, cfg.seed)
    read = None
    if read_ratio:
        if mode != "audio":
            raise ValueError("read_ratio: read conversations join heard ones (mode='audio')")
        read = ClipDialogues(vqa_examples(splits["train"], "text"), t.questions_per_clip,
                             seed=cfg.seed + 1, long_fraction=long_fraction, rarity=t.question_rarity)
    train = ClipDialogues(examples, t.questions_per_clip, seed=cfg.seed, caption=caption, long_fraction=long_fraction,
                          rarity=t.question_rarity, pool=pool, pool_draws=pool_draws,
                          read=read, read_draws=int(round(len(read.clips) * read_ratio)) if read else 0)
    val = [ex for ex in vqa_examples(splits["val"], mode) if ex.meta["group"] != "val_wording"]  # the eval loss: trained wordings
    keep = sorted(torch.randperm(len(val), generator=torch.Generator().manual_seed(cfg.seed))[: t.eval_rows].tolist())
    return train, [val[i] for i in keep]


def heard_rows(ds, fraction: float, seed: int) -> list[bool]:
    """Which rows of `ds` (in order) the text model reads as the ASR heard them: a seeded share `fraction`."""
    rng = np.random.default_rng([seed, 0x4EA2D])
    return [bool(rng.random() < fraction) for _ in ds.rows]


def with_heard_questions(examples: list[Example], ds, heard: dict[str, str], fraction: float, seed: int) -> list[Example]:
    """A seeded share `fraction` of text-mode examples (one per row of `ds`, in order; `heard_rows`) asks its question
    as the ASR heard the row's own audio (`heard`: audio path -> transcript; empty -> "?", as the ASR pipeline asks it)."""
    out = []
    for row, ex, as_heard in zip(ds.rows, examples, heard_rows(ds, fraction, seed), strict=True):
        if as_heard:
            path = str(ds.audio_path(row))
            if path not in heard:
                raise KeyError(f"row {row['id']}: no transcript of its audio {path}")
            ex = dataclasses.replace(ex, question=as_question(heard[path]), meta={**ex.meta, "heard": True})
        out.append(ex)
    return out


def heard_transcripts(cfg: Config, ds) -> dict[str, str]:
    """whisper-base's transcript of the audio of every row the text model reads as heard (`heard_rows`), with the
    ASR pipeline's model, settings and transcript cache (the evaluation shares its decodes)."""
    from .asr import asr_model, transcribe_faster_whisper, transcript_cache

    rows = [r for r, as_heard in zip(ds.rows, heard_rows(ds, cfg.train.heard_question_fraction, cfg.seed)) if as_heard]
    missing = [r["id"] for r in rows if not r.get("audio")]
    if missing:
        raise ValueError(f"train.heard_question_fraction > 0: row {missing[0]} (and {len(missing) - 1} more) has no audio")
    paths = sorted({str(ds.audio_path(r)) for r in rows})
    asr = asr_model(cfg, cfg.eval)
    texts, _ = transcribe_faster_whisper(asr, paths, cache=transcript_cache(cfg, asr))
    return dict(zip(paths, texts))


def stage0_examples(cfg: Config, splits: dict) -> tuple[ClipDialogues, list[Example]]:
    """Conversations about the training clips read (text mode), each closed by the clip's dense caption with
    `train.stage0_caption`."""
    return vqa_training_examples(cfg, splits, "text", caption=cfg.train.stage0_caption)


def stage1_examples(cfg: Config, splits: dict, corpus: list[dict]) -> tuple[list[Example], list[Example]]:
    """Stage 1's speech: the transcription pool (training corpus and every training question's recordings); and
    the val corpus (unseen texts), whose WER picks the checkpoint."""
    val = transcription_examples([e for e in corpus if e["split"] == "val"], cfg.paths.data)
    return transcription_pool(cfg, splits, corpus), val


def stage2_examples(cfg: Config, splits: dict, mode: str, corpus: list[dict] | None = None,
                    heard: dict[str, str] | None = None) -> tuple[ClipDialogues, list[Example]]:
    """Conversations about the training clips (a share asking for long answers: `train.long_answer_fraction`);
    for the graft also transcription of the training corpus (`train.transcription_fraction` of the examples),
    so one model answers and transcribes and the prompt picks the task, and conversations read instead of heard
    (`train.graft_read_ratio` per heard one); for the text model, with `heard`, a share of the questions as the ASR
    heard them (`train.heard_question_fraction`)."""
    t = cfg.train
    pool: list[Example] = []
    draws = 0
    if mode == "audio" and t.transcription_fraction:
        if not corpus:
            raise ValueError("train.transcription_fraction > 0 needs the speech corpus (the run's corpus)")
        pool = transcription_pool(cfg, splits, corpus)
        clips = len({clip_key(r) for r in splits["train"].rows})
        draws = int(round(clips * t.transcription_fraction / (1 - t.transcription_fraction)))
    return vqa_training_examples(cfg, splits, mode, pool=pool, pool_draws=draws, long_fraction=t.long_answer_fraction,
                                 heard=heard, read_ratio=t.graft_read_ratio if mode == "audio" else 0.0)


def transcription_pool(cfg: Config, splits: dict, corpus: list[dict]) -> list[Example]:
    """What the graft learns to transcribe (stage 1, and stage 2's share): the training corpus and every recording
    of a training question (all the training voices ask every question, where the corpus has two voices per
    text). Training voices only."""
    pool = transcription_examples([e for e in corpus if e["split"] == "train"], cfg.paths.data)
    known = {Path(ex.audio).resolve() for ex in pool}  # the corpus's questions are some of these recordings
    return pool + [ex for ex in question_recordings(splits["train"]) if Path(ex.audio).resolve() not in known]
