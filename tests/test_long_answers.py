"""Long answers and the stage-2 mixture: the prompt picks the task and the target follows it."""
from __future__ import annotations

import pytest

from surgvqa import prompts
from surgvqa.collate import ClipDialogues, Collator, Example, long_form, transcription_examples
from surgvqa.config import Config, ConfigError

from test_model import speech_like
from test_vision_training import grafted  # noqa: F401  (a fixture)

LONG = {"yes": "Yes, a catheter is in view.", "no": "No, there is no catheter in view."}


def rows(n_clips: int) -> list[Example]:
    out = []
    for c in range(n_clips):
        short = "yes" if c % 3 == 0 else "no"
        for q in ("is a catheter visible", "can you see a catheter"):
            out.append(Example("vqa", short, question=q, frames=(f"clip{c}",),
                               meta={"question_type": "tool_catheter_check", "answer": LONG[short], "id": f"{c}{q}"}))
        out.append(Example("vqa", "no", question="is there blue dye", frames=(f"clip{c}",),
                           meta={"question_type": "blue_dye_presence", "answer": "No blue dye is seen.", "id": f"{c}d"}))
    return out


def pairs(conv: Example) -> list[tuple[str, str]]:
    """(instruction of each user turn, the assistant's target) as the collator writes them."""
    messages = Collator(processor=None).messages(conv)
    out = []
    for user, assistant in zip(messages[::2], messages[1::2]):
        instruction = user["content"][-1]["text"]
        out.append((instruction, assistant["content"][0]["text"]))
    return out


def test_short_prompt_never_has_a_long_target_and_long_prompt_always_does():
    ds = ClipDialogues(rows(30), questions_per_clip=2, seed=0, long_fraction=0.4)
    seen = {prompts.VQA_INSTRUCTION: 0, prompts.LONG_INSTRUCTION: 0}
    for epoch in range(3):
        ds.set_epoch(epoch)
        for conv in ds.examples:
            for (instruction, target), turn in zip(pairs(conv), conv.turns):
                seen[instruction] += 1
                if instruction == prompts.LONG_INSTRUCTION:
                    assert turn.long and target == turn.meta["answer"] and target not in ("yes", "no")
                else:
                    assert instruction == prompts.VQA_INSTRUCTION and not turn.long and target in ("yes", "no")
    share = seen[prompts.LONG_INSTRUCTION] / sum(seen.values())
    assert 0.3 < share < 0.5  # about long_fraction of the questions


def test_without_long_answers_the_draws_are_unchanged():
    plain = ClipDialogues(rows(12), questions_per_clip=2, seed=5)
    zero = ClipDialogues(rows(12), questions_per_clip=2, seed=5, long_fraction=0.0)
    assert [[t.meta["id"] for t in c.turns] for c in plain.examples] == [[t.meta["id"] for t in c.turns] for c in zero.examples]
    assert not any(t.long for c in zero.examples for t in c.turns)


def test_long_form_needs_a_long_answer_and_only_vqa_has_one():
    with pytest.raises(ValueError, match="no long-form answer"):
        long_form(Example("vqa", "no", question="q", meta={"id": "r1", "question_type": "t"}))
    with pytest.raises(ValueError, match="only vqa"):
        Example("transcribe", "a sentence", long=True)


def test_transcription_in_the_mixture_is_labelled_on_the_transcript_only(grafted, tmp_path):
    from surgvqa.audio import write_wav

    _, processor = grafted
    write_wav(tmp_path / "s.wav", speech_like(1.0, 1))
    (example,) = transcription_examples([{"id": "sc1", "kind": "question", "text": "is there blue dye",
                                          "voice": "v", "audio": "s.wav", "split": "train"}], tmp_path)
    batch = Collator(processor)([example])
    labelled = processor.tokenizer.decode(batch["labels"][0][batch["labels"][0] != -100])
    assert labelled == "is there blue dye<|im_end|>"
    assert prompts.TRANSCRIBE_INSTRUCTION in processor.tokenizer.decode(batch["input_ids"][0])


@pytest.mark.parametrize("key", ["long_answer_fraction", "transcription_fraction", "heard_question_fraction"])
@pytest.mark.parametrize("value", [-0.1, 1.0, "half", True])
def test_mixture_shares_are_checked(key, value):
    with pytest.raises(ConfigError, match=f"train.{key}"):
        Config.from_params({"profile": "unit", "train": {key: value}})


# ---- the text model reads some questions as the ASR heard them (train.heard_question_fraction) ----------


@pytest.fixture()
def spoken_rows(tmp_path):
    from PIL import Image
    import numpy as np

    from surgvqa.audio import write_wav
    from surgvqa.data import Dataset

    frame = tmp_path / "f" / "0.png"
    frame.parent.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(frame)
    rows = []
    for i in range(200):
        audio = tmp_path / "audio" / f"q{i % 20}.wav"  # 20 recordings, each asked of 10 clips
        if not audio.exists():
            write_wav(audio, np.zeros(800))
        rows.append({"id": f"r{i}", "video_id": "v", "frames": ["f/0.png"], "frame_numbers": [0],
                     "question": f"is a catheter visible {i % 20}", "question_type": "tool_catheter_check",
                     "short_answer": "no", "answer": "No catheter.", "audio": f"audio/q{i % 20}.wav", "split": "train"})
    return Dataset(rows, tmp_path, tmp_path)


def test_heard_questions_replace_a_share_of_questions_by_the_rows_own_transcript(spoken_rows):
    from surgvqa.collate import vqa_examples
    from surgvqa.training_data import heard_rows, with_heard_questions

    heard = {str(spoken_rows.audio_path(r)): f"is a cat a tar visible {r['id'][1:]}" for r in spoken_rows.rows}
    heard[str(spoken_rows.audio_path(spoken_rows.rows[0]))] = ""  # whisper heard nothing
    examples = vqa_examples(spoken_rows, "text")
    mixed = with_heard_questions(examples, spoken_rows, heard, 0.3, seed=0)
    changed = [(row, ex) for row, ex in zip(spoken_rows.rows, mixed) if ex.meta.get("heard")]
    assert 0.2 < len(changed) / len(mixed) < 0.4
    # the rows decoded for training (`heard_transcripts`) are exactly the rows read as heard
    assert heard_rows(spoken_rows, 0.3, seed=0) == [bool(ex.meta.get("heard")) for ex in mixed]
    for row, ex in changed:
        assert ex.question == (heard[str(spoken_rows.audio_path(row))] or "?")
        assert ex.answer == row["short_answer"] and ex.meta["question"] == row["question"]  # scored as asked
    kept = [(row, ex) for row, ex in zip(spoken_rows.rows, mixed) if not ex.meta.get("heard")]
    assert all(ex.question == row["question"] for row, ex in kept)
    # the heard wording is what the collator writes into the prompt
    rendered = Collator(processor=None).messages(changed[0][1])[0]["content"]
    assert any(c.get("text") == f"Question: {changed[0][1].question}" for c in rendered)
    assert with_heard_questions(examples, spoken_rows, heard, 0.3, seed=0) == mixed  # seeded
    assert with_heard_questions(examples, spoken_rows, heard, 0.0, seed=0) == examples


def test_heard_question_without_a_transcript_names_its_row(spoken_rows):
    from surgvqa.collate import vqa_examples
    from surgvqa.training_data import with_heard_questions

    with pytest.raises(KeyError, match="row r"):
        with_heard_questions(vqa_examples(spoken_rows, "text"), spoken_rows, {}, 0.5, seed=0)



# ---- what the graft learns to transcribe (stages 1 and 2) -----------------------------------------------


def test_question_recordings_are_each_recording_once_with_its_spoken_text(spoken_rows):
    from surgvqa.collate import question_recordings

    recordings = question_recordings(spoken_rows)
    assert len(recordings) == 20 == len({ex.audio for ex in recordings})  # 200 rows ask 20 recordings
    by_audio = {str(spoken_rows.audio_path(r)): r["question"] for r in spoken_rows.rows}
    assert all(ex.task == "transcribe" and ex.answer == by_audio[ex.audio] for ex in recordings)
    silent = spoken_rows.rows[0] | {"audio": None}
    with pytest.raises(ValueError, match="row r0"):
        question_recordings(type(spoken_rows)([silent], spoken_rows.root, spoken_rows.root))


def added_per_epoch(ds: ClipDialogues, plain: ClipDialogues, epochs: int) -> list[list[Example]]:
    """What `ds` adds to a run without the addition (`plain`), per epoch; `plain`'s examples must come first,
    unchanged, and `ds`'s length must never change (Trainer's schedule holds)."""
    added, lengths = [], set()
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        plain.set_epoch(epoch)
        assert ds.examples[:len(plain.examples)] == plain.examples
        lengths.add(len(ds))
        added.append(ds.examples[len(plain.examples):])
    assert len(lengths) == 1
    return added


def test_the_transcription_pool_is_drawn_anew_each_epoch_and_covered(spoken_rows):
    from surgvqa.collate import question_recordings

    pool = question_recordings(spoken_rows)
    ds = ClipDialogues(rows(12), questions_per_clip=2, seed=3, pool=pool, pool_draws=12)
    plain = ClipDialogues(rows(12), questions_per_clip=2, seed=3)
    drawn = []
    for added in added_per_epoch(ds, plain, epochs=5):  # the conversations are a pool-less run's
        turns = [ex.audio for ex in added if ex.task == "transcribe"]
        assert len(turns) == 12 == len(set(turns))  # no repeats while the pool lasts
        drawn.append(turns)
    assert len({a for turns in drawn for a in turns}) == 20  # 60 draws over five epochs cover the pool
    assert drawn[0] != drawn[1]
    with pytest.raises(ValueError, match="pool is empty"):
        ClipDialogues(rows(2), questions_per_clip=2, pool=[], pool_draws=1)



# ---- stage 1's speech ---------------------------------------------------------------------------------


def test_stage1_transcribes_the_training_corpus_and_every_training_question_recording(spoken_rows, tmp_path):
    from surgvqa.training_data import stage1_examples

    corpus = [{"id": f"c{i}", "text": f"sentence {i}", "audio": f"corpus/{i}.wav", "voice": "v", "kind": "narration",
               "split": "val" if i < 2 else "train"} for i in range(12)]
    cfg = Config.from_params({"profile": "unit", "run_root": str(tmp_path)})
    train, val = stage1_examples(cfg, {"train": spoken_rows}, corpus)
    assert {ex.task for ex in train} == {"transcribe"} and len(train) == 10 + 20  # corpus + the 20 recordings
    assert [ex.answer for ex in val] == ["sentence 0", "sentence 1"]  # the val corpus picks the checkpoint by WER


# ---- the graft's stage 2 also reads (train.graft_read_ratio) ---------------------------------------------


def heard(n_clips: int) -> list[Example]:
    return [Example("vqa", ex.answer, mode="audio", audio=f"{ex.meta['id']}.wav", question=ex.question,
                    frames=ex.frames, meta=ex.meta) for ex in rows(n_clips)]


def test_read_conversations_join_the_heard_ones_drawn_anew_each_epoch():
    read = ClipDialogues(rows(12), questions_per_clip=2, seed=4)
    ds = ClipDialogues(heard(12), questions_per_clip=2, seed=3, read=read, read_draws=6)
    plain = ClipDialogues(heard(12), questions_per_clip=2, seed=3)
    clips = []
    for extra in added_per_epoch(ds, plain, epochs=4):  # the heard conversations are unchanged
        assert len(extra) == 6 and len(ds) == 18
        for conv in extra:  # whole conversations, every turn read, the clip seen
            assert [t.mode for t in (conv, *conv.follow_ups)] == ["text"] * 2 and conv.frames and conv.question
            assert not conv.audio
        assert len({conv.frames for conv in extra}) == 6  # six clips, none twice
        clips.append({conv.frames for conv in extra})
    assert clips[0] != clips[1]
    again = ClipDialogues(heard(12), questions_per_clip=2, seed=3, read=ClipDialogues(rows(12), 2, seed=4), read_draws=6)
    again.set_epoch(3)
    assert again.examples == ds.examples  # seeded by (seed, epoch)
    with pytest.raises(ValueError, match="read_draws=13"):
        ClipDialogues(heard(12), questions_per_clip=2, read=read, read_draws=13)


def test_only_the_grafts_stage2_reads_and_its_ratio_sets_the_count(spoken_rows, tmp_path):
    from surgvqa.data import Dataset
    from surgvqa.training_data import stage2_examples

    clips = Dataset([{**r, "frames": [f"f/{i % 8}.png"]} for i, r in enumerate(spoken_rows.rows)],  # 8 clips
                    spoken_rows.root, spoken_rows.audio_root)
    for i in range(8):
        (tmp_path / "f" / f"{i}.png").write_bytes((tmp_path / "f" / "0.png").read_bytes())
    splits = {"train": clips, "val": clips}

    def stage2(ratio, mode):
        cfg = Config.from_params({"profile": "unit", "run_root": str(tmp_path),
                                  "train": {"graft_read_ratio": ratio, "transcription_fraction": 0.0,
                                            "long_answer_fraction": 0.0}})
        return stage2_examples(cfg, splits, mode)[0]

    plain, half = stage2(0.0, "audio"), stage2(0.5, "audio")
    assert len(plain) == 8 and len(half) == 12 and half.examples[:8] == plain.examples
    assert {ex.mode for ex in plain.examples} == {"audio"} and {ex.mode for ex in half.examples[8:]} == {"text"}
    assert len(stage2(1.0, "audio")) == 16
    assert stage2(0.5, "text").examples == stage2(0.0, "text").examples  # the text model reads anyway


@pytest.mark.parametrize("value", [-0.1, 1.5, "half", True])
def test_graft_read_ratio_is_checked(value):
    with pytest.raises(ConfigError, match="train.graft_read_ratio"):
        Config.from_params({"profile": "unit", "train": {"graft_read_ratio": value}})
