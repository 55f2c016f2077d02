"""The one answer normaliser: short answers to their canonical closed-vocabulary form.

Short answers are compared after `normalize_short` and a small, conservative per-type synonym
map (`SYNONYMS`), always as whole strings — never substrings. Data summaries (answers outside the
vocabulary), leakage checks and scoring all use these functions.
"""
from __future__ import annotations

import functools
import re

from .schema import ANSWER_VOCAB


_ARTICLES = frozenset({"a", "an", "the"})

_APOSTROPHES = re.compile(r"['\u2019`]")

# Anything that is not a word char, whitespace or one of the meaningful symbols.
_PUNCT = re.compile(r"[^\w\s<>.\-]|_")

_LONE_HYPHEN = re.compile(r"(?<!\w)-|-(?!\w)")  # keep "5-10", "lower-left"

_LONE_DOT = re.compile(r"(?<!\d)\.|\.(?!\d)")  # keep "2.5"

_CMP_SPACE = re.compile(r"([<>])\s+(?=\d)")  # "< 5" -> "<5"


def clean_text(text: str) -> str:
    """Lower-case and strip punctuation (keeping `<`, `>`, inner `-`, decimal `.`); keeps articles."""
    t = _APOSTROPHES.sub("", str(text).strip().lower())
    t = _PUNCT.sub(" ", t)
    t = _LONE_HYPHEN.sub(" ", t)
    t = _LONE_DOT.sub(" ", t)
    t = _CMP_SPACE.sub(r"\1", t)
    return " ".join(t.split()).rstrip(".")


def normalize_short(text: str) -> str:
    """Normalise a short answer: "The Lower-Left." -> "lower-left"; "<5" and "5-10" survive.

    Lower-cases, removes punctuation except `<`, `>`, `-` between word characters and `.` inside
    numbers, drops the articles a/an/the as whole words, collapses whitespace and drops a
    trailing full stop.
    """
    return " ".join(w for w in clean_text(text).split() if w not in _ARTICLES).rstrip(".")


# Normalised variant -> canonical normalised vocabulary answer, per question type. Kept small on
# purpose: every entry is a spelling / unit / spoken form of exactly one vocabulary answer
# (the spoken forms follow `synthetic._SPEAK`). Yes/no types have no synonyms: "yeah" or
# "yes there is" are not answers from the closed vocabulary and are scored wrong.
SYNONYMS: dict[str, dict[str, str]] = {
    "lighting_mode": {
        "white-light": "white light", "white": "white light", "wl": "white light",
        "wli": "white light", "white light imaging": "white light",
        "narrow band imaging": "nbi", "narrow-band imaging": "nbi", "narrowband imaging": "nbi",
    },
    "fluid_occlusion_level": {"partially": "partial", "completely": "complete"},
    "scope_motion_type": {
        "withdrawal": "withdrawing", "withdraw": "withdrawing", "retracting": "withdrawing",
        "advance": "advancing", "forward": "advancing",
        "static": "stable", "still": "stable",
        "sideways": "lateral",
    },
    "tool_identification": {
        "biopsy forceps": "forceps", "polypectomy snare": "snare", "injection catheter": "catheter",
    },
    "lesion_histology_extended": {
        "adenomatous": "adenoma", "sessile serrated lesion": "sessile serrated",
        "sessile-serrated": "sessile serrated",
    },
    "lesion_size_range": {
        **{v: "<5" for v in (
            "<5 mm", "<5mm", "under 5", "under 5 mm", "less than 5", "less than 5 mm",
            "under 5 millimetres", "under 5 millimeters")},
        **{v: "5-10" for v in (
            "5-10 mm", "5-10mm", "5 to 10", "5 to 10 mm", "5 to 10 millimetres", "5 to 10 millimeters")},
        **{v: ">10" for v in (
            ">10 mm", ">10mm", "over 10", "over 10 mm", "more than 10", "more than 10 mm",
            "over 10 millimetres", "over 10 millimeters")},
    },
    "lesion_site": {
        "caecum": "cecum", "ascending colon": "ascending", "transverse colon": "transverse",
        "descending colon": "descending", "sigmoid": "sigma", "sigmoid colon": "sigma",
    },
    "lesion_screen_position": {
        f"{v}{sep}{h}": f"{c}-{h}"
        for c, v in (("upper", "upper"), ("upper", "top"), ("lower", "lower"), ("lower", "bottom"))
        for sep in (" ", "-") for h in ("left", "right")
        if f"{v}{sep}{h}" != f"{c}-{h}"
    },
    "lesion_motion_direction": {
        "upward": "up", "upwards": "up", "downward": "down", "downwards": "down",
        "static": "stable", "still": "stable",
    },
}


def _check_type(question_type: str) -> None:
    if question_type not in ANSWER_VOCAB:
        raise KeyError(f"unknown question type {question_type!r}")


@functools.lru_cache(maxsize=None)
def _canonical_vocab(question_type: str) -> frozenset[str]:
    return frozenset(normalize_short(a) for a in ANSWER_VOCAB[question_type])


def canonical_answer(text: str, question_type: str) -> str:
    """`normalize_short`, then that type's synonym map as an exact whole-string lookup.

    Never substring / prefix matching: the seed notebooks scored `short_answer in prediction`,
    so "no" matched "not" and "left" matched "lower-left".
    """
    _check_type(question_type)
    norm = normalize_short(text)
    return SYNONYMS.get(question_type, {}).get(norm, norm)


def exact_match(prediction: str, truth: str, question_type: str) -> bool:
    """Canonical prediction equals canonical truth ("No." == "no"; "not" != "no")."""
    return canonical_answer(prediction, question_type) == canonical_answer(truth, question_type)


def in_vocabulary(prediction: str, question_type: str) -> bool:
    """Whether the canonical prediction is one of the type's closed vocabulary answers."""
    return canonical_answer(prediction, question_type) in _canonical_vocab(question_type)


def another_types_answer(prediction: str, question_type: str) -> bool:
    """Whether the prediction is not an answer of its own type but is one of another type's (the model answered
    another question: "forceps" to "is the scope moving?")."""
    return not in_vocabulary(prediction, question_type) and any(
        in_vocabulary(prediction, other) for other in ANSWER_VOCAB if other != question_type)


def answer_phrases(short_answer: str, question_type: str) -> set[str]:
    """The canonical answer and every synonym that maps to it (the phrases a long answer may use)."""
    canon = canonical_answer(short_answer, question_type)
    return {canon} | {v for v, c in SYNONYMS.get(question_type, {}).items() if c == canon}
