"""Schema, loaders and validation: real REAL-Colon-VQA layout and our own output, bad inputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from surgvqa import answers, data, data_eda, media, schema



def _row(i: int = 1, video: str = "002-003", start: int = 3806, **over) -> dict:
    """A REAL-Colon-VQA row as published: bare frame ids, no template/audio/voice."""
    nums = [start + 4 * k for k in range(8)]
    row = {
        "id": f"qa_{i:06d}", "video_id": video, "frames": [f"{video}_{n}" for n in nums], "frame_numbers": nums,
        "question": "Is clean mucosa visible in this sequence?", "question_type": "mucosa_visibility",
        "support_frames": 8, "total_frames": 8, "support_ratio": 1.0, "support_percentage": 100.0,
        "answer": "No, clean mucosa is not consistently visible.", "short_answer": "no",
    }
    row.update(over)
    return row


def _real_folder(root: Path, rows_in: list[dict], rows_out: list[dict] | None = None, ext=".jpg") -> Path:
    """frames/<video>/<frame id><ext> + in_template.jsonl (+ out_template.jsonl)."""
    for r in rows_in + (rows_out or []):
        for f in r["frames"]:
            p = root / "frames" / r["video_id"] / f"{f}{ext}"
            if not p.exists():
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(p)
    (root / "in_template.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows_in))
    if rows_out is not None:
        (root / "out_template.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows_out))
    return root


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


# ---- schema -------------------------------------------------------------------------------------


def test_schema_constants():
    assert len(schema.QUESTION_TYPES) == 20 and len(set(schema.QUESTION_TYPES)) == 20
    assert set(schema.ANSWER_VOCAB) == set(schema.QUESTION_TYPES)
    assert all(len(v) >= 2 for v in schema.ANSWER_VOCAB.values())
    assert set(schema.PRESENCE_TYPES) <= set(schema.QUESTION_TYPES)
    assert answers.normalize_short("  Yes. ") == "yes" and answers.in_vocabulary("nbi", "lighting_mode")
    assert not answers.in_vocabulary("scissors", "tool_identification")


# ---- the real-data layout -------------------------------------------------------------------


def test_loads_real_colon_vqa_layout(tmp_path):
    rows_in = [_row(1), _row(2, start=4000, short_answer="yes", answer="Yes, clean mucosa is visible."),
               _row(3, video="002-004", start=100, question_type="lighting_mode", short_answer="NBI",
                    question="What lighting mode is used?", answer="NBI is used.")]
    rows_out = [dict(r, question="Can you clearly observe clean mucosa in these frames?") for r in rows_in]
    ds = data.load_dataset(_real_folder(tmp_path, rows_in, rows_out))
    assert len(ds) == 6
    s = ds.summary
    assert s.rows == 6 and s.files == {"in_template.jsonl": 3, "out_template.jsonl": 3}
    assert s.videos == 2 and s.clips == 3 and s.per_template == {"in": 3, "out": 3}
    assert s.without_audio == 6 and s.with_audio == 0 and s.out_of_vocab == {}
    row = ds[0]
    assert row["template"] == "in" and row["frames"][0] == "frames/002-003/002-003_3806.jpg"
    assert ds.frame_paths(row)[0].is_file()
    clip = ds.load_frames(row, size=8)
    assert clip.shape == (8, 8, 8, 3) and clip.dtype == np.uint8
    assert sum(r["template"] == "out" for r in ds) == 3 and sum(r["video_id"] == "002-004" for r in ds) == 2
    assert "read 6 QA rows" in str(s)


def test_blank_lines_are_counted_and_oov_answers_reported(tmp_path):
    _real_folder(tmp_path, [_row(1)])
    (tmp_path / "in_template.jsonl").write_text(
        json.dumps(_row(1)) + "\n\n" + json.dumps(_row(2, short_answer="maybe")) + "\n   \n")
    ds = data.load_dataset(tmp_path)
    assert ds.summary.rows == 2 and ds.summary.blank_lines == 2
    assert ds.summary.out_of_vocab == {"mucosa_visibility": 1}


def test_frame_lookup_variants(tmp_path):
    # frames directly under <video>/ and png files are found too
    r = _row(1)
    for f in r["frames"]:
        p = tmp_path / r["video_id"] / f"{f}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(p)
    (tmp_path / "in_template.jsonl").write_text(json.dumps(r) + "\n")
    ds = data.load_dataset(tmp_path)
    assert ds[0]["frames"][0] == "002-003/002-003_3806.png"


# ---- bad inputs: each names file, line and field -------------------------------------------------


def _expect(path_or_root, line, field, message, loader=None):
    with pytest.raises(data.DataError) as info:
        (loader or data.load_dataset)(path_or_root)
    err = info.value
    assert err.line == line and err.field == field, str(err)
    assert message in str(err), str(err)
    assert f":{line}:" in str(err) if line is not None else True
    return err


def test_malformed_json(tmp_path):
    _real_folder(tmp_path, [_row(1)])
    _write_lines(tmp_path / "in_template.jsonl", [json.dumps(_row(1)), '{"id": "qa_2", "video_id": '])
    err = _expect(tmp_path, 2, None, "malformed JSON")
    assert err.file.endswith("in_template.jsonl")


def test_missing_field(tmp_path):
    bad = _row(2)
    del bad["question"]
    _real_folder(tmp_path, [_row(1), bad])
    _expect(tmp_path, 2, "question", "missing required field")


def test_unknown_question_type(tmp_path):
    _real_folder(tmp_path, [_row(1, question_type="polyp_colour")])
    _expect(tmp_path, 1, "question_type", "unknown question type 'polyp_colour'")


def test_missing_frame_file(tmp_path):
    _real_folder(tmp_path, [_row(1)])
    (tmp_path / "frames" / "002-003" / "002-003_3810.jpg").unlink()
    err = _expect(tmp_path, 1, "frames", "frame file not found: '002-003_3810'")
    assert str(tmp_path / "002-003_3810") in err.problem  # says where it looked


def test_frame_path_escaping_the_root(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    outside = tmp_path / "secret.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(outside)
    r = _row(1, frames=["../secret.png"] * 8)
    (root / "in_template.jsonl").write_text(json.dumps(r) + "\n")
    _expect(root, 1, "frames", "escapes the dataset root")
    r = _row(1, frames=["frames/../../secret.png"] * 8)
    (root / "in_template.jsonl").write_text(json.dumps(r) + "\n")
    _expect(root, 1, "frames", "escapes the dataset root")
    r = _row(1, frames=[str(outside)] * 8)
    (root / "in_template.jsonl").write_text(json.dumps(r) + "\n")
    _expect(root, 1, "frames", "must be relative to the dataset root")


def test_unreadable_audio(tmp_path):
    _real_folder(tmp_path, [_row(1), _row(2, audio="audio/q2.wav")])
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "q2.wav").write_bytes(b"RIFF....WAVEnot really audio")
    err = _expect(tmp_path, 2, "audio", "unreadable audio")
    assert "q2.wav" in str(err)
    (tmp_path / "audio" / "q2.wav").unlink()
    _expect(tmp_path, 2, "audio", "audio file not found")


def test_audio_path_escaping_the_root(tmp_path):
    _real_folder(tmp_path, [_row(1, audio="../q.wav")])
    _expect(tmp_path, 1, "audio", "escapes the dataset root")


def test_other_field_errors(tmp_path):
    cases = [
        (dict(frames=["a"] * 7, frame_numbers=list(range(7))), "frames", "expected 8 frames, got 7"),
        (dict(frame_numbers=[1, 2, 3]), "frame_numbers", "expected 8 integers"),
        (dict(support_ratio=1.5), "support_ratio", "expected a number in [0, 1]"),
        (dict(support_frames=9), "support_frames", "expected an integer in 0..8"),
        (dict(short_answer=""), "short_answer", "expected a non-empty string"),
        (dict(template="maybe"), "template", "expected one of"),
    ]
    for over, field, message in cases:
        _real_folder(tmp_path, [_row(1, **over)])
        _expect(tmp_path, 1, field, message)


def test_duplicate_ids_and_template_mismatch(tmp_path):
    _real_folder(tmp_path, [_row(1), _row(1, start=5000)])
    _expect(tmp_path, 2, "id", "duplicate id 'qa_000001' in video '002-003' (first on line 1)")
    _real_folder(tmp_path, [_row(1, template="out")])
    _expect(tmp_path, 1, "template", "file holds 'in' rows")


def test_not_an_object_and_missing_folder(tmp_path):
    _real_folder(tmp_path, [_row(1)])
    _write_lines(tmp_path / "in_template.jsonl", ['["a", "list"]'])
    _expect(tmp_path, 1, None, "expected a JSON object")
    with pytest.raises(data.DataError, match="dataset folder not found"):
        data.load_dataset(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(data.DataError, match="no in_template.jsonl or out_template.jsonl"):
        data.load_dataset(empty)


def test_load_jsonl_of_our_own_layout(tmp_path):
    from surgvqa import synthetic

    rows, _ = synthetic.generate(0, 1, 2, frame_size=24, out_dir=tmp_path)
    path = data.write_jsonl(tmp_path / "in_template.jsonl", rows["in"])
    loaded, counts = data.load_jsonl(path, tmp_path)
    assert counts["rows"] == len(rows["in"]) and counts["frames_checked"] == 16
    assert [r["id"] for r in loaded] == [r["id"] for r in rows["in"]]
    assert path.read_text() == data.write_jsonl(tmp_path / "again.jsonl", loaded).read_text()


# ---- EDA helpers ---------------------------------------------------------------------------------


def test_eda_tables_and_majority_baseline():
    rows = [_row(i, question_type="lighting_mode", short_answer="NBI", template="in") for i in range(5)]
    rows += [_row(10 + i, short_answer="yes" if i < 3 else "no", template="out") for i in range(4)]
    df = data_eda.rows_frame(rows)
    table = data_eda.type_distribution(df)
    assert len(table) == 20 and table.loc["lighting_mode", "total"] == 5 and table.loc["nbi_status", "total"] == 0
    mb = data_eda.majority_baseline(df)
    assert mb.loc["lighting_mode", "majority_rate"] == 1.0 and mb.loc["lighting_mode", "answers"] == 1
    assert mb.loc["mucosa_visibility", "majority_answer"] == "yes" and mb.loc["mucosa_visibility", "majority_rate"] == 0.75
    ans = data_eda.answer_distribution(df)
    assert ans.loc[ans["question_type"] == "mucosa_visibility", "share"].sum() == pytest.approx(1.0)


def test_flipbook_html_embeds_gif_and_strip():
    frames = np.random.default_rng(0).integers(0, 255, size=(8, 16, 16, 3), dtype=np.uint8)
    html = media.flipbook_html(frames, caption="a <clip>")
    assert html.count("data:image/gif;base64,") == 1 and html.count("data:image/png;base64,") == 1
    assert "a &lt;clip&gt;" in html
    assert media.frame_strip(frames, gap=2).shape == (16, 8 * 16 + 7 * 2, 3)
    gif = media.flipbook_gif(frames)
    with Image.open(__import__("io").BytesIO(gif)) as im:
        assert im.n_frames == 8
