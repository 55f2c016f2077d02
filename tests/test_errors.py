"""Error analysis helpers on hand-made predictions (no model): confusions, worst cases, the audio swap
(`audio_swap`: its map, and its check with a fake model), misheard rows and the HTML cards."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from surgvqa import audio_swap, error_analysis, media
from surgvqa.audio import write_wav
from surgvqa.data import Dataset


def _pred(system, id_, split, qtype, truth, pred, question="Is the mucosa clean?", transcript=None, **kw):
    from surgvqa.answers import exact_match

    row = {"system": system, "id": id_, "split": split, "question_type": qtype, "template": "out", "voice": "v1",
           "video_id": "syn-01", "question": question, "short_answer": truth, "prediction": pred,
           "correct": exact_match(pred, truth, qtype), "audio": f"audio/{id_}.wav"}
    if transcript is not None:
        row["transcript"] = transcript
    row.update(kw)
    return row


@pytest.fixture()
def predictions() -> pd.DataFrame:
    g = "audio_finetuned"
    rows = [
        # lighting_mode: 2/4 correct on test, one out-of-vocabulary answer
        _pred(g, "l1", "heldout_video", "lighting_mode", "NBI", "nbi"),
        _pred(g, "l2", "heldout_video", "lighting_mode", "NBI", "white light"),
        _pred(g, "l3", "heldout_voice", "lighting_mode", "white light", "White-light."),
        _pred(g, "l4", "heldout_voice", "lighting_mode", "white light", "purple"),
        # tool_identification: 0/3 correct (worst type)
        _pred(g, "t1", "heldout_video", "tool_identification", "snare", "forceps"),
        _pred(g, "t2", "heldout_voice", "tool_identification", "snare", "forceps"),
        _pred(g, "t3", "heldout_voice", "tool_identification", "forceps", "snare"),
        # mucosa_visibility: 2/3 correct
        _pred(g, "m1", "heldout_video", "mucosa_visibility", "yes", "yes"),
        _pred(g, "m2", "heldout_video", "mucosa_visibility", "no", "no"),
        _pred(g, "m3", "heldout_voice", "mucosa_visibility", "no", "yes"),
        # val and noisy rows never count as test cases
        _pred(g, "v1", "val", "mucosa_visibility", "yes", "no"),
        _pred(g, "m3", "heldout_voice_noisy", "mucosa_visibility", "no", "yes"),
        # another system on the same rows
        _pred("text_finetuned", "t1", "heldout_video", "tool_identification", "snare", "snare"),
        _pred("text_finetuned", "l2", "heldout_video", "lighting_mode", "NBI", "nbi"),
    ]
    return pd.DataFrame(rows)


# ---- confusions -------------------------------------------------------------------------------------


def test_confusion_matrix_counts(predictions):
    cm = error_analysis.confusion_matrix(predictions, "audio_finetuned", "lighting_mode")
    assert list(cm.index) == ["white light", "nbi"] and list(cm.columns) == ["white light", "nbi", error_analysis.OTHER]
    assert cm.loc["nbi", "nbi"] == 1 and cm.loc["nbi", "white light"] == 1
    assert cm.loc["white light", "white light"] == 1  # "White-light." is a synonym
    assert cm.loc["white light", error_analysis.OTHER] == 1  # "purple" is out of vocabulary
    assert cm.to_numpy().sum() == 4
    # val + test by default; the noisy copy is excluded
    mv = error_analysis.confusion_matrix(predictions, "audio_finetuned", "mucosa_visibility")
    assert mv.to_numpy().sum() == 4 and mv.loc["yes", "no"] == 1
    only_test = error_analysis.confusion_matrix(predictions, "audio_finetuned", "mucosa_visibility", splits=error_analysis.TEST_SPLITS)
    assert only_test.to_numpy().sum() == 3


def test_plot_confusions_figure(predictions):
    import matplotlib

    matplotlib.use("Agg")
    fig = error_analysis.plot_confusions(predictions, "audio_finetuned")
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titled) == 3 and titled[0].startswith("mucosa_visibility")
    assert any("2/4 correct" in t for t in titled)  # lighting_mode
    empty = error_analysis.plot_confusions(predictions, "nope")
    assert empty.axes


# ---- worst cases --------------------------------------------------------------------------------------


def test_worst_cases_spread_and_order(predictions):
    cases = error_analysis.worst_cases(predictions, "audio_finetuned", n=5, seed=0)
    assert len(cases) == 5
    assert set(cases["split"]) <= set(error_analysis.TEST_SPLITS) and not cases["correct"].any()
    # lowest accuracy first: tool_identification (0/3), lighting_mode (2/4), mucosa_visibility (2/3)
    assert list(cases["question_type"][:3]) == ["tool_identification", "lighting_mode", "mucosa_visibility"]
    assert cases["question_type"].value_counts().max() <= 2
    assert list(cases["type_accuracy"][:3]) == pytest.approx([0.0, 0.5, 2 / 3])
    again = error_analysis.worst_cases(predictions, "audio_finetuned", n=5, seed=0)
    pd.testing.assert_frame_equal(cases, again)
    one_each = error_analysis.worst_cases(predictions, "audio_finetuned", n=6, per_type=1)
    assert len(one_each) == 3 and one_each["question_type"].is_unique
    assert error_analysis.worst_cases(predictions, "majority").empty


# ---- audio swap map -----------------------------------------------------------------------------------


def _swap_rows(counts: dict[str, int]) -> list[dict]:
    return [{"id": f"{t}_{i}", "video_id": "v", "question_type": t, "audio": f"audio/{t}_{i}.wav"}
            for t, n in counts.items() for i in range(n)]


@pytest.mark.parametrize("counts", [{"a": 3, "b": 3}, {"a": 2, "b": 3, "c": 4}, {"a": 7, "b": 1, "c": 1}])
def test_swap_map_other_type(counts):
    rows = _swap_rows(counts)
    swap = audio_swap.swap_audio_map(rows, seed=3)
    type_of_audio = {r["audio"]: r["question_type"] for r in rows}
    assert set(swap) == {("v", r["id"], None) for r in rows}  # keyed by row_key (video_id, id, template)
    for r in rows:
        assert type_of_audio[swap[("v", r["id"], None)]] != r["question_type"]
    assert swap == audio_swap.swap_audio_map(list(reversed(rows)), seed=3)  # deterministic, order-free
    if 2 * max(counts.values()) <= sum(counts.values()):  # a permutation when one exists
        assert sorted(swap.values()) == sorted(type_of_audio)


def test_swap_map_within_an_answer_vocabulary():
    rows = [{"id": f"{t}_{i}", "video_id": "v", "question_type": t, "audio": f"audio/{t}_{i}.wav"}
            for t in ("mucosa_visibility", "blue_dye_presence", "nbi_status", "tool_identification", "lighting_mode")
            for i in range(3)]
    type_of_audio = {r["audio"]: r["question_type"] for r in rows}
    swap = audio_swap.swap_audio_map(rows, seed=1, same_vocabulary=True)
    yes_no = {("v", r["id"], None) for r in rows if r["question_type"] in ("mucosa_visibility", "blue_dye_presence", "nbi_status")}
    assert set(swap) == yes_no  # tool type and lighting share their vocabulary with no other type: left out
    for (_, rid, _), audio in swap.items():
        heard = type_of_audio[audio]
        assert heard != rid.rsplit("_", 1)[0] and heard in ("mucosa_visibility", "blue_dye_presence", "nbi_status")
    assert sorted(swap.values()) == sorted(a for a, t in type_of_audio.items() if ("v", a[6:-4], None) in yes_no)
    assert swap == audio_swap.swap_audio_map(list(reversed(rows)), seed=1, same_vocabulary=True)
    assert audio_swap.swap_audio_map(rows[9:], same_vocabulary=True) == {}  # no shared vocabulary at all


def test_swap_map_root_and_errors(tmp_path):
    rows = _swap_rows({"a": 2, "b": 2})
    swap = audio_swap.swap_audio_map(rows, audio_root=tmp_path)
    assert all(v.startswith(str(tmp_path)) for v in swap.values())
    with pytest.raises(ValueError, match="two question types"):
        audio_swap.swap_audio_map(_swap_rows({"a": 4}))
    with pytest.raises(ValueError, match="no audio"):
        audio_swap.swap_audio_map([{"id": "x", "video_id": "v", "question_type": "a"},
                                   {"id": "y", "video_id": "v", "question_type": "b", "audio": "y.wav"}])
    assert audio_swap.swap_audio_map([]) == {}


# ---- misheard -----------------------------------------------------------------------------------------


def test_misheard_order_counts_and_diff():
    q1, q2, q3, q4 = ("Is the scope moving forward?", "What tool is visible?", "Is there blue dye?",
                      "Which lighting mode is used?")
    rows = [
        # heard exactly (after normalisation): not misheard
        _pred("asr_pipeline", "a", "heldout_voice", "scope_forward_motion", "yes", "yes", q1, "is the scope moving forward"),
        # asr right, graft wrong
        _pred("asr_pipeline", "b", "heldout_voice", "tool_identification", "snare", "snare", q2, "What tool is visual?"),
        # asr wrong, graft right
        _pred("asr_pipeline", "c", "heldout_video", "blue_dye_presence", "no", "yes", q3, "Is there blue die?"),
        # both wrong, two substitutions
        _pred("asr_pipeline", "d", "heldout_voice", "lighting_mode", "NBI", "white light", q4, "Rich lightning mode is used?"),
        # val rows are not test rows
        _pred("asr_pipeline", "e", "val", "lighting_mode", "NBI", "nbi", q4, "Lighting mode?"),
        _pred("audio_finetuned", "b", "heldout_voice", "tool_identification", "snare", "forceps", q2),
        _pred("audio_finetuned", "c", "heldout_video", "blue_dye_presence", "no", "no", q3),
        _pred("audio_finetuned", "d", "heldout_voice", "lighting_mode", "NBI", "purple", q4),
    ]
    df = error_analysis.misheard(pd.DataFrame(rows))
    assert list(df["id"]) == ["c", "d", "b"]
    assert list(df.columns[:2]) == ["id", "split"]
    assert {"question", "transcript", "word_wer", "asr_answer", "asr_correct", "graft_answer", "graft_correct",
            "short_answer"} <= set(df.columns)
    assert df.loc[0, "graft_answer"] == "no" and bool(df.loc[0, "graft_correct"]) and not df.loc[0, "asr_correct"]
    assert df.loc[1, "word_wer"] == pytest.approx(2 / 5)
    assert error_analysis.misheard_counts(df) == {"misheard_rows": 3, "asr_wrong_graft_right": 1, "asr_right_graft_wrong": 1,
                                      "both_wrong": 1, "both_right": 0}
    page = error_analysis.misheard_html(df, n=2)
    assert page.count("<tr>") == 3  # header + 2 rows
    assert "dye&rarr;die" in page and 'title="substitution"' in page
    assert "2 of 3 misheard rows" in page
    assert "heard every" in error_analysis.misheard_html(df.iloc[:0])
    metrics = error_analysis.error_metrics(pd.DataFrame(rows), misheard_df=df)
    assert metrics["misheard"]["asr_wrong_graft_right"] == 1
    assert metrics["per_type_accuracy"]["blue_dye_presence"]["audio_finetuned"] == 1.0


def test_error_metrics_per_type(predictions):
    m = error_analysis.error_metrics(predictions)
    assert m["per_type_accuracy"]["tool_identification"] == {"audio_finetuned": 0.0, "text_finetuned": 1.0, "n": 3}
    assert "tool_identification" in m["text_better_types"]
    assert m["misheard"]["misheard_rows"] == 0 and "audio_swap" not in m
    swap = {"rows": 4, "true_audio": {"accuracy": 0.75, "ci95": [0.5, 1.0]}, "swapped_audio": {"accuracy": 0.25,
            "ci95": [0.0, 0.5]}, "majority": {"accuracy": 0.5, "ci95": [0.25, 0.75]}, "changed": 0.5,
            "swapped_in_donor_vocab": 0.25}
    m = error_analysis.error_metrics(predictions, swap=swap)
    assert m["audio_swap"]["drop"] == 0.5 and m["audio_swap"]["majority"]["accuracy"] == 0.5
    import matplotlib

    matplotlib.use("Agg")
    assert audio_swap.plot_swap(swap).axes


# ---- case cards ---------------------------------------------------------------------------------------


@pytest.fixture()
def tiny_ds(tmp_path) -> Dataset:
    frames = []
    for k in range(8):
        p = tmp_path / "frames" / "syn-01" / f"syn-01_{k:06d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((12, 12, 3), 30 * k, np.uint8)).save(p)
        frames.append(f"frames/syn-01/syn-01_{k:06d}.png")
    write_wav(tmp_path / "audio" / "q1.wav", 0.1 * np.sin(np.linspace(0, 200, 4000)))
    row = {"id": "q1", "video_id": "syn-01", "frames": frames, "frame_numbers": list(range(8)),
           "question": "Is <b>clean</b> mucosa visible?", "question_type": "mucosa_visibility", "support_frames": 8,
           "support_ratio": 1.0, "answer": "Yes.", "short_answer": "yes", "template": "out", "voice": "us_m3",
           "audio": "audio/q1.wav", "split": "heldout_voice"}
    return Dataset([row], tmp_path, tmp_path)


def test_case_html_embeds_audio_and_gif(tiny_ds):
    card = error_analysis.case_html(tiny_ds, tiny_ds.rows[0], "no", extra={"note": "x"})
    assert "<audio" in card and "data:audio/wav;base64," in card
    assert "data:image/gif;base64," in card
    assert "&lt;b&gt;clean&lt;/b&gt;" in card  # question text escaped
    assert "heldout_voice" in card and "us_m3" in card and "note" in card
    assert "#cf222e" in card  # wrong prediction in red
    ok = error_analysis.case_html(tiny_ds, {"id": "q1", "video_id": "syn-01", "split": "heldout_voice"}, "Yes.")  # a predictions row, looked up by (video_id, id)
    assert "#1a7f37" in ok and "data:audio/wav;base64," in ok
    cases = pd.DataFrame([{"id": "q1", "video_id": "syn-01", "split": "heldout_voice", "prediction": "no", "type_accuracy": 0.5}])
    page = error_analysis.show_cases(tiny_ds, cases).data
    assert page.count("<audio") == 1 and "type accuracy" in page
    with pytest.raises(KeyError):
        error_analysis.case_html(tiny_ds, {"id": "missing", "video_id": "syn-01"}, "no")


def test_flipbook_widget(tiny_ds):
    w = media.flipbook_widget(tiny_ds.load_frames(tiny_ds.rows[0]), size=16)
    play_row, image = w.children
    play, slider = play_row.children
    assert play.max == 7 and slider.max == 7
    first = image.value
    slider.value = 5
    assert image.value != first


def test_split_rows_and_case_frames(tiny_ds):
    assert len(audio_swap.split_rows(tiny_ds)) == 1 and len(audio_swap.split_rows(tiny_ds, ["val"])) == 0
    assert error_analysis.case_frames(tiny_ds, {"id": "q1", "video_id": "syn-01"}).shape == (8, 12, 12, 3)


def test_audio_swap_check_wiring(tmp_path, monkeypatch):
    """A fake model that answers correctly only when it hears the row's own audio."""
    from surgvqa import evaluate
    from surgvqa.config import EvalConfig

    frames = []
    for k in range(8):
        p = tmp_path / "f" / f"{k}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(p)
        frames.append(f"f/{k}.png")
    rows = []
    for i, (qtype, truth) in enumerate([("mucosa_visibility", "yes"), ("mucosa_visibility", "no"),
                                        ("tool_identification", "snare"), ("tool_identification", "forceps")]):
        write_wav(tmp_path / "audio" / f"r{i}.wav", np.zeros(800))
        rows.append({"id": f"r{i}", "video_id": "v", "frames": frames, "frame_numbers": list(range(8)),
                     "question": "q?", "question_type": qtype, "short_answer": truth, "audio": f"audio/r{i}.wav",
                     "split": "heldout_voice"})
    ds = Dataset(rows, tmp_path, tmp_path)
    truth = {r["id"]: r["short_answer"] for r in rows}
    answer_of_audio = {f"r{i}.wav": r["short_answer"] for i, r in enumerate(rows)}

    def fake_run_model(model, processor, examples, options, desc, cfg=None):
        return {"predictions": [answer_of_audio[examples[k].audio.split("/")[-1]] for k in range(len(examples))]}

    monkeypatch.setattr(evaluate, "run_model", fake_run_model)
    res = audio_swap.audio_swap_check(None, None, ds, EvalConfig(bootstrap=50), majority={
        "mucosa_visibility": "yes", "tool_identification": "snare"})
    assert res["rows"] == 4 and res["true_audio"]["accuracy"] == 1.0
    assert res["swapped_audio"]["accuracy"] == 0.0 and res["changed"] == 1.0
    assert res["majority"]["accuracy"] == 0.5 and res["swapped_in_donor_vocab"] == 1.0
    assert res["balanced"] == {"true_audio": 1.0, "swapped_audio": 0.0, "chance": 0.5}
    assert list(res["predictions"]["true_audio"]) == [truth[r["id"]] for r in rows]
    assert set(res["predictions"]["donor_type"]) == {"mucosa_visibility", "tool_identification"}
    assert res["same_vocabulary"] == {"rows": 0}  # one yes/no type: nothing to swap within a vocabulary


def test_same_vocabulary_swap_takes_a_listener_to_chance_and_not_a_deaf_model(tmp_path, monkeypatch, predictions):
    from surgvqa import evaluate
    from surgvqa.config import EvalConfig

    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "0.png")
    rows = []
    for i, (qtype, truth) in enumerate([("mucosa_visibility", "yes"), ("mucosa_visibility", "no"),
                                        ("blue_dye_presence", "yes"), ("blue_dye_presence", "no"),
                                        ("tool_identification", "snare"), ("tool_identification", "forceps")]):
        write_wav(tmp_path / f"r{i}.wav", np.zeros(800))
        rows.append({"id": f"r{i}", "video_id": "v", "frames": ["0.png"], "frame_numbers": [0], "question": "q?",
                     "question_type": qtype, "short_answer": truth, "audio": f"r{i}.wav", "split": "heldout_voice"})
    ds = Dataset(rows, tmp_path, tmp_path)
    answer_of_audio = {f"r{i}.wav": r["short_answer"] for i, r in enumerate(rows)}
    # the listener answers the question it hears; the deaf model knows each row's answer whatever it hears
    listener = lambda examples: [answer_of_audio[Path(ex.audio).name] for ex in examples]  # noqa: E731
    deaf = lambda examples: [ex.answer for ex in examples]  # noqa: E731
    majority = {"mucosa_visibility": "yes", "blue_dye_presence": "no", "tool_identification": "snare"}
    results = {}
    for name, model in (("listener", listener), ("deaf", deaf)):
        monkeypatch.setattr(evaluate, "run_model", lambda m, p, examples, o, d, cfg=None: {"predictions": model(examples)})
        results[name] = audio_swap.audio_swap_check(None, None, ds, EvalConfig(bootstrap=50), majority=majority)
    heard = audio_swap.swap_audio_map(rows, same_vocabulary=True)
    listened = results["listener"]["same_vocabulary"]
    assert listened["rows"] == 4 and listened["types"] == ["blue_dye_presence", "mucosa_visibility"]
    assert listened["predictions"] == [answer_of_audio[Path(heard[("v", r["id"], None)]).name] for r in rows[:4]]
    deaf_result = results["deaf"]["same_vocabulary"]["balanced"]
    assert deaf_result == {"true_audio": 1.0, "swapped_audio": 1.0, "chance": 0.5}  # it never listened
    m = error_analysis.error_metrics(predictions, swap=results["deaf"])
    assert m["audio_swap"]["same_vocabulary"]["swapped_balanced_within_0.10_of_chance"] is False
    assert m["audio_swap"]["same_vocabulary"]["types"] == ["blue_dye_presence", "mucosa_visibility"]
    import matplotlib

    matplotlib.use("Agg")
    assert len(audio_swap.plot_swap(results["listener"]).axes) == 2


# ---- new wordings ---------------------------------------------------------------------------------


def test_worst_wordings_and_the_answers_from_another_types_vocabulary():
    from surgvqa.answers import another_types_answer

    g, t = "audio_finetuned", "text_finetuned"
    hard, easy = "Is the lens buried in the mucosa?", "Is NBI enabled for this segment?"
    rows = [_pred(g, "a1", "heldout_wording", "occlusion_check", "no", "forceps", question=hard),
            _pred(g, "a2", "heldout_wording", "occlusion_check", "yes", "yes", question=hard),
            _pred(g, "a3", "heldout_wording", "occlusion_check", "no", "upper-left", question=hard),
            _pred(g, "b1", "heldout_wording", "nbi_status", "yes", "yes", question=easy),
            _pred(g, "b2", "heldout_wording", "nbi_status", "no", "maybe", question=easy),
            _pred(g, "c1", "heldout_voice", "nbi_status", "no", "forceps"),  # not a new wording
            _pred(t, "a1", "heldout_wording", "occlusion_check", "no", "no", question=hard),
            _pred(t, "b1", "heldout_wording", "nbi_status", "yes", "NBI", question=easy)]
    frame = pd.DataFrame(rows)
    frame["another_type"] = [another_types_answer(p, q) for p, q in zip(frame["prediction"], frame["question_type"])]
    table = error_analysis.worst_wordings(frame)
    assert list(table.index.get_level_values("question")) == [hard, easy]  # 1/3 before 1/2
    assert table.loc[("occlusion_check", hard), "another type: audio_finetuned"] == pytest.approx(0.67)
    assert table.loc[("nbi_status", easy), "another type: audio_finetuned"] == 0.0  # "maybe" is nobody's answer
    assert table.loc[("nbi_status", easy), "another type: text_finetuned"] == 1.0  # "NBI" is lighting_mode's
    assert list(table["rows"]) == [3, 2]
    cases = error_analysis.misunderstood_cases(frame, g, n=5)
    assert list(cases["id"]) in (["a1"], ["a3"]) and cases["wording_accuracy"].iloc[0] == pytest.approx(1 / 3)
    assert "tool_identification" in cases["answer_belongs_to"].iloc[0] or "lesion_screen_position" in cases["answer_belongs_to"].iloc[0]
    assert error_analysis.answer_belongs_to("no", "nbi_status") == "own"
    assert error_analysis.answer_belongs_to("maybe", "nbi_status") == "none"
    with pytest.raises(ValueError, match="heldout_wording"):
        error_analysis.worst_wordings(frame[frame["split"] != "heldout_wording"])
