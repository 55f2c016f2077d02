"""Splits: held-out videos and voices, template hold-out, stratification, loud leakage checks."""
from __future__ import annotations

import copy
import dataclasses
import json

import pytest

from surgvqa.config import REPO_ROOT, Config
from surgvqa import data_eda, datastep, stratify, synthetic, wording
from surgvqa.data import clip_key, load_dataset
from surgvqa.schema import QUESTION_TYPES


@pytest.fixture(scope="module")
def cfg():
    return Config.from_yaml(REPO_ROOT / "params" / "smoke.yaml")


@pytest.fixture(scope="module")
def built(tmp_path_factory, cfg, smoke_audio):
    out = smoke_audio(tmp_path_factory.mktemp("strat_data"))
    result = datastep.build_dataset(cfg, out_dir=out)
    return result, datastep.load_run_data(cfg, data_dir=out).splits


def _rows(splits):
    return {name: list(ds.rows) for name, ds in splits.items()}


def test_heldout_video_and_voices_never_in_train(built):
    result, splits = built
    held_v, held_voice = set(result.heldout_videos) | set(result.final_test_videos), set(result.heldout_voices)
    assert result.heldout_videos and result.final_test_videos and held_voice
    assert not set(result.heldout_videos) & set(result.final_test_videos)
    for name in ("train", "val"):
        assert {r["video_id"] for r in splits[name]}.isdisjoint(held_v)
        assert {r["voice"] for r in splits[name]}.isdisjoint(held_voice)
        assert {r["template"] for r in splits[name]} == {"in"}
        assert {r["voice"] for r in splits[name]} <= set(result.train_voices)
    test = splits["test"]
    assert {r["video_id"] for r in test} == held_v and {r["template"] for r in test} == {"out"}
    groups = {g: [r for r in test if r["group"] == g] for g in ("heldout_video", "heldout_voice", "final_test")}
    assert {r["voice"] for r in groups["heldout_video"]} <= set(result.train_voices)
    assert {r["voice"] for r in groups["heldout_voice"]} == held_voice
    # the held-out engine re-asks every dev-test row; none of its voices is heard in training
    engine = [r for r in test if r["group"] == "heldout_engine"]
    strip_e = lambda r: (r["id"].removesuffix(stratify.HELDOUT_ENGINE_SUFFIX), r["question"], r["short_answer"])  # noqa: E731
    strip_v = lambda r: (r["id"], r["question"], r["short_answer"])  # noqa: E731
    assert sorted(map(strip_e, engine)) == sorted(map(strip_v, groups["heldout_video"]))
    meta = json.loads((result.data_dir / "dataset.json").read_text())
    engine_voices = {v["name"] for v in meta["voices"] if v["role"] == "heldout_engine"}
    assert engine_voices and {r["voice"] for r in engine} == engine_voices and {r["engine"] for r in engine} == {meta["heldout_engine"]}
    assert not engine_voices & {r["voice"] for s in ("train", "val") for r in splits[s]}
    assert {r["engine"] for s in ("train", "val") for r in splits[s]} == set(meta["train_engines"])
    # the final test: its own videos, once each, by held-out voices (unseen video and voice)
    assert {r["video_id"] for r in groups["final_test"]} == set(result.final_test_videos)
    assert {r["video_id"] for r in groups["heldout_video"]} == set(result.heldout_videos)
    assert {r["voice"] for r in groups["final_test"]} <= held_voice
    assert len({r["id"] for r in groups["final_test"]}) == len(groups["final_test"])
    # paired: every held-out-video row is re-spoken by a held-out voice
    strip = lambda r: (r["id"].removesuffix(stratify.HELDOUT_VOICE_SUFFIX), r["question"], r["short_answer"])  # noqa: E731
    assert sorted(map(strip, groups["heldout_video"])) == sorted(map(strip, groups["heldout_voice"]))
    assert {r["group"] for r in splits["val"]} == {"in_domain", "val_wording"}
    # paired again: every val row re-asked in a val wording by its voice, every held-out-voice row in a held-out wording
    for group, parent, family in (("val_wording", "in_domain", wording.VAL_WORDINGS),
                                  ("heldout_wording", "heldout_voice", wording.HELDOUT_WORDINGS)):
        rows = splits["val"].rows if group == "val_wording" else splits["test"].rows
        parents = {(r["id"].removesuffix(stratify.HELDOUT_VOICE_SUFFIX), r["template"]): r for r in rows if r["group"] == parent}
        reworded = [r for r in rows if r["group"] == group]
        assert reworded and len(reworded) == len(parents), group
        for r in reworded:
            p = parents[(r["id"].removesuffix(stratify.RESPOKEN[group][0]), r["template"])]
            assert (r["voice"], r["short_answer"], r["clip"] if "clip" in r else r["frames"]) == (
                p["voice"], p["short_answer"], p["clip"] if "clip" in p else p["frames"])
            assert r["question"] in family[r["question_type"]] and r["audio"] != p["audio"]


def test_no_clip_crosses_splits(built):
    _, splits = built
    clips = {name: {clip_key(r) for r in ds} for name, ds in splits.items()}
    assert clips["train"].isdisjoint(clips["val"]) and clips["train"].isdisjoint(clips["test"])
    assert clips["val"].isdisjoint(clips["test"])
    assert all(clips.values())


def test_every_type_in_train_and_test_where_the_data_allow(built):
    result, splits = built
    base = load_dataset(result.data_dir).rows
    held = set(result.heldout_videos) | set(result.final_test_videos)
    in_train_videos = {r["question_type"] for r in base if r["video_id"] not in held}
    in_test_videos = {r["question_type"] for r in base if r["video_id"] in held}
    assert {r["question_type"] for r in splits["train"]} == in_train_videos
    assert {r["question_type"] for r in splits["test"]} == in_test_videos
    assert in_train_videos == set(QUESTION_TYPES)  # the generator guarantees tools and lesions per video
    assert stratify.coverage(_rows(splits))["train"] == []


def test_val_is_type_stratified_on_a_bigger_set():
    rows, _ = synthetic.generate(0, 6, 12, frame_size=24)
    base = rows["in"] + rows["out"]
    dcfg = dataclasses.replace(Config().data, heldout_videos=1, final_test_videos=1, train_templates=["in"])
    plan = stratify.plan_splits(base, dcfg, seed=0)
    assert plan.heldout_videos == ["syn-05"] and plan.final_test_videos == ["syn-06"]
    val_clips = [k for k, s in plan.clip_split.items() if s == "val"]
    train_clips = [k for k, s in plan.clip_split.items() if s == "train"]
    assert len(val_clips) == round(dcfg.val_fraction * (len(val_clips) + len(train_clips)))
    types = lambda clips: {r["question_type"] for r in base if clip_key(r) in set(clips)}  # noqa: E731
    assert types(train_clips) == set(QUESTION_TYPES)
    assert types(val_clips) == set(QUESTION_TYPES)  # rare types (tools, lesions) reach val too


def test_choose_val_never_takes_the_last_training_clip_of_a_type():
    clip_types = {"a": {"x", "rare"}, "b": {"x"}, "c": {"x"}, "d": {"x", "rare"}, "e": {"x", "unique"}}
    for seed in range(10):
        val = stratify.choose_val_clips(clip_types, 0.4, seed)
        assert len(val) == 2
        train = set(clip_types) - val
        assert "e" not in val  # the only clip with "unique"
        assert any("rare" in clip_types[c] for c in train) and any("rare" in clip_types[c] for c in val)


def test_explicit_heldout_video_ids():
    rows, _ = synthetic.generate(0, 3, 2, frame_size=24)
    base = rows["in"] + rows["out"]
    dcfg = dataclasses.replace(Config().data, heldout_video_ids=["syn-01"], final_test_video_ids=["syn-02"])
    plan = stratify.plan_splits(base, dcfg, 0)
    assert plan.heldout_videos == ["syn-01"] and plan.final_test_videos == ["syn-02"] and plan.train_videos == ["syn-03"]
    counted = stratify.plan_splits(base, dataclasses.replace(dcfg, final_test_video_ids=[], final_test_videos=1), 0)
    assert counted.final_test_videos == ["syn-03"]  # the last video that is not a dev-test one
    with pytest.raises(stratify.LeakageError, match="not in the data"):
        stratify.plan_splits(base, dataclasses.replace(dcfg, heldout_video_ids=["syn-99"]), 0)
    with pytest.raises(stratify.LeakageError, match="leaves no training video"):
        stratify.plan_splits(base, dataclasses.replace(dcfg, heldout_video_ids=["syn-01", "syn-03"]), 0)


# ---- leakage checks fail loudly -------------------------------------------------------------------


def _check(splits, result, corpus=None):
    return stratify.check_leakage(splits, result.heldout_voices, ["in"], ["out"], corpus)


def test_leakage_checks_pass_on_the_built_splits(built):
    result, splits = built
    counts = _check(_rows(splits), result)
    assert counts["rows"] == sum(len(ds) for ds in splits.values())


def test_leak_clip_into_train(built):
    result, splits = built
    rows = copy.deepcopy(_rows(splits))
    leaked = dict(rows["val"][0], id="leak", split="train")
    rows["train"].append(leaked)
    with pytest.raises(stratify.LeakageError, match="clips in both train and val"):
        _check(rows, result)


def test_leak_heldout_video_into_train(built):
    result, splits = built
    rows = copy.deepcopy(_rows(splits))
    test_row = next(r for r in rows["test"] if r["group"] == "heldout_video")
    rows["train"].append(dict(test_row, template="in", question="A fresh wording?", frame_numbers=[1] * 8, id="x"))
    with pytest.raises(stratify.LeakageError, match="test videos also in train/val"):
        _check(rows, result)


def test_leak_heldout_voice_into_train(built):
    result, splits = built
    rows = copy.deepcopy(_rows(splits))
    rows["train"][0]["voice"] = result.heldout_voices[0]
    with pytest.raises(stratify.LeakageError, match="held-out voices used in train/val"):
        _check(rows, result)


def test_leak_test_wording_into_train(built):
    result, splits = built
    rows = copy.deepcopy(_rows(splits))
    rows["train"][0]["question"] = rows["test"][0]["question"]
    with pytest.raises(stratify.LeakageError, match="test question wordings also in train/val"):
        _check(rows, result)
    rows = copy.deepcopy(_rows(splits))
    rows["val"][0]["template"] = "out"
    with pytest.raises(stratify.LeakageError, match="outside data.train_templates"):
        _check(rows, result)


def test_leak_in_speech_corpus(built):
    result, splits = built
    corpus = [{"text": "Some narration.", "voice": result.heldout_voices[0], "split": "train"}]
    with pytest.raises(stratify.LeakageError, match="speech corpus train/val entries use held-out voices"):
        _check(_rows(splits), result, corpus)
    corpus = [{"text": splits["test"][0]["question"], "voice": result.train_voices[0], "split": "train"}]
    with pytest.raises(stratify.LeakageError, match="speech corpus contains test question wordings"):
        _check(_rows(splits), result, corpus)


def test_tables(built):
    _, splits = built
    table = data_eda.stratification_table(_rows(splits))
    assert list(table.index) == list(QUESTION_TYPES)
    assert set(table.columns) == {"train", "val", "val:val_wording", "test:heldout_video", "test:heldout_voice",
                                  "test:heldout_engine", "test:heldout_wording", "test:final_test"}
    assert table["train"].sum() == len(splits["train"])
    overview = data_eda.split_overview(_rows(splits))
    assert set(overview["group"]) == {"train", "in_domain", "val_wording", "heldout_video", "heldout_voice", "heldout_engine",
                                      "heldout_wording", "final_test"}


# ---- a real REAL-Colon-VQA folder goes through the same data step ---------------------------------


def test_real_folder_flows_through_the_data_step(tmp_path):
    import json

    import numpy as np
    from PIL import Image

    from surgvqa import speech
    from surgvqa.audio import write_wav

    src = tmp_path / "real"
    rows_in, rows_out = [], []
    qa = [("mucosa_visibility", "Is clean mucosa visible in this sequence?", "Can you clearly observe clean mucosa?", "no"),
          ("lighting_mode", "What lighting mode is used?", "Which light is on?", "NBI"),
          ("scope_motion_type", "Is the scope advancing or withdrawing?", "How does the scope move?", "withdrawing")]
    i = 0
    for v in ("002-001", "002-002", "002-003"):
        for c in range(3):
            nums = [1000 * c + 4 * k for k in range(8)]
            frames = [f"{v}_{n}" for n in nums]
            for f in frames:
                p = src / "frames" / v / f"{f}.jpg"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(p)
            for qtype, q_in, q_out, short in qa:
                i += 1
                row = {"id": f"qa_{i:06d}", "video_id": v, "frames": frames, "frame_numbers": nums, "question": q_in,
                       "question_type": qtype, "support_frames": 8, "total_frames": 8, "support_ratio": 1.0,
                       "answer": f"The answer is {short}.", "short_answer": short}
                rows_in.append(row)
                rows_out.append(dict(row, question=q_out))
    # one recorded question comes with the data
    write_wav(src / "audio" / "qa_000001.wav", speech.synthesize(rows_in[0]["question"], speech.VOICES[0]))
    rows_in[0]["audio"] = "audio/qa_000001.wav"
    (src / "in_template.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows_in))
    (src / "out_template.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows_out))

    cfg = Config.from_params(dict(profile="realtest", data=dict(
        source=str(src), num_voices=3, heldout_voices=1, heldout_videos=1, final_test_videos=0, val_fraction=0.34,
        narration_sentences=2, corpus_voices_per_text=1, train_templates=["in"])))
    out = tmp_path / "run"
    result = datastep.build_dataset(cfg, out_dir=out)
    assert result.heldout_videos == ["002-003"] and result.frames_root == src
    splits = datastep.load_run_data(cfg, data_dir=out, build=False).splits
    assert {r["video_id"] for r in splits["test"]} == {"002-003"}
    assert len({clip_key(r) for r in splits["val"]}) == 2  # 0.34 of the 6 training clips
    assert all(ds.frame_paths(r)[0].is_file() and ds.audio_path(r).is_file() for ds in splits.values() for r in ds)
    first = next(r for r in splits["train"].rows + splits["val"].rows if r["id"] == "qa_000001")
    assert first["audio"] == "source_audio/audio/qa_000001.wav" and first["voice"] == "source"
    base = datastep.load_base(cfg, data_dir=out)
    assert base.summary.rows == 54 and base.summary.with_audio == 54
    m = data_eda.data_metrics(result, splits, base, datastep.load_run_data(cfg, data_dir=out).corpus)
    assert m["class_balance"]["majority_rate"]["lighting_mode"] == 1.0  # a constant type, as in the seeds


def test_evaluation_rows_stay_paired_and_score_the_final_test_only_when_asked(built):
    from surgvqa import evaluate

    _, splits = built
    base = lambda r: (r["video_id"], r["id"].removesuffix(stratify.HELDOUT_VOICE_SUFFIX), r["template"])  # noqa: E731
    for max_rows in (None, 5):
        dev = evaluate.evaluation_rows(splits, max_rows, seed=1).rows
        by_split = {s: [r for r in dev if r["split"] == s] for s in ("val", "heldout_video", "heldout_voice", "final_test")}
        assert not by_split["final_test"]  # dev runs never see the final test
        assert by_split["heldout_video"] and sorted(map(base, by_split["heldout_video"])) == sorted(map(base, by_split["heldout_voice"]))
        if max_rows:
            assert len(by_split["heldout_video"]) == len(by_split["val"]) == max_rows
    final = evaluate.evaluation_rows(splits, 5, seed=1, final_test=True).rows
    assert [r for r in final if r["split"] != "final_test"] == evaluate.evaluation_rows(splits, 5, seed=1).rows
    assert len([r for r in final if r["split"] == "final_test"]) == 5
    # the re-worded rows: the held-out wording in every dev run, the val wording only when asked; both paired
    strip = lambda r: (r["video_id"], r["id"].removesuffix(stratify.RESPOKEN[r["split"]][0]) if r["split"] in stratify.RESPOKEN  # noqa: E731
                       else r["id"], r["template"])
    for max_rows in (None, 5):
        dev = evaluate.evaluation_rows(splits, max_rows, seed=1, val_wording=True).rows
        split_of = lambda s: sorted(strip(r) for r in dev if r["split"] == s)  # noqa: E731
        assert split_of("heldout_wording") == split_of("heldout_voice") == split_of("heldout_video")
        assert split_of("val_wording") == split_of("val") and split_of("val")
        assert [r for r in dev if r["split"] != "val_wording"] == evaluate.evaluation_rows(splits, max_rows, seed=1).rows
