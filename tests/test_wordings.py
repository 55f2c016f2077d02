"""The held-out and val wording families: new to every training pool, and really new (more than one word)."""
from __future__ import annotations

import pytest

from surgvqa import wording
from surgvqa.answers import normalize_short
from surgvqa.schema import QUESTION_TYPES


def test_word_distance_counts_words_not_letters():
    assert wording.word_distance("Is the scope moving?", "is the scope moving") == 0
    assert wording.word_distance("Is the scope moving?", "Is the camera moving?") == 1
    assert wording.word_distance("Is the scope moving?", "Is the scope moving now?") == 1
    assert wording.word_distance("a b c", "c b a") == 2


def test_within_one_word_agrees_with_the_edit_distance():
    cases = ["Is the scope moving?", "is the scope moving", "Is the camera moving?", "Is the scope moving now?",
             "the scope moving", "Is scope the moving?", "Is the moving?", "Is the scope", "a b c", "c b a", "", "a"]
    for a in cases:
        for b in cases:
            assert wording.within_one_word(wording._words(a), wording._words(b)) == (wording.word_distance(a, b) <= 1), (a, b)


@pytest.mark.parametrize("family", ["VAL_WORDINGS", "HELDOUT_WORDINGS"])
def test_every_type_has_new_wordings_more_than_one_word_from_any_training_wording(family):
    words = getattr(wording, family)
    assert set(words) == set(QUESTION_TYPES)
    for qtype, new in words.items():
        assert len(new) >= 3 and len(set(map(normalize_short, new))) == len(new), qtype
        for w in new:
            closest = min(wording.word_distance(w, t) for ts in map(wording.training_wordings, QUESTION_TYPES) for t in ts)
            assert closest > 1, (qtype, w)


def test_the_two_families_do_not_share_a_wording():
    val = [w for ws in wording.VAL_WORDINGS.values() for w in ws]
    held = [w for ws in wording.HELDOUT_WORDINGS.values() for w in ws]
    assert min(wording.word_distance(a, b) for a in val for b in held) > 1


def test_the_tokenizer_corpus_never_reads_a_new_wording():
    corpus = {normalize_short(t) for t in wording.domain_texts(0, 10)}
    for ws in (*wording.VAL_WORDINGS.values(), *wording.HELDOUT_WORDINGS.values()):
        assert not corpus & {normalize_short(w) for w in ws}


def test_out_wordings_start_with_the_paraphrases_then_add_generated_ones_far_from_the_new_families():
    from surgvqa.schema import QUESTION_TYPES

    held = [w for ws in (*wording.VAL_WORDINGS.values(), *wording.HELDOUT_WORDINGS.values()) for w in ws]
    for qtype in QUESTION_TYPES:
        assert wording.out_wordings(qtype, 3) == wording.OUT_TEMPLATES[qtype]
        many = wording.out_wordings(qtype, 40)
        assert len(many) == 40 and len(set(many)) == 40 and many[:3] == wording.OUT_TEMPLATES[qtype]
        generated = wording.generated_wordings(qtype)
        assert len(generated) >= 100 and generated == wording.generated_wordings(qtype)  # a fixed order
        for w in generated[:40]:
            assert w[0].isupper() and w[-1] in "?." and "  " not in w
            assert min(wording.word_distance(w, h) for h in held) > 1, w


def test_more_out_wordings_change_only_the_out_rows_wordings():
    from surgvqa import synthetic

    few, _ = synthetic.generate(0, 1, 3, frame_size=24)
    many, _ = synthetic.generate(0, 1, 3, frame_size=24, out_wordings=40)
    assert few["in"] == many["in"]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "question"} for r in rows]  # noqa: E731
    assert strip(few["out"]) == strip(many["out"])
    assert {r["question"] for r in few["out"]} <= {w for ws in wording.OUT_TEMPLATES.values() for w in ws}
    assert len({r["question"] for r in many["out"]}) > len({r["question"] for r in few["out"]})
