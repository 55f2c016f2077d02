"""A REAL-Colon-VQA-shaped folder (tests/real_colon_fixture.py) through the data step under every profile's data
settings, notebook 01's EDA, the leakage rules that serve real data, and (slow) stages 0 -> 1 -> 2 + evaluation."""
from __future__ import annotations

import copy
import json
import os
from collections import Counter, defaultdict

import pytest
import yaml

import real_colon_fixture as fixture
from surgvqa import data, data_eda, datastep, stratify
from surgvqa.answers import normalize_short
from surgvqa.audio import SAMPLE_RATE
from surgvqa.config import REPO_ROOT, Config, ConfigError

PROFILES = sorted(p.name for p in (REPO_ROOT / "params").glob("*.yaml"))
SHARED = {normalize_short(fixture.WORDINGS[t][0]) for t in fixture.SHARED_TYPES}


def same_wording_groups(test_rows) -> set[str]:
    """The test split's groups that ask a row in its own wording: the held-out video's rows and their re-spoken
    copies (voice, engine); not the held-out-wording copies, which re-ask it in a new wording."""
    return {r["group"] for r in test_rows} - {"heldout_wording"}


def same_wording_copies(test_rows) -> int:
    return len(same_wording_groups(test_rows))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return fixture.build(tmp_path_factory.mktemp("REAL-Colon-VQA"))


def real_cfg(profile: str, folder, run_root, **data_over) -> Config:
    """The profile's params with data.source at the fixture and its test video held out; nothing else changed."""
    return Config.from_yaml(REPO_ROOT / "params" / profile, {
        "run_root": str(run_root), "data": {"source": str(folder), "heldout_video_ids": [fixture.TEST_VIDEO], "final_test_videos": 0, **data_over}})


# Every profile's data step on the fixture (`built`): ~100 s with the default's four speech engines, so its tests
# sit outside the fast subset (`pytest -m "not slow"`).
BUILDS_EVERY_PROFILE = pytest.mark.slow


@pytest.fixture(scope="module")
def built(folder, tmp_path_factory):
    """Each profile's data step on the fixture in its own run dir, built and read back once:
    {profile: (cfg, BuildResult, RunData, dataset.json)}. Each starts with the audio cache of the one before
    (hard links; files named by text + voice), so a question is synthesised once per voice."""
    run_root = tmp_path_factory.mktemp("runs")
    out, previous = {}, None
    for profile in PROFILES:
        cfg = real_cfg(profile, folder, run_root)
        if previous is not None:
            (cfg.paths.data / "audio").mkdir(parents=True)
            for wav in (previous / "audio").iterdir():
                os.link(wav, cfg.paths.data / "audio" / wav.name)
        result = datastep.build_dataset(cfg)
        run = datastep.load_run_data(cfg, build=False)
        out[profile] = (cfg, result, run, data.read_data_meta(cfg.paths.data))
        previous = cfg.paths.data
    return out


# ---- the fixture is shaped like the real folder ------------------------------------------------------


def test_fixture_has_the_real_datasets_properties(folder):
    ds = data.load_dataset(folder)
    by_template = {t: [r for r in ds if r["template"] == t] for t in ("in", "out")}
    assert ds.summary.files == {"in_template.jsonl": len(by_template["in"]), "out_template.jsonl": len(by_template["out"])}
    # two wordings of the same QA rows: every (video_id, id) in both files, ids restarting in every video
    assert sorted(map(data.qa_key, by_template["in"])) == sorted(map(data.qa_key, by_template["out"]))
    assert len({data.row_key(r) for r in ds}) == len(ds.rows)
    assert {r["video_id"] for r in ds if r["id"] == "qa_000001"} == set(fixture.VIDEOS)
    assert len(ds.summary.per_type) == 15
    for t in ("in", "out"):  # one wording per type per file
        assert all(len({r["question"] for r in by_template[t] if r["question_type"] == q}) == 1 for q in ds.summary.per_type)
    assert set(stratify.shared_wordings(ds.rows)) == SHARED
    test_rows = [r for r in ds if r["video_id"] == fixture.TEST_VIDEO]
    assert {r["short_answer"] for r in test_rows if r["question_type"] == "lighting_mode"} == {"NBI"}
    assert {r["short_answer"] for r in test_rows if r["question_type"] == "blue_dye_presence"} == {"no"}
    assert ds.summary.per_type["tool_identification"] == 2  # one clip, two wordings
    assert ds.summary.out_of_vocab == {"fluid_occlusion_level": 2, "scope_motion_type": 2}
    assert ds.summary.without_audio == len(ds.rows) and ds.summary.with_audio == 0
    row = ds[0]  # bare frame ids resolved under frames/<video>/, JPEG
    raw = json.loads((folder / "in_template.jsonl").read_text().splitlines()[0])
    assert raw["frames"][0] == f"{row['video_id']}_{row['frame_numbers'][0]}"
    assert row["frames"][0] == f"frames/{row['video_id']}/{raw['frames'][0]}.jpg"
    assert ds.load_frames(row, size=56).shape == (8, 56, 56, 3)


def test_the_same_row_twice_is_still_an_error_naming_both_lines(tmp_path):
    bad = fixture.build(tmp_path / "bad")
    lines = (bad / "out_template.jsonl").read_text().splitlines()
    (bad / "out_template.jsonl").write_text("\n".join(lines + [lines[2]]) + "\n")
    with pytest.raises(data.DataError) as info:
        data.load_dataset(bad)
    e = info.value
    assert (e.file, e.line, e.field) == (str(bad / "out_template.jsonl"), len(lines) + 1, "id")
    assert "(first on line 3) with the same template 'out'" in str(e)
    # across files: a copy of the in file read as a second file of `in` rows names the other file and line
    (bad / "in_copy.jsonl").write_text((bad / "in_template.jsonl").read_text())
    with pytest.raises(data.DataError, match=r"in_copy.jsonl:1: field 'id': .*first on .*in_template.jsonl:1\)"):
        data.load_dataset(bad, files=["in_template.jsonl", "in_copy.jsonl"])


# ---- the data step under every profile's data settings --------------------------------------------------


def test_every_profile_is_checked():
    assert {"default.yaml", "smoke.yaml", "qwen2vl2b_8gb.yaml", "qwen2vl7b_whisper_turbo.yaml"} <= set(PROFILES)


@BUILDS_EVERY_PROFILE
@pytest.mark.parametrize("profile", PROFILES)
def test_data_step_loads_and_splits_the_real_folder(profile, built, folder):
    cfg, result, (splits, corpus), meta = built[profile]
    own = (yaml.safe_load((REPO_ROOT / "params" / profile).read_text()) or {}).get("data", {})
    defaults = Config().data
    assert cfg.data.train_templates == own.get("train_templates", defaults.train_templates)  # the profile's own
    assert cfg.data.test_templates == own.get("test_templates", defaults.test_templates)
    assert all(len(splits[s]) for s in ("train", "val", "test"))
    assert result.heldout_videos == [fixture.TEST_VIDEO]
    assert {r["video_id"] for r in splits["test"]} == {fixture.TEST_VIDEO}
    assert fixture.TEST_VIDEO not in {r["video_id"] for s in ("train", "val") for r in splits[s]}
    # a QA row (both its wordings) lives in one split; a row (video_id, id, template) once
    split_of = defaultdict(set)
    for s, ds in splits.items():
        assert len({data.row_key(r) for r in ds}) == len(ds)
        for r in ds:
            split_of[data.qa_key(r)].add(s)
    assert all(len(v) == 1 for v in split_of.values())
    if set(cfg.data.train_templates) == {"in", "out"}:  # both wordings of a training row are training rows
        templates = defaultdict(set)
        for r in splits["train"]:
            templates[data.qa_key(r)].add(r["template"])
        assert all(v == {"in", "out"} for v in templates.values())
    # nothing dropped silently: every source row is in a split, unused (template) or excluded (counted)
    base = sum(result.summary.files.values())
    used = sum(1 for ds in splits.values() for r in ds if r["group"] not in stratify.RESPOKEN)
    excluded = result.shared_wordings["test_rows_excluded"] // same_wording_copies(splits["test"].rows)
    assert used + result.unused_rows + excluded == base
    assert meta["unused_rows"] == result.unused_rows and meta["split_sizes"] == {s: len(d) for s, d in splits.items()}


@BUILDS_EVERY_PROFILE
@pytest.mark.parametrize("profile", PROFILES)
def test_shared_wordings_are_reported_and_scored_apart_never_refused(profile, built):
    cfg, result, (splits, corpus), meta = built[profile]
    report = meta["shared_wordings"]
    assert report == result.shared_wordings and report["rule"] == cfg.data.shared_wordings == "score_apart"
    assert report["wordings"] == {w: {"in": 16, "out": 16} for w in SHARED}  # 4 videos x 4 clips, both files
    test = splits["test"].rows
    marked = [r for r in test if r.get("seen_wording")]
    held_out = not set(cfg.data.train_templates) & set(cfg.data.test_templates)
    assert report["held_out_wording"] is held_out
    if held_out:
        # the test video's rows of the shared wordings, by every voice that re-asks them in their own wording; the
        # held-out-wording rows (a new wording) never marked, and never in training
        assert {normalize_short(r["question"]) for r in marked} == SHARED
        per_group = Counter(r["group"] for r in marked)
        assert per_group == {g: 2 * fixture.CLIPS_PER_VIDEO for g in same_wording_groups(test)}
        assert len(marked) == report["test_rows_seen_wording"] == 2 * fixture.CLIPS_PER_VIDEO * same_wording_copies(test)
        trained = {normalize_short(r["question"]) for s in ("train", "val") for r in splits[s]}
        assert not {normalize_short(r["question"]) for r in test if not r.get("seen_wording")} & trained
    else:
        assert not marked and report["test_rows_seen_wording"] == 0


@BUILDS_EVERY_PROFILE
@pytest.mark.parametrize("profile", PROFILES)
def test_rows_without_audio_get_spoken_questions(profile, built):
    cfg, result, (splits, corpus), meta = built[profile]
    heldout = set(result.heldout_voices)
    for s, ds in splits.items():
        for r in ds:
            assert r["audio"].startswith("audio/") and r["audio_s"] > 0.3 and ds.audio_path(r).is_file()
            assert (r["voice"] in heldout) == (r["group"] in ("heldout_voice", "heldout_wording"))
    row = next(r for r in splits["test"] if r["group"] == "heldout_voice")
    wav = splits["test"].load_audio(row)
    assert wav.ndim == 1 and len(wav) / SAMPLE_RATE == pytest.approx(row["audio_s"], abs=0.05) and abs(wav).max() > 0.01
    assert {e["split"] for e in corpus} >= {"train", "val", "test"}


def test_exclude_leaves_shared_wording_rows_out_of_the_test_split_and_counts_them(folder, tmp_path):
    cfg = real_cfg("smoke.yaml", folder, tmp_path, shared_wordings="exclude")
    result = datastep.build_dataset(cfg)
    splits, _ = datastep.load_run_data(cfg)
    assert result.shared_wordings["test_rows_excluded"] == 2 * fixture.CLIPS_PER_VIDEO * same_wording_copies(splits["test"].rows)
    assert not {normalize_short(r["question"]) for r in splits["test"]} & SHARED
    assert not any(r.get("seen_wording") for r in splits["test"])
    # 12 types on every clip, the two lesion types on one, less the two shared types, in every same-wording copy;
    # the held-out-wording copies re-ask every row (the shared ones too) in a wording no template file has
    asked = 12 * fixture.CLIPS_PER_VIDEO + 2
    copies = same_wording_copies(splits["test"].rows)
    assert len(splits["test"]) == copies * (asked - 2 * fixture.CLIPS_PER_VIDEO) + asked
    assert data.read_data_meta(cfg.paths.data)["shared_wordings"]["test_rows_excluded"] == result.shared_wordings["test_rows_excluded"]


def test_the_key_is_validated_naming_it():
    with pytest.raises(ConfigError, match=r"smoke.yaml: data.shared_wordings must be one of \['score_apart', 'exclude'\], got 'drop'"):
        Config.from_yaml(REPO_ROOT / "params" / "smoke.yaml", {"data": {"shared_wordings": "drop"}})
    with pytest.raises(ConfigError, match="'data.shared_wordings' must be str"):
        Config.from_yaml(REPO_ROOT / "params" / "smoke.yaml", {"data": {"shared_wordings": True}})
    assert Config().data.shared_wordings == "score_apart"


# ---- what stays a leak --------------------------------------------------------------------------------


def _check(built_profile, rows, corpus=None):
    cfg, result, _, meta = built_profile
    return stratify.check_leakage(rows, result.heldout_voices, cfg.data.train_templates, cfg.data.test_templates,
                                  corpus, shared=meta["shared_wordings"]["wordings"], rule=cfg.data.shared_wordings)


@BUILDS_EVERY_PROFILE
def test_real_leaks_are_still_errors(built):
    smoke = built["smoke.yaml"]
    rows = {s: list(ds.rows) for s, ds in smoke[2].splits.items()}
    assert _check(smoke, rows)["rows"] == sum(map(len, rows.values()))  # as built: passes

    def broken(fn):
        r = copy.deepcopy(rows)
        fn(r)
        return r

    held_out_only = next(r["question"] for r in rows["test"] if not r.get("seen_wording"))
    cases = {
        # a test wording the dataset does NOT share between its files, put into training
        "test question wordings also in train/val": lambda r: r["train"][0].update(question=held_out_only),
        "not marked seen_wording": lambda r: [x.pop("seen_wording", None) for x in r["test"]],
        "marked seen_wording whose wording is not": lambda r: r["test"][0].update(seen_wording=True)
        if normalize_short(r["test"][0]["question"]) not in SHARED else r["test"][1].update(seen_wording=True),
        "held-out voices used in train/val": lambda r: r["train"][0].update(voice=smoke[1].heldout_voices[0]),
        "clips in both train and val": lambda r: r["train"].append(dict(r["val"][0], id="moved")),
        r"QA rows \(video_id, id\) in both train and val": lambda r: r["train"].append(
            dict(r["val"][0], template="out", frame_numbers=[7] * 8)),
        r"duplicate rows \(video_id, id, template\) in train": lambda r: r["train"].append(dict(r["train"][0])),
    }
    for message, fn in cases.items():
        with pytest.raises(stratify.LeakageError, match=message):
            _check(smoke, broken(fn))
    # the speech corpus may hold a shared wording, never a held-out one
    corpus = [{"text": held_out_only, "voice": smoke[1].train_voices[0], "split": "train"}]
    with pytest.raises(stratify.LeakageError, match="speech corpus contains test question wordings"):
        _check(smoke, rows, corpus)
    shared_text = next(r["question"] for r in rows["test"] if r.get("seen_wording"))
    _check(smoke, rows, [dict(corpus[0], text=shared_text)])
    # with `exclude`, a shared wording seen in training may not be in the test split at all
    cfg, result, run, meta = smoke
    with pytest.raises(stratify.LeakageError, match="data.shared_wordings: exclude leaves out"):
        stratify.check_leakage(rows, result.heldout_voices, ["in"], ["out"], shared=meta["shared_wordings"]["wordings"],
                               rule="exclude")


def test_both_wordings_of_a_row_go_to_one_split_even_on_different_clips(folder, tmp_path):
    """Should a dataset give a row's two wordings different clips, the clips are assigned together."""
    cfg = real_cfg("default.yaml", folder, tmp_path)
    rows = data.load_dataset(cfg.data.source).rows
    for r in rows:  # every out wording on a clip of its own: twice the clips, each linked to one other by its rows
        if r["template"] == "out":
            r["frame_numbers"] = [n + 100_000 for n in r["frame_numbers"]]
    plan = stratify.plan_splits(rows, cfg.data, cfg.seed)
    assert sum(s == "val" for s in plan.clip_split.values()) >= 2  # clips were drawn for val, each with its twin
    split_of = defaultdict(set)
    for r in rows:
        split_of[data.qa_key(r)].add(plan.clip_split[data.clip_key(r)])
    assert all(len(v) == 1 for v in split_of.values())


# ---- notebook 01 on the real folder ------------------------------------------------------------------------


@BUILDS_EVERY_PROFILE
def test_notebook_01_eda_runs_on_the_real_folder(built, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, result, (splits, corpus), meta = built["smoke.yaml"]
    base = data.load_dataset(result.data_dir, num_frames=cfg.data.num_frames, audio_root=result.data_dir,
                             frames_root=result.frames_root)
    df = data_eda.rows_frame(base.rows)
    types = data_eda.type_distribution(df)
    assert types.loc["lighting_mode", "total"] == 2 * 16 and types.loc["lesion_site", "total"] == 0
    assert len(data_eda.answer_distribution(df))
    mb = data_eda.majority_baseline(df)
    assert len(mb) == 15 and mb.loc["tool_identification", "majority_rate"] == 1.0
    assert 0 < data_eda.presence_balance(df)["all_presence_types"] < 1
    split_rows = {name: ds.rows for name, ds in splits.items()}
    split_df = data_eda.rows_frame(stratify.all_rows(splits))
    assert set(data_eda.audio_summary(split_df)["voices"].index) == {"train", "val", "test"}
    table = data_eda.stratification_table(split_rows)
    assert table["test:heldout_video"].sum() == table["test:heldout_voice"].sum() == table["test:heldout_wording"].sum()
    test_groups = {r["group"] for r in splits["test"]}
    assert test_groups == {"heldout_video", "heldout_voice", "heldout_engine", "heldout_wording"}
    assert table["test:heldout_video"].sum() * len(test_groups) == len(splits["test"]) and table["val"].sum() == table["val:val_wording"].sum()
    assert set(data_eda.split_overview(split_rows)["group"]) == {"train", "in_domain", "val_wording", "heldout_video",
                                                                 "heldout_voice", "heldout_engine", "heldout_wording"}
    assert "lesion_site" in stratify.coverage(split_rows)["train"]  # a type the dataset never asks
    scale = data_eda.scale_check(splits["train"].rows)
    assert scale["train_videos"] == 3 and scale["classes_under_20_clips"]
    assert len(data_eda.class_clip_counts(splits["train"].rows)) and len(data_eda.corpus_table(corpus))
    examples = data_eda.pick_examples(splits["train"].rows, ["tool_identification", "blue_dye_presence",
                                                            "scope_motion_type", "lesion_site"], seed=cfg.seed)
    assert [r["question_type"] for r in examples] == ["tool_identification", "blue_dye_presence", "scope_motion_type"]
    shared = data_eda.shared_wording_table(base.rows, split_rows)
    assert set(shared.index) == SHARED and set(shared["question_types"]) == set(fixture.SHARED_TYPES)
    assert (shared["in_rows"] == 16).all() and (shared["out_rows"] == 16).all()
    assert shared["test_seen_wording"].sum() == result.shared_wordings["test_rows_seen_wording"] == shared["test_rows"].sum()
    assert data_eda.shared_wording_table(splits["train"].rows).empty  # one template: nothing shared
    for fig in (data_eda.plot_type_distribution(df), data_eda.plot_answer_balance(df),
                data_eda.plot_audio_durations(split_df), data_eda.plot_voices_per_split(split_df),
                data_eda.plot_stratification(table)):
        plt.close(fig)
    m = data_eda.data_metrics(result, splits, base, corpus, {})
    json.dumps(m, default=str)
    assert m["question_types"] == 15 and m["shared_wordings"]["wordings"] == meta["shared_wordings"]["wordings"]
    assert m["split_videos"]["test"] == [fixture.TEST_VIDEO]


# ---- stages 0 -> 1 -> 2 and the evaluation, end to end -------------------------------------------------


@pytest.mark.slow
def test_smoke_stages_and_evaluation_on_the_real_folder(tmp_path):
    """The smoke model sizes, one epoch per stage, on a smaller folder of the same kind (2 clips per video) with one
    training voice and no narration: stage 1 encodes every distinct recording, which sets the test's time."""
    from surgvqa import checkpoints, evaluate, models, stages
    from surgvqa.collate import vqa_examples

    folder = fixture.build(tmp_path / "REAL-Colon-VQA", clips_per_video=2)
    cfg = Config.from_yaml(REPO_ROOT / "params" / "smoke.yaml", {
        "run_root": str(tmp_path / "runs"), "data": {"source": str(folder), "heldout_video_ids": [fixture.TEST_VIDEO], "final_test_videos": 0,
                                                     "num_voices": 2, "narration_sentences": 0},
        "train": {s: {"num_train_epochs": 1} for s in ("stage0", "stage1", "stage2")}})
    run = datastep.load_run_data(cfg)
    results = stages.run_stages(cfg, run, ["stage0", "stage1", "stage2"], resume=False)
    assert list(results) == ["stage0", "stage1", "stage2"] and all(r.global_step >= 1 for r in results.values())
    graft, processor = models.load_graft(checkpoints.stage_dir(cfg, "stage2") / "merged", **models.load_kwargs(cfg))
    rows = evaluate.evaluation_rows(run.splits).rows
    pick = ([r for r in rows if r["split"] == "val"][:1] + [r for r in rows if r.get("seen_wording")][:2]
            + [r for r in rows if r["split"] == "heldout_video" and not r.get("seen_wording")][:2])
    ds = data.Dataset(pick, run.splits["test"].root, run.splits["test"].audio_root)
    out = evaluate.run_model(graft, processor, vqa_examples(ds, "audio"), cfg.eval, "real folder", cfg=cfg)
    assert len(out["predictions"]) == len(pick) == 5
    frame = evaluate.scored_frame("audio_finetuned", pick, out["predictions"])
    accuracy, _ = evaluate.summarize(frame, cfg.eval)
    assert set(accuracy) == {"val", "heldout_video", "heldout_voice", "overall"}
    by_wording = evaluate.summarize_wording(frame, cfg.eval)
    counts = {split: {k: v["n"] for k, v in parts.items()} for split, parts in by_wording.items()}
    seen_video = sum(1 for r in pick if r.get("seen_wording") and r["split"] == "heldout_video")
    assert counts["heldout_video"] == {"heldout_wording": 2, "seen_wording": seen_video}
    assert sum(c["seen_wording"] for c in counts.values()) == 2


@BUILDS_EVERY_PROFILE
def test_notebook_01_runs_under_papermill_on_the_real_folder(folder, built, tmp_path):
    """Notebook 01 alone, executed as `make report` runs it (about 15 s), on the folder under the smoke profile."""
    from surgvqa.pipeline import NOTEBOOKS_DIR, notebook_parameters, run_notebook

    overrides = {"run_root": str(tmp_path / "runs"),
                 "data": {"source": str(folder), "heldout_video_ids": [fixture.TEST_VIDEO], "final_test_videos": 0}}
    audio = Config.from_yaml(REPO_ROOT / "params" / "smoke.yaml", overrides).paths.data / "audio"
    audio.mkdir(parents=True)  # the questions spoken once (`built`): files are named by text and voice
    for wav in (built["smoke.yaml"][0].paths.data / "audio").iterdir():
        os.link(wav, audio / wav.name)
    run_notebook(NOTEBOOKS_DIR / "01_data_eda_stratification.ipynb",
                 notebook_parameters(REPO_ROOT / "params" / "smoke.yaml", overrides), tmp_path / "reports")
    cfg = Config.from_yaml(REPO_ROOT / "params" / "smoke.yaml", overrides)
    m = json.loads((cfg.paths.metrics / "01_data.json").read_text())["metrics"]
    assert m["question_types"] == 15 and m["split_videos"]["test"] == [fixture.TEST_VIDEO]
    assert set(m["shared_wordings"]["wordings"]) == SHARED and m["shared_wordings"]["test_rows_seen_wording"] == 2 * fixture.CLIPS_PER_VIDEO * 3
    # (two shared wordings on every test clip, asked by a training voice, a held-out voice and the held-out engine)
    executed = (tmp_path / "reports" / "01_data_eda_stratification.ipynb").read_text()
    assert "wordings in both template files: 2" in executed and "is endoscope body visible" in executed
