"""What makes the embedded VLM see: the frozen vision tower's cache, per-clip conversations, rarity draws."""
from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
from PIL import Image

from qwen2_vl_audio import graft
from surgvqa import prompts
from surgvqa.collate import ClipDialogues, Collator, Example, dialogue
from surgvqa.data import load_frames
from surgvqa.caches import VisionCache

from test_model import CORPUS, SIZES, speech_like, tiny_whisper
from surgvqa.tiny_vlm import build_tiny_qwen2_vl


@pytest.fixture(scope="module")
def grafted():
    model, tokenizer, image_processor = build_tiny_qwen2_vl(CORPUS, seed=0, **SIZES)
    torch.manual_seed(2)
    return graft(model, tiny_whisper(), tokenizer=tokenizer, image_processor=image_processor)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Three clips of 8 random 56x56 frames, as PNG files."""
    out = tmp_path_factory.mktemp("clips")
    result = []
    for c in range(3):
        rng = np.random.default_rng(c)
        paths = []
        for f in range(8):
            path = out / f"c{c}_f{f}.png"
            Image.fromarray(rng.integers(0, 255, (56, 56, 3), dtype=np.uint8)).save(path)
            paths.append(str(path))
        result.append(tuple(paths))
    return result


def text_examples(clips) -> list[Example]:
    return [Example("vqa", answer, mode="text", question=question, frames=clip, meta={"question_type": qtype})
            for clip in clips
            for question, qtype, answer in (("is a tool visible", "tool_catheter_check", "yes"),
                                            ("is there blue dye visible in the clip", "blue_dye_presence", "no"))]


def test_answer_scores_are_each_candidates_own_log_likelihood(grafted, clips):
    from collections import Counter
    from dataclasses import replace
    from surgvqa.sight import answer_scores

    model, processor = grafted
    exs = text_examples(clips[:2])
    candidates = {"tool_catheter_check": Counter(yes=1, no=3), "blue_dye_presence": Counter({"no": 2, "yes, blue dye": 1})}
    collator = Collator(processor)
    scores = answer_scores(model, collator, exs, candidates, batch_size=3, progress=False)  # batches of mixed lengths
    assert [sorted(s) for s in scores] == [sorted(candidates[e.meta["question_type"]]) for e in exs]
    for ex, got in zip(exs, scores):
        for cand, value in got.items():  # alone, unpadded: the same sum of the answer's token log-probs
            batch = collator([replace(ex, answer=cand)])
            labels = batch.pop("labels")[0, 1:]
            with torch.no_grad():
                logp = torch.log_softmax(model(**batch).logits[0, :-1].float(), -1)
            keep = labels != -100
            assert value == pytest.approx(logp[keep.nonzero()[:, 0], labels[keep]].sum().item(), abs=1e-3)
    with pytest.raises(ValueError, match="training collator"):
        answer_scores(model, Collator(processor, training=False), exs, candidates)


def test_vision_cache_hits_misses_and_invalidates_with_the_tower(grafted, clips, tmp_path):
    model, processor = grafted
    cache = VisionCache(tmp_path, model, processor, load_frames)
    tokens, grids = cache.get(clips[:2])
    assert cache.stats()["misses"] == 2 and cache.stats()["files"] == 2
    again, _ = cache.get(clips[:2])
    assert cache.hits == 2 and all(torch.equal(a, b) for a, b in zip(tokens, again))
    assert tokens[0].shape == (int(grids[0].prod()) // 4, model.config.text_config.hidden_size)

    fresh = VisionCache(tmp_path, model, processor, load_frames)  # a new process: from disk
    assert torch.equal(fresh.get(clips[:1])[0][0], tokens[0]) and fresh.hits == 1

    with torch.no_grad():
        model.model.visual.blocks[0].mlp.fc1.weight.add_(0.01)  # a changed tower is a miss, never a stale hit
    try:
        changed = VisionCache(tmp_path, model, processor, load_frames)
        assert changed.dir != cache.dir
        other, _ = changed.get(clips[:1])
        assert changed.misses == 1 and not torch.equal(other[0], tokens[0])
    finally:
        with torch.no_grad():
            model.model.visual.blocks[0].mlp.fc1.weight.sub_(0.01)


def test_damaged_vision_entry_is_recomputed_with_a_warning(grafted, clips, tmp_path):
    model, processor = grafted
    cache = VisionCache(tmp_path, model, processor, load_frames)
    tokens, _ = cache.get(clips[:1])
    entry = next(cache.dir.glob("*.safetensors"))
    entry.write_bytes(entry.read_bytes()[:-40])
    fresh = VisionCache(tmp_path, model, processor, load_frames)
    with pytest.warns(UserWarning, match=entry.name):
        again, _ = fresh.get(clips[:1])
    assert fresh.recomputed == 1 and torch.allclose(again[0], tokens[0])


def test_cached_vision_tokens_give_the_same_logits_and_answers(grafted, clips, tmp_path):
    model, processor = grafted
    examples = text_examples(clips)[:4]
    cache = VisionCache(tmp_path, model, processor, load_frames)
    with torch.no_grad():
        plain = Collator(processor)(examples)
        cached = Collator(processor, vision_cache=cache)(examples)
        assert "pixel_values_videos" not in cached and torch.equal(plain["input_ids"], cached["input_ids"])
        assert torch.allclose(model(**plain).logits, model(**cached).logits, atol=1e-5)
        gen = [Collator(processor, training=False, vision_cache=c)(examples) for c in (None, cache)]
        outs = [model.generate(**g, max_new_tokens=4, do_sample=False) for g in gen]
    assert torch.equal(outs[0], outs[1])


def test_conversation_trains_every_answer_and_hides_heard_questions(grafted, clips, tmp_path):
    model, processor = grafted
    exs = text_examples(clips[:1])
    conv = dialogue(exs)
    batch = Collator(processor)([conv])
    labelled = processor.tokenizer.decode(batch["labels"][0][batch["labels"][0] != -100])
    assert labelled.count("<|im_end|>") == 2 and "yes" in labelled and "no" in labelled
    assert processor.tokenizer.decode(batch["input_ids"][0]).count("<|video_pad|>") == batch["video_grid_thw"][0].prod() // 4

    wav = tmp_path / "q.wav"
    from surgvqa.audio import write_wav
    write_wav(wav, speech_like(1.0, 0))
    heard = dialogue([Example("vqa", e.answer, mode="audio", question=e.question, audio=str(wav), frames=e.frames,
                              meta=e.meta) for e in exs])
    text = Collator(processor).prompt(heard)
    assert text.count("<|audio|>") == 2 or text.count(prompts.VQA_INSTRUCTION) == 2
    assert all(e.question not in text for e in exs)
    with pytest.raises(ValueError, match="same clip"):
        dialogue([exs[0], Example("vqa", "no", mode="text", question="q", frames=clips[1], meta={"question_type": "x"})])


def test_clip_dialogues_redraw_each_epoch(clips):
    # 40 clips: a rare "yes" (4 clips) on one type, a constant answer on another
    examples = []
    for c in range(40):
        clip = (f"clip{c}",)
        examples += [Example("vqa", "yes" if c < 4 else "no", question="is a tool visible", frames=clip,
                             meta={"question_type": "tool"}),
                     Example("vqa", "white light", question="what light", frames=clip, meta={"question_type": "light"})]
    natural = ClipDialogues(examples, questions_per_clip=2, seed=0)
    assert len(natural) == 40 and sorted(e.frames for e in natural.examples) == sorted({e.frames for e in examples})
    first = [(e.frames, [t.question for t in e.turns]) for e in natural.examples]
    natural.set_epoch(0)
    assert first == [(e.frames, [t.question for t in e.turns]) for e in natural.examples]  # deterministic
    natural.set_epoch(1)
    assert first != [(e.frames, [t.question for t in e.turns]) for e in natural.examples]
    for conv in natural.examples:
        assert len({t.meta["question_type"] for t in conv.turns}) == len(conv.turns) == 2
        assert {t.frames for t in conv.turns} == {conv.frames}
    answers = collections.Counter(t.answer for conv in natural.examples for t in conv.turns if t.meta["question_type"] == "tool")
    assert answers["yes"] / sum(answers.values()) == pytest.approx(0.1)  # without rarity, as often as the data has it


def test_question_rarity_asks_about_a_clips_rare_answer_more_often():
    # 60 clips, 3 types, 1 question each: a rare "yes" (6 clips) on "tool", common answers elsewhere
    examples = []
    for c in range(60):
        clip = (f"clip{c}",)
        examples += [Example("vqa", "yes" if c < 6 else "no", question="is a tool visible", frames=clip,
                             meta={"question_type": "tool"}),
                     Example("vqa", "white light", question="what light", frames=clip, meta={"question_type": "light"}),
                     Example("vqa", "no" if c % 2 else "yes", question="is it blurred", frames=clip,
                             meta={"question_type": "blur"})]

    def tool_yes_asked(rarity):
        counts = collections.Counter()
        for epoch in range(20):
            ds = ClipDialogues(examples, questions_per_clip=1, seed=0, rarity=rarity)
            ds.set_epoch(epoch)
            counts.update(t.answer for conv in ds.examples for t in conv.turns if t.meta["question_type"] == "tool")
        return counts["yes"] / (6 * 20)  # share of (rare clip, epoch) pairs asked about the tool

    uniform, rare = tool_yes_asked(0.0), tool_yes_asked(1.0)
    assert 0.2 < uniform < 0.5  # 1 of 3 types
    # weights on a tool clip: tool 10, light 1, blur 2 -> the tool is asked 10/13 of the time
    assert rare > 0.65 and rare > 2 * uniform
    ds = ClipDialogues(examples, questions_per_clip=3, seed=0, rarity=1.0)
    assert all(len({t.meta["question_type"] for t in conv.turns}) == 3 for conv in ds.examples)  # still every type once
    plain = ClipDialogues(examples, questions_per_clip=2, seed=4)
    assert [[t.question for t in c.turns] for c in plain.examples] == \
        [[t.question for t in c.turns] for c in ClipDialogues(examples, questions_per_clip=2, seed=4, rarity=0.0).examples]


def test_caption_names_every_answer_of_the_scene():
    from surgvqa import synthetic
    from surgvqa.wording import clip_caption

    by_template, scenes = synthetic.generate(0, 1, 6, 8, 24, {"lesion": 1.0, "tool": 1.0})
    by_clip: dict[tuple, dict[str, str]] = {}
    for row in by_template["in"]:
        by_clip.setdefault(tuple(row["frames"]), {})[row["question_type"]] = row["short_answer"]
    for answers in by_clip.values():
        caption = clip_caption(answers)
        parts = dict(part.split(": ", 1) for part in caption.split("; "))
        assert parts == {t.replace("_", " "): a for t, a in answers.items()}
    with pytest.raises(ValueError, match="unknown question types"):
        clip_caption({"colour_of_the_sky": "blue"})


def test_conversation_closes_with_the_caption_after_every_question(grafted, clips):
    model, processor = grafted
    ds = ClipDialogues(text_examples(clips), questions_per_clip=2, caption=True, seed=0)
    conv = ds.examples[0]
    assert conv.turns[-1].task == "caption" and [t.task for t in conv.turns[:-1]] == ["vqa", "vqa"]
    assert conv.turns[-1].answer == "tool catheter check: yes; blue dye presence: no"
    batch = Collator(processor)([conv])
    text = processor.tokenizer.decode(batch["input_ids"][0])
    assert text.index(prompts.CAPTION_INSTRUCTION) > max(text.index(t.question) for t in conv.turns[:-1])
    labelled = processor.tokenizer.decode(batch["labels"][0][batch["labels"][0] != -100])
    assert "tool catheter check: yes" in labelled and labelled.count("<|im_end|>") == 3
