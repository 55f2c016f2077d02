"""The synthetic generator: determinism, answers vs pixels, coverage, imbalance, speech."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import binary_fill_holes, center_of_mass

from surgvqa import answers, data, data_eda, datastep, schema, synthetic, wording
from surgvqa.config import REPO_ROOT, Config

SMOKE = REPO_ROOT / "params" / "smoke.yaml"


def _tree_hashes(root: Path, patterns=("*.jsonl", "frames/**/*.png", "splits/*.jsonl")) -> dict[str, str]:
    out = {}
    for pat in patterns:
        for p in sorted(root.glob(pat)):
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def smoke_cfg():
    return Config.from_yaml(SMOKE)


@pytest.fixture(scope="module")
def smoke_build(tmp_path_factory, smoke_cfg, smoke_audio):
    out = smoke_audio(tmp_path_factory.mktemp("smoke_data"))
    return datastep.build_dataset(smoke_cfg, out_dir=out)


# ---- determinism ------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_jsonl_and_frames(tmp_path, smoke_cfg, smoke_build, smoke_audio):
    # the audio is not compared (its cache is shared, `smoke_audio`): the rows, frames and splits are rebuilt
    again = datastep.build_dataset(smoke_cfg, out_dir=smoke_audio(tmp_path / "again"))
    first = _tree_hashes(smoke_build.data_dir)
    second = _tree_hashes(again.data_dir)
    assert any(k.endswith(".png") for k in first) and "in_template.jsonl" in first and "splits/test.jsonl" in first
    assert first == second


def test_different_seeds_differ(tmp_path):
    rows0, _ = synthetic.generate(0, 2, 3, frame_size=32, out_dir=tmp_path / "s0")
    rows1, _ = synthetic.generate(1, 2, 3, frame_size=32, out_dir=tmp_path / "s1")
    assert json.dumps(rows0) != json.dumps(rows1)
    h0 = _tree_hashes(tmp_path / "s0", ("frames/**/*.png",))
    h1 = _tree_hashes(tmp_path / "s1", ("frames/**/*.png",))
    assert set(h0.values()).isdisjoint(h1.values())


# ---- answers agree with the rendered pixels ---------------------------------------------------
# Checked on the PNGs read back from disk with simple image statistics, never from scene state.


def _generate_clips(tmp_path, seed, priors, videos=4, clips=10, size=112):
    rows, scenes = synthetic.generate(seed, videos, clips, frame_size=size, priors=priors, out_dir=tmp_path)
    by_clip: dict[str, dict[str, str]] = {}
    frames: dict[str, list[str]] = {}
    for r in rows["in"]:
        by_clip.setdefault(data.clip_key(r), {})[r["question_type"]] = r["short_answer"]
        frames[data.clip_key(r)] = r["frames"]
    return [(answers, data.load_frames([tmp_path / f for f in frames[k]])) for k, answers in by_clip.items()]


def _view(h):
    ys, xs = np.mgrid[:h, :h]
    c = (h - 1) / 2
    return np.hypot(xs - c, ys - c) < 0.9 * h / 2


def _channels(frame):
    f = frame.astype(np.float32)
    return f[..., 0], f[..., 1], f[..., 2], _view(frame.shape[0])


def _green_over_red(frame):
    r, g, b, v = _channels(frame)
    lit = v & (0.299 * r + 0.587 * g + 0.114 * b > 30)
    return g[lit].mean() / r[lit].mean()


def _blue_share(frame):
    r, g, b, v = _channels(frame)
    return ((b > 1.3 * np.maximum(r, g)) & (b > 60) & v).sum() / v.sum()


def _yellow_share(frame):
    r, g, b, v = _channels(frame)
    return ((r > b + 60) & (g > b + 50) & v).sum() / v.sum()


def _dark_mask(frame):
    r, g, b, v = _channels(frame)
    return (0.299 * r + 0.587 * g + 0.114 * b < 50) & v


def _tool_from_pixels(frame) -> str:
    r, g, b, v = _channels(frame)
    hi, lo = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
    mean = (r + g + b) / 3
    metal = (hi - lo < 25) & (mean > 90) & (mean < 200) & v
    white = (lo > 200) & (hi - lo < 30) & v
    if metal.mean() > 0.005:
        return "snare" if binary_fill_holes(metal).sum() > 1.3 * metal.sum() else "forceps"
    if white.mean() > 0.005:
        return "catheter"
    return "none"


def test_nbi_answers_match_green_tint(tmp_path):
    clips = _generate_clips(tmp_path, 11, dict(nbi=0.5, outside=0, occlusion=0, fluid_partial=0, fluid_complete=0))
    seen = Counter()
    for ans, frames in clips:
        ratio = np.mean([_green_over_red(f) for f in frames])
        nbi = ratio > 1.0
        assert (ans["nbi_status"] == "yes") == nbi, (ans, ratio)
        assert ans["lighting_mode"] == ("NBI" if nbi else "white light")
        seen[ans["nbi_status"]] += 1
    assert seen["yes"] >= 5 and seen["no"] >= 5


def test_blue_dye_answers_match_blue_share(tmp_path):
    clips = _generate_clips(tmp_path, 12, dict(blue_dye=0.5, nbi=0.4))
    seen = Counter()
    for ans, frames in clips:
        share = max(_blue_share(f) for f in frames)
        assert (ans["blue_dye_presence"] == "yes") == (share > 0.002), (ans["blue_dye_presence"], share)
        seen[ans["blue_dye_presence"]] += 1
    assert seen["yes"] >= 5 and seen["no"] >= 5


def test_fluid_level_matches_covered_fraction(tmp_path):
    clips = _generate_clips(tmp_path, 13, dict(fluid_partial=0.35, fluid_complete=0.25, nbi=0.4))
    seen = Counter()
    for ans, frames in clips:
        share = float(np.mean([_yellow_share(f) for f in frames]))
        level = "absent" if share < 0.03 else "complete" if share > 0.8 else "partial"
        assert ans["fluid_occlusion_level"] == level, (ans["fluid_occlusion_level"], share)
        seen[level] += 1
    assert min(seen[k] for k in ("absent", "partial", "complete")) >= 3, seen


def test_tool_type_matches_metal_shape_and_colour(tmp_path):
    clips = _generate_clips(tmp_path, 14, dict(tool=0.8, flush=0, outside=0, nbi=0.4), videos=4, clips=12)
    seen = Counter()
    for ans, frames in clips:
        found = _tool_from_pixels(frames[-1])  # the last frame: tool fully out of the channel
        assert ans.get("tool_identification", "none") == found, (ans.get("tool_identification"), found)
        assert (ans["tool_catheter_check"] == "yes") == (found != "none")
        seen[found] += 1
    assert min(seen[k] for k in ("forceps", "snare", "catheter", "none")) >= 2, seen


def test_scope_motion_matches_zoom_and_shift(tmp_path):
    priors = dict(tool=0, flush=0, outside=0, occlusion=0, endoscope=0, fluid_partial=0, fluid_complete=0, blue_dye=0,
                  motion_forward=0.25, motion_backward=0.25, motion_lateral=0.25)
    clips = _generate_clips(tmp_path, 15, priors)
    seen = Counter()
    for ans, frames in clips:
        d0, d1 = _dark_mask(frames[0]), _dark_mask(frames[-1])
        ratio = d1.sum() / max(d0.sum(), 1)
        shift = float(np.hypot(*(np.array(center_of_mass(d1)) - np.array(center_of_mass(d0)))))
        if ratio > 1.3:
            motion = "advancing"
        elif ratio < 0.77:
            motion = "withdrawing"
        else:
            motion = "lateral" if shift > 0.1 * frames.shape[1] else "stable"
        assert ans["scope_motion_type"] == motion, (ans["scope_motion_type"], ratio, shift)
        assert ans["scope_forward_motion"] == ("yes" if motion == "advancing" else "no")
        assert ans["scope_backward_motion"] == ("yes" if motion == "withdrawing" else "no")
        assert ans["scope_motion"] == ("no" if motion == "stable" else "yes")
        seen[motion] += 1
    assert min(seen.values()) >= 3 and len(seen) == 4, seen


# ---- coverage, vocabulary, imbalance ---------------------------------------------------------


def test_every_type_in_both_templates_with_vocab_answers():
    rows, _ = synthetic.generate(0, 6, 12, frame_size=24)
    for template in ("in", "out"):
        assert {r["question_type"] for r in rows[template]} == set(schema.QUESTION_TYPES)
    for t in schema.QUESTION_TYPES:
        assert len(set(wording.OUT_TEMPLATES[t])) >= 3 and wording.IN_TEMPLATES[t] not in wording.OUT_TEMPLATES[t]
        assert {r["question"] for r in rows["in"] if r["question_type"] == t} == {wording.IN_TEMPLATES[t]}
        assert {r["question"] for r in rows["out"] if r["question_type"] == t} <= set(wording.OUT_TEMPLATES[t])
        assert set(wording.LONG_ANSWERS[t]) == set(schema.ANSWER_VOCAB[t])
    for r in rows["in"] + rows["out"]:
        assert answers.in_vocabulary(r["short_answer"], r["question_type"]), r
        assert r["short_answer"].lower() in r["answer"].lower(), r
        assert 0 < r["support_frames"] <= 8 and r["support_ratio"] == round(r["support_frames"] / 8, 4)
    # in and out rows ask about the same clips with the same answers
    key = lambda r: (data.clip_key(r), r["question_type"], r["short_answer"], r["answer"])  # noqa: E731
    assert sorted(map(key, rows["in"])) == sorted(map(key, rows["out"]))


def test_class_balance_follows_the_priors():
    priors = synthetic.resolve_priors(None)
    scenes = [s for v in range(60) for s in synthetic.sample_video(0, v, 40)]
    inside = [s for s in scenes if not s.outside]
    free = [s for s in inside if s.occlusion is None]
    clear = [s for s in free if s.fluid != "complete"]

    def check(items, pred, p):  # within 4 standard errors of the configured prior
        rate = sum(1 for s in items if pred(s)) / len(items)
        assert abs(rate - p) < 4 * np.sqrt(p * (1 - p) / len(items)) + 1e-3, (rate, p)

    check(scenes, lambda s: s.outside, priors["outside"])
    check(inside, lambda s: s.lighting == "NBI", priors["nbi"])
    check(inside, lambda s: s.occlusion is not None, priors["occlusion"])
    check(inside, lambda s: s.flush is not None, priors["flush"])
    check(inside, lambda s: s.tool is not None, priors["tool"])
    check(free, lambda s: s.fluid == "partial", priors["fluid_partial"])
    check(free, lambda s: s.fluid == "complete", priors["fluid_complete"])
    check(free, lambda s: s.motion == "backward", priors["motion_backward"])
    check(free, lambda s: s.motion == "forward", priors["motion_forward"])
    check(clear, lambda s: s.blue_dye, priors["blue_dye"])
    # imbalance: most presence answers are negative
    rows, _ = synthetic.generate(0, 6, 12, frame_size=24)
    bal = data_eda.presence_balance(data_eda.rows_frame(rows["in"]))
    assert bal["all_presence_types"] > 0.7
    assert all(share > 0.5 for share in bal.values()), bal


def test_priors_override_and_validation():
    scenes = [s for v in range(5) for s in synthetic.sample_video(0, v, 20, priors={"nbi": 1.0, "outside": 0.0})]
    assert all(s.lighting == "NBI" for s in scenes)
    with pytest.raises(synthetic.PriorError, match="unknown key 'nbi_rate'"):
        synthetic.resolve_priors({"nbi_rate": 0.5})
    with pytest.raises(synthetic.PriorError, match="probability"):
        synthetic.resolve_priors({"nbi": 1.5})


def test_every_video_has_tool_and_lesion_questions():
    rows, _ = synthetic.generate(7, 6, 4, frame_size=24)
    for vid in {r["video_id"] for r in rows["in"]}:
        types = {r["question_type"] for r in rows["in"] if r["video_id"] == vid}
        assert "tool_identification" in types and "lesion_site" in types, vid


# ---- spoken questions and the stage-1 corpus -------------------------------------------------


def test_spoken_questions_are_16k_mono_nonsilent_and_grow_with_text(smoke_build):
    import soundfile as sf

    from surgvqa.audio import load_audio

    rows = [json.loads(x) for x in (smoke_build.data_dir / "in_template.jsonl").read_text().splitlines()]
    words, secs = [], []
    for r in rows[:40]:
        info = sf.info(str(smoke_build.data_dir / r["audio"]))
        assert info.samplerate == 16000 and info.channels == 1
        audio = load_audio(smoke_build.data_dir / r["audio"])
        assert np.sqrt(np.mean(audio**2)) > 0.01
        assert abs(len(audio) / 16000 - r["audio_s"]) < 0.01
        words.append(len(r["question"].split()))
        secs.append(r["audio_s"])
    assert np.corrcoef(words, secs)[0, 1] > 0.5


def test_speech_corpus_splits_and_voices(smoke_build):
    corpus = [json.loads(x) for x in (smoke_build.data_dir / "speech_corpus.jsonl").read_text().splitlines()]
    assert {e["kind"] for e in corpus} == {"question", "answer", "narration"}
    assert {e["split"] for e in corpus} == {"train", "val", "test", "test_in_domain", "engine_test", "engine_test_in_domain"}
    meta = json.loads((smoke_build.data_dir / "dataset.json").read_text())
    engine = set(meta["heldout_engine_voices"])
    assert engine and {e["voice"] for e in corpus if e["split"].startswith("engine_")} == engine
    assert not engine & {e["voice"] for e in corpus if not e["split"].startswith("engine_")}
    assert {e["text"] for e in corpus if e["split"] == "engine_test"} == {e["text"] for e in corpus if e["split"] == "test"}
    corpus = [e for e in corpus if not e["split"].startswith("engine_")]
    held = set(smoke_build.heldout_voices)
    for e in corpus:
        assert (e["voice"] in held) == (e["split"] in ("test", "test_in_domain")), e
        assert not re.search(r"[<>]", e["text"]), e["text"]
        assert (smoke_build.data_dir / e["audio"]).is_file() and e["duration_s"] > 0.3
    train_q = {e["text"] for e in corpus if e["kind"] == "question"}
    assert train_q == set(wording.IN_TEMPLATES.values()) & train_q  # only training-template wording
    assert sum(e["split"] == "train" for e in corpus) > sum(e["split"] == "val" for e in corpus)


def test_narration_is_distinct_and_deterministic():
    a, b = wording.narration_sentences(0, 50), wording.narration_sentences(0, 50)
    assert a == b and len(set(a)) == 50
    assert wording.narration_sentences(1, 50) != a


def test_build_result_and_metadata(smoke_build, smoke_cfg):
    meta = json.loads((smoke_build.data_dir / "dataset.json").read_text())
    assert meta["stamp"] == datastep.data_stamp(smoke_cfg)
    n = smoke_cfg.data.num_videos
    assert meta["heldout_videos"] == smoke_build.heldout_videos == [f"syn-{n - 1:02d}"]
    assert meta["final_test_videos"] == smoke_build.final_test_videos == [f"syn-{n:02d}"]
    assert smoke_build.summary.rows == sum(meta["summary"]["files"].values())
    # one row per QA row: the val split's re-worded copies (val_wording) are not source rows
    assert smoke_build.unused_rows + smoke_build.split_sizes["train"] + smoke_build.group_sizes["in_domain"] \
        + smoke_build.group_sizes["heldout_video"] + smoke_build.group_sizes["final_test"] == smoke_build.summary.rows
    roles = {v["role"] for v in meta["voices"]}
    assert roles == {"train", "heldout", "heldout_engine"} and all({"engine", "family", "stretch", "rate"} <= set(v) for v in meta["voices"])
    assert smoke_build.timings["total_s"] > 0 and smoke_build.audio_seconds["train"] > 0
    assert datastep.ensure_dataset(smoke_cfg, smoke_build.data_dir) is None  # up to date: not rebuilt


def test_the_data_step_reads_a_matching_build_back_and_only_that(smoke_build, smoke_cfg):
    stamp = smoke_build.data_dir / "dataset.json"
    written = stamp.stat().st_mtime_ns
    again = datastep.data_step(smoke_cfg, smoke_build.data_dir)
    assert again.reused and not smoke_build.reused and stamp.stat().st_mtime_ns == written  # nothing rebuilt
    assert dataclasses.replace(again, reused=False) == smoke_build  # the record is the build's result, whole
    other = dataclasses.replace(smoke_cfg, seed=smoke_cfg.seed + 1)
    assert datastep.built_with(smoke_cfg, smoke_build.data_dir) and not datastep.built_with(other, smoke_build.data_dir)


def test_data_benchmark_reports_rates(smoke_cfg):
    bench = data_eda.data_benchmark(smoke_cfg, num_videos=1, speech_texts=3)
    assert bench["qa_rows_per_s"] > 0 and bench["clips_per_s"] > 0 and bench["speech_audio_s_per_s"] > 0  # speed: make bench


# ---- the audio really says the question ------------------------------------------------------


def test_whisper_base_understands_the_in_questions(ct2_whisper_dir):
    """faster-whisper + the embedded whisper-base transcribes the `in` questions (WER < 0.35).

    Sample: the 20 `in` questions, cycling over the default profile's voices; the spoken
    questions are concatenated (0.7 s apart) into windows under 30 s so that whisper runs a
    handful of times instead of twenty.
    """
    import jiwer
    from faster_whisper import WhisperModel

    from surgvqa import speech

    model = WhisperModel(str(ct2_whisper_dir), device="cpu", compute_type="int8", cpu_threads=2)
    voices = speech.voices(Config().data.num_voices)

    def norm(s: str) -> str:
        return " ".join(re.sub(r"[^a-z0-9' ]", " ", s.lower()).split())

    gap = np.zeros(int(0.7 * 16000), dtype=np.float32)
    windows: list[tuple[list[np.ndarray], list[str]]] = [([], [])]
    for i, text in enumerate(wording.IN_TEMPLATES.values()):
        audio = speech.synthesize(text, voices[i % len(voices)])
        if sum(map(len, windows[-1][0])) + len(audio) + len(gap) > 27 * 16000:
            windows.append(([], []))
        windows[-1][0].extend([audio, gap])
        windows[-1][1].append(text)
    refs, hyps = [], []
    for chunks, texts in windows:
        segments, _ = model.transcribe(np.concatenate(chunks), language="en", beam_size=1,
                                       condition_on_previous_text=False)
        refs.append(norm(" ".join(texts)))
        hyps.append(norm(" ".join(s.text for s in segments)))
    wer = jiwer.wer(refs, hyps)
    print(f"WER of the in questions over {len(voices)} voices: {wer:.3f}")
    assert wer < 0.35, (wer, list(zip(refs, hyps)))


def test_noisy_speech_is_a_cached_mix(tmp_path):
    from surgvqa import speech
    from surgvqa.audio import load_audio

    clean = speech.synthesize_to_file(wording.IN_TEMPLATES["nbi_status"], speech.VOICES[0], tmp_path)
    noisy = speech.noisy_copy(clean, tmp_path, 10.0, seed=0)
    a, b = load_audio(clean), load_audio(noisy)
    assert noisy.name.endswith("-snr10.wav") and len(a) == len(b) and np.abs(a - b).mean() > 1e-4
    assert speech.noisy_copy(clean, tmp_path, 10.0, seed=0) == noisy and load_audio(noisy).tobytes() == b.tobytes()


def test_masks_say_where_each_thing_is_seen_and_leave_the_frames_alone():
    seen = Counter()
    for video in range(4):
        for scene in synthetic.sample_video(3, video, 12, 8, {"lesion": 0.9, "tool": 0.6, "blue_dye": 0.5, "flush": 0.5,
                                                              "endoscope": 0.4, "fluid_partial": 0.4}):
            frames, flags = synthetic.render_clip(scene, 48)
            same, flags2, where = synthetic.render_clip(scene, 48, masks=True)
            assert np.array_equal(frames, same) and flags == flags2
            assert set(where) == set(synthetic.MASKS)
            assert all(m.shape == (8, 48, 48) and m.dtype == bool for m in where.values())
            # one visible layer per pixel: a later layer hides what is under it
            stacked = np.stack([where[k] for k in synthetic.MASKS]).sum(axis=0)
            assert stacked.max() <= 1
            for t in range(8):
                # the flags the answers come from agree with the masks
                assert flags["tool"][t] == bool(where["tool"][t].any())
                assert flags["flush"][t] == bool(where["flush"][t].any()) or not where["flush"][t].any()
                if flags["lesion"][t]:
                    assert where["lesion"][t].any()
                if where["tool"][t].any():  # the tool's pixels are its grey metal or white catheter
                    colours = frames[t][where["tool"][t]].astype(float)
                    assert colours.std(axis=1).mean() < 25, "tool pixels are not grey"
            for k in synthetic.MASKS:
                seen[k] += int(where[k].any())
            if scene.lesion is None:
                assert not where["lesion"].any()
            if not scene.blue_dye:
                assert not where["dye"].any()
    assert all(seen[k] for k in synthetic.MASKS), seen


def test_region_shares_per_patch_and_the_data_step_writes_them(smoke_build, smoke_cfg):
    masks = {k: np.zeros((2, 28, 28), dtype=bool) for k in synthetic.MASKS}
    masks["lesion"][0, :14, :7] = True  # half of the top-left patch of frame 0
    shares = synthetic.region_shares(masks)
    assert shares.shape == (2, 2, 2, len(synthetic.MASKS)) and shares.dtype == np.uint8
    assert shares[0, 0, 0, synthetic.MASKS.index("lesion")] == 128 and shares.sum() == 128
    with pytest.raises(ValueError, match="multiple"):
        synthetic.region_shares({k: np.zeros((2, 30, 30), dtype=bool) for k in synthetic.MASKS})
    info, regions = data.read_regions(smoke_build.data_dir)
    assert info["masks"] == list(synthetic.MASKS) and info["patch"] == synthetic.REGION_PATCH
    p = smoke_cfg.data.frame_size // synthetic.REGION_PATCH
    clips = {data.clip_key(r) for r in smoke_build_rows(smoke_build)}
    assert set(regions) == clips and all(v.shape == (smoke_cfg.data.num_frames, p, p, len(synthetic.MASKS)) for v in regions.values())
    lesion = synthetic.MASKS.index("lesion")
    # a clip answered "a lesion is there" shows it in some patch
    for r in smoke_build_rows(smoke_build):
        if r["question_type"] == "lesion_site":
            assert regions[data.clip_key(r)][..., lesion].any(), r["id"]


def smoke_build_rows(build):
    return [r for t in ("in_template", "out_template") for _, r in data.read_jsonl(build.data_dir / f"{t}.jsonl") if r]
