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
