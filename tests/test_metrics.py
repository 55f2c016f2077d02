"""Metrics: short-answer matching, long-answer scores, ASR error rates, bootstrap statistics."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from surgvqa import answers, metrics, schema


# ---- normalisation / synonyms ---------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("The Lower-Left.", "lower-left"),
    ("<5", "<5"),
    ("5-10", "5-10"),
    (">10 mm.", ">10 mm"),
    ("< 5", "<5"),
    ("  No. ", "no"),
    ("An adenoma", "adenoma"),
    ("theater", "theater"),  # articles only as whole words
    ("yes, there is", "yes there is"),
    ("2.5 mm.", "2.5 mm"),  # decimal point kept, final full stop dropped
    ("upper - left", "upper left"),  # a lone hyphen is punctuation
    ("White   light!", "white light"),
    ("", ""),
])
def test_normalize_short(text, expected):
    assert answers.normalize_short(text) == expected


def test_synonym_tables_are_normalised_and_point_into_the_vocab():
    for qtype, table in answers.SYNONYMS.items():
        assert qtype in schema.ANSWER_VOCAB
        vocab = {answers.normalize_short(a) for a in schema.ANSWER_VOCAB[qtype]}
        for variant, canon in table.items():
            assert answers.normalize_short(variant) == variant, (qtype, variant)
            assert canon in vocab, (qtype, canon)
            assert variant not in vocab, (qtype, variant)  # a vocab answer must never be remapped
    for qtype in schema.ANSWER_VOCAB:
        if set(schema.ANSWER_VOCAB[qtype]) == {"yes", "no"}:
            assert not answers.SYNONYMS.get(qtype), qtype  # yes/no stays strict


@pytest.mark.parametrize("text, qtype, expected", [
    ("White-Light", "lighting_mode", "white light"),
    ("narrow-band imaging", "lighting_mode", "nbi"),
    ("NBI", "lighting_mode", "nbi"),
    ("Under 5 millimetres", "lesion_size_range", "<5"),
    ("less than 5 mm", "lesion_size_range", "<5"),
    ("5 to 10 millimetres", "lesion_size_range", "5-10"),
    ("More than 10 mm.", "lesion_size_range", ">10"),
    ("the sigmoid colon", "lesion_site", "sigma"),
    ("Caecum", "lesion_site", "cecum"),
    ("withdrawal", "scope_motion_type", "withdrawing"),
    ("still", "scope_motion_type", "stable"),
    ("Biopsy forceps", "tool_identification", "forceps"),
    ("upper left", "lesion_screen_position", "upper-left"),
    ("yeah", "scope_motion", "yeah"),  # no yes/no synonyms
    ("white", "lesion_site", "white"),  # synonyms are per type
])
def test_canonical_answer(text, qtype, expected):
    assert answers.canonical_answer(text, qtype) == expected


def test_canonical_answer_unknown_type():
    with pytest.raises(KeyError, match="no_such_type"):
        answers.canonical_answer("yes", "no_such_type")


@pytest.mark.parametrize("pred, truth, qtype", [
    ("not", "no", "tool_catheter_check"),
    ("no tool", "no", "tool_catheter_check"),
    ("lower-left", "left", "lesion_motion_direction"),
    ("left", "lower-left", "lesion_screen_position"),
    ("yes, there is", "yes", "tool_catheter_check"),
    ("yes", "no", "scope_motion"),
    ("under 5 mm", "5-10", "lesion_size_range"),
    ("white light", "NBI", "lighting_mode"),
])
def test_exact_match_negatives(pred, truth, qtype):
    assert not answers.exact_match(pred, truth, qtype)


@pytest.mark.parametrize("pred, truth, qtype", [
    ("No.", "no", "tool_catheter_check"),
    ("The NBI", "NBI", "lighting_mode"),
    ("narrow band imaging", "NBI", "lighting_mode"),
    ("5 to 10 mm", "5-10", "lesion_size_range"),
    ("The Lower-Left.", "lower-left", "lesion_screen_position"),
    ("sigmoid", "sigma", "lesion_site"),
])
def test_exact_match_positives(pred, truth, qtype):
    assert answers.exact_match(pred, truth, qtype)


def test_in_vocabulary():
    assert answers.in_vocabulary("NBI.", "lighting_mode")
    assert answers.in_vocabulary("narrow band imaging", "lighting_mode")
    assert answers.in_vocabulary("over 10 mm", "lesion_size_range")
    assert not answers.in_vocabulary("blue light", "lighting_mode")
    assert not answers.in_vocabulary("yes there is", "tool_catheter_check")
    assert not answers.in_vocabulary("left", "lesion_screen_position")
    for qtype, vocab in schema.ANSWER_VOCAB.items():
        assert all(answers.in_vocabulary(a, qtype) for a in vocab), qtype


# ---- long answers ---------------------------------------------------------------------------


@pytest.mark.parametrize("long, short, qtype, hit", [
    ("There is no tool.", "no", "tool_catheter_check", True),
    ("No, no tool or catheter is visible.", "no", "tool_catheter_check", True),
    ("The tool is not visible.", "no", "tool_catheter_check", False),  # "not" is not "no"
    ("The scope is moving now.", "no", "scope_motion", False),
    ("The lesion is in the lower-left of the screen.", "lower-left", "lesion_screen_position", True),
    ("The lesion is in the lower-left of the screen.", "left", "lesion_motion_direction", False),
    ("The lesion appears lower left.", "lower-left", "lesion_screen_position", True),  # spoken form
    ("The polyp measures <5 mm.", "<5", "lesion_size_range", True),
    ("The polyp measures under 5 millimetres.", "<5", "lesion_size_range", True),
    ("The polyp measures <5.5 mm.", "<5", "lesion_size_range", False),
    ("The polyp measures 5-10 mm.", "<5", "lesion_size_range", False),
    ("The lighting mode is NBI, narrow band imaging.", "NBI", "lighting_mode", True),
    ("The lesion site is the sigma, the sigmoid colon.", "sigma", "lesion_site", True),
    ("The lesion is in the sigmoid colon.", "sigma", "lesion_site", True),
    ("Biopsy forceps are visible.", "forceps", "tool_identification", True),
    ("A polypectomy snare is visible.", "forceps", "tool_identification", False),
])
def test_keyword_hit(long, short, qtype, hit):
    assert metrics.keyword_hit(long, short, qtype) is hit


def test_keyword_accuracy():
    preds = ["There is no tool.", "The tool is not visible.", "The scope is advancing."]
    shorts = ["no", "no", "advancing"]
    types = ["tool_catheter_check", "tool_catheter_check", "scope_motion_type"]
    assert metrics.keyword_accuracy(preds, shorts, types) == pytest.approx(2 / 3)
    assert math.isnan(metrics.keyword_accuracy([], [], []))
    with pytest.raises(ValueError, match="length"):
        metrics.keyword_accuracy(preds, shorts[:2], types)


def test_bleu4_identical_and_partial():
    refs = ["The scope is advancing through the lumen.", "No, there is no blue dye."]
    assert metrics.bleu4(refs, refs) == pytest.approx(1.0)
    assert metrics.bleu4(["yes", "no"], ["Yes.", "no"]) == pytest.approx(1.0)  # short sentences: smoothing keeps 1
    partial = metrics.bleu4(["The scope is withdrawing from the lumen.", "No, there is no dye."], refs)
    assert 0.0 < partial < 1.0
    assert metrics.bleu4(["completely different words"], ["nothing shared here"]) == 0.0


def test_bleu4_hand_computed():
    # p1 = 5/6, p2 = 3/5, p3 = 1/4, p4 = 0/3 -> smoothed 1/(3+1); equal lengths so BP = 1.
    # BLEU = (5/6 * 3/5 * 1/4 * 1/4) ** (1/4) = (1/32) ** (1/4) = 2 ** (-5/4)
    assert metrics.bleu4(["the cat sat on the mat"], ["the cat is on the mat"]) == pytest.approx(2 ** -1.25)
    # Brevity penalty: candidate "the cat" (2) vs reference of 6 tokens: BP = exp(1 - 6/2);
    # p1 = 1, p2 = 1, p3 = p4 = 1/(0+1) (no n-grams of that order, smoothed).
    assert metrics.bleu4(["the cat"], ["the cat is on the mat"]) == pytest.approx(math.exp(-2))


def test_bleu4_rouge_reject_bad_input():
    with pytest.raises(ValueError):
        metrics.bleu4([], [])
    with pytest.raises(ValueError):
        metrics.rouge_l(["a"], ["a", "b"])


def test_rouge_l_hand_computed():
    # LCS("the scope is advancing slowly", "the scope is slowly advancing") = 4 of 5 and 5 -> F1 0.8
    assert metrics.rouge_l(["the scope is advancing slowly"], ["the scope is slowly advancing"]) == pytest.approx(0.8)
    # LCS("lesion moves up fast", "lesion drifts up") = 2; P = 2/4, R = 2/3 -> F1 = 4/7
    assert metrics.rouge_l(["lesion moves up fast"], ["lesion drifts up"]) == pytest.approx(4 / 7)
    # mean over pairs: (1 + 0) / 2
    assert metrics.rouge_l(["Same words.", "abc"], ["same words", "xyz"]) == pytest.approx(0.5)


# ---- ASR ------------------------------------------------------------------------------------


def test_whisper_normalize():
    assert metrics.whisper_normalize("Hello, World!") == "hello world"
    # EnglishTextNormalizer turns number words into digits, so "Five" and "5" compare equal.
    assert metrics.whisper_normalize("Five") == metrics.whisper_normalize("5") == "5"
    assert metrics.whisper_normalize("five to ten millimetres") == "5 to 10 millimetres"
    # Symbols are dropped and the abbreviated unit goes with them: "<5 mm" and ">5 mm" both
    # become "5", which is why transcripts are compared against `wording.speakable` text.
    assert metrics.whisper_normalize("The lesion is <5 mm.") == metrics.whisper_normalize("the lesion is >5 mm") == "the lesion is 5"


def test_wer_cer_hand_computed():
    # "is a tool visible" vs "is the tool visible": one substitution of 4 words -> WER 0.25.
    # Characters (spaces count): "a" -> "the" = 1 substitution + 2 insertions on 17 chars.
    out = metrics.wer_cer(["is the tool visible"], ["is a tool visible"])
    assert out["wer"] == pytest.approx(1 / 4)
    assert out["cer"] == pytest.approx(3 / 17)
    # Normalisation: case, punctuation and number words do not count as errors.
    assert metrics.wer_cer(["Is there five polyps?"], ["is there 5 polyps"]) == {"wer": 0.0, "cer": 0.0}
    # Corpus-level: an empty hypothesis is all deletions: (1 + 2) / (4 + 2) errors.
    assert metrics.wer_cer(["is the tool visible", "..."], ["is a tool visible", "flush now"])["wer"] == pytest.approx(0.5)


def test_wer_cer_rejects_empty_reference():
    with pytest.raises(ValueError, match="reference 1"):
        metrics.wer_cer(["a", "b"], ["a", "  "])
    with pytest.raises(ValueError, match="reference 0"):
        metrics.wer_cer(["a"], ["?!"])  # empty after normalisation
    with pytest.raises(ValueError, match="length"):
        metrics.wer_cer(["a"], ["a", "b"])


def test_word_diff_html():
    out = metrics.word_diff_html("is a tool visible <now>", "is the tool visible <now> there")
    assert "<span" in out
    assert 'title="substitution">a&rarr;the</span>' in out
    assert 'title="insertion">there</span>' in out
    deletion = metrics.word_diff_html("flush now", "flush")
    assert 'title="deletion">now</span>' in deletion
    raw = metrics.word_diff_html("a <b>", "a <c>", normalize=False)
    assert "&lt;b&gt;&rarr;&lt;c&gt;" in raw and "<b>" not in raw  # escaped


# ---- statistics -----------------------------------------------------------------------------


def test_bootstrap_ci_properties():
    rng = np.random.default_rng(1)
    small = rng.random(50) < 0.7
    large = rng.random(5000) < 0.7
    a = metrics.bootstrap_ci(small, seed=3)
    assert a == metrics.bootstrap_ci(small.tolist(), seed=3)  # deterministic, lists or arrays
    assert metrics.bootstrap_ci(small, seed=4) != a
    assert a[0] <= small.mean() <= a[1]
    b = metrics.bootstrap_ci(large, seed=3)
    assert b[0] <= large.mean() <= b[1]
    assert (b[1] - b[0]) < (a[1] - a[0])
    assert metrics.bootstrap_ci([1] * 20) == (1.0, 1.0)
    assert metrics.bootstrap_ci([0, 0, 0]) == (0.0, 0.0)
    lo, hi = metrics.bootstrap_ci([])
    assert math.isnan(lo) and math.isnan(hi)
    narrow = metrics.bootstrap_ci(small, seed=3, level=0.5)
    assert a[0] <= narrow[0] <= narrow[1] <= a[1]
    with pytest.raises(ValueError):
        metrics.bootstrap_ci(small, level=1.5)


def test_accuracy_with_ci():
    res = metrics.accuracy_with_ci([True, False, True, True])
    assert res["accuracy"] == 0.75 and res["n"] == 4
    assert len(res["ci95"]) == 2 and res["ci95"][0] <= 0.75 <= res["ci95"][1]
    empty = metrics.accuracy_with_ci([])
    assert empty["n"] == 0 and math.isnan(empty["accuracy"])


def test_accuracy_breakdown():
    df = pd.DataFrame({
        "question_type": ["b", "a", "b", "a", "a", "b"],
        "template": ["in", "in", "out", "out", "in", "in"],
        "correct": [1, 0, 1, 1, 1, 0],
    })
    out = metrics.accuracy_breakdown(df, "question_type")
    assert list(out.index) == ["a", "b"]
    assert list(out.columns) == ["accuracy", "ci_lo", "ci_hi", "n"]
    assert out.loc["a", "accuracy"] == pytest.approx(2 / 3) and out.loc["a", "n"] == 3
    assert (out["ci_lo"] <= out["accuracy"]).all() and (out["accuracy"] <= out["ci_hi"]).all()
    two = metrics.accuracy_breakdown(df.rename(columns={"correct": "ok"}), ["question_type", "template"], correct_col="ok")
    assert list(two.index) == [("a", "in"), ("a", "out"), ("b", "in"), ("b", "out")]
    assert two.loc[("b", "in"), "accuracy"] == 0.5 and two.loc[("b", "in"), "n"] == 2


# ---- baselines ------------------------------------------------------------------------------


def test_majority_answers_and_predictions():
    train = pd.DataFrame({
        "question_type": ["lighting_mode"] * 3 + ["scope_motion"] * 4,
        "short_answer": ["NBI", "narrow band imaging", "white light", "yes", "no", "No.", "yes"],
    })
    maj = metrics.majority_answers(train)
    assert maj == {"lighting_mode": "nbi", "scope_motion": "no"}  # 2-2 tie -> alphabetical
    test = pd.DataFrame({"question_type": ["scope_motion", "lighting_mode"]})
    assert metrics.majority_predictions(test, maj) == ["no", "nbi"]
    with pytest.raises(KeyError, match="lesion_site"):
        metrics.majority_predictions(pd.DataFrame({"question_type": ["lesion_site"]}), maj)


# ---- balanced metrics -----------------------------------------------------------------------


def _balance_frame():
    truth = ["yes", "no", "no", "no"] + ["forceps", "snare", "catheter"] + ["white light", "white light"]
    types = ["flush_action"] * 4 + ["tool_identification"] * 3 + ["lighting_mode"] * 2
    return pd.DataFrame({"question_type": types, "short_answer": truth})


def test_balanced_accuracy_constant_is_one_over_k_and_perfect_is_one():
    truth = ["forceps", "snare", "catheter", "forceps"]
    assert metrics.balanced_accuracy(["forceps"] * 4, truth, "tool_identification") == pytest.approx(1 / 3)
    assert metrics.balanced_accuracy(truth, truth, "tool_identification") == 1.0
    assert metrics.balanced_accuracy(["No."] * 3, ["yes", "no", "no"], "flush_action") == pytest.approx(0.5)
    assert math.isnan(metrics.balanced_accuracy([], [], "flush_action"))


def test_per_type_balance_and_summary():
    df = _balance_frame()
    majority = {"flush_action": "no", "tool_identification": "forceps", "lighting_mode": "white light"}
    df["prediction"] = metrics.majority_predictions(df, majority)
    table = metrics.per_type_balance(df, majority)
    assert table.loc["flush_action", "balanced_accuracy"] == pytest.approx(0.5)
    assert table.loc["tool_identification", "balanced_accuracy"] == pytest.approx(1 / 3)
    assert not table.loc["lighting_mode", "varying"]
    assert table["distinct_predictions"].tolist() == [1, 1, 1]
    assert not table["beats_majority"].any()
    s = metrics.balanced_summary(df, majority)
    assert s["macro_balanced_accuracy"] == pytest.approx((0.5 + 1 / 3) / 2)
    assert s["varying_types"] == 2 and s["types_beating_majority"] == 0 and s["constant_types"] == 3
    assert s["discriminative_prior_floor"] == pytest.approx((3 + 1) / 7)
    df["prediction"] = df["short_answer"]
    s = metrics.balanced_summary(df, majority)
    assert s["macro_balanced_accuracy"] == 1.0 and s["accuracy"] == 1.0
    assert s["types_beating_majority"] == 2  # lighting_mode: the majority is already perfect
    from surgvqa import stats  # the interval of the macro (clustered, class set fixed)

    cells = stats.BalancedCells(df["question_type"], df["short_answer"])
    hits = cells.hits(df["prediction"])
    lo, hi = stats.estimate(lambda w: cells.macro(w, hits), stats.replicate_weights(range(len(df)), cells.strata, 50))["ci95"]
    assert lo == hi == 1.0


# ---- WER/CER with CIs (issue: the graft writes) ------------------------------------------------------


def test_wer_cer_ci_on_hand_made_cases():
    from surgvqa.metrics import wer_cer, wer_cer_ci

    refs = ["Is there blue dye visible?", "Five polyps, near the cecum.", "withdraw the scope slowly"]
    hyps = ["is there blue dye visible", "5 polyps near the caecum", "withdraw scope slowly now"]
    r = wer_cer_ci(hyps, refs, n_boot=200)
    # Whisper normalisation: case, punctuation and "Five" -> "5" are not errors; "caecum" vs "cecum" is one
    # substitution, the third line has one deletion and one insertion: 3 errors over 5 + 5 + 4 = 14 words
    assert r["wer"] == pytest.approx(3 / 14)
    assert r["wer"] == pytest.approx(wer_cer(hyps, refs)["wer"]) and r["cer"] == pytest.approx(wer_cer(hyps, refs)["cer"])
    assert r["wer_ci95"][0] <= r["wer"] <= r["wer_ci95"][1] and r["n"] == 3
    perfect = wer_cer_ci(refs, refs, n_boot=50)
    assert perfect["wer"] == 0 == perfect["cer"] and perfect["wer_ci95"] == [0.0, 0.0]
    empty = wer_cer_ci(["", "", ""], refs, n_boot=50)  # every word deleted
    assert empty["wer"] == 1.0 and empty["cer"] == 1.0


def test_wer_cer_ci_refuses_an_empty_reference():
    from surgvqa.metrics import wer_cer_ci

    with pytest.raises(ValueError, match="reference 1"):
        wer_cer_ci(["a", "b"], ["some words", "uh um"])  # fillers normalise away
