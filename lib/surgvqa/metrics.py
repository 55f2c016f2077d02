"""Evaluation metrics: closed-vocabulary short answers, long answers, ASR, bootstrap statistics.

Short answers are compared by `answers.exact_match` (canonical closed-vocabulary forms, whole
strings, never substrings). Long answers are scored by a whole-phrase keyword
match, plus corpus BLEU-4 and ROUGE-L implemented here (no nltk / sacrebleu). ASR uses Whisper's
English text normaliser and jiwer. Everything is a pure function of its inputs.
"""
from __future__ import annotations

import functools
import html
import math
import re
from collections import Counter
from typing import Any, Iterable, Sequence

import jiwer
import numpy as np
import pandas as pd

from .answers import answer_phrases, canonical_answer, clean_text, exact_match, normalize_short

__all__ = [
    "keyword_hit",
    "keyword_accuracy",
    "bleu4",
    "rouge_l",
    "whisper_normalize",
    "wer_cer",
    "word_diff_html",
    "bootstrap_ci",
    "accuracy_with_ci",
    "accuracy_breakdown",
    "majority_answers",
    "majority_predictions",
    "balanced_accuracy",
    "per_type_balance",
    "balanced_summary",
]


# ---- long answers ---------------------------------------------------------------------------

# Characters that continue a token for boundary purposes: "-" (so "left" is not inside
# "lower-left"), "<"/">" and "." (only decimal points survive normalisation).
_TOKEN_CHARS = r"\w<>.\-"


def keyword_hit(prediction_long: str, short_answer: str, question_type: str) -> bool:
    """Whether the canonical short answer, or one of its synonyms, is a whole phrase of the long
    prediction (both normalised). Token boundaries only: "no" does not hit "not" or "now", and
    "left" does not hit "lower-left"."""
    text = normalize_short(prediction_long)
    for phrase in answer_phrases(short_answer, question_type):
        if phrase and re.search(rf"(?<![{_TOKEN_CHARS}]){re.escape(phrase)}(?![{_TOKEN_CHARS}])", text):
            return True
    return False


def _check_lengths(**seqs: Sequence[Any]) -> int:
    lengths = {k: len(v) for k, v in seqs.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"length mismatch: {lengths}")
    return next(iter(lengths.values()))


def keyword_accuracy(preds: Sequence[str], shorts: Sequence[str], types: Sequence[str]) -> float:
    """Fraction of `keyword_hit`s; NaN for no rows (like `bootstrap_ci`)."""
    n = _check_lengths(preds=preds, shorts=shorts, types=types)
    if n == 0:
        return float("nan")
    return sum(keyword_hit(p, s, t) for p, s, t in zip(preds, shorts, types)) / n


def _tokens(text: str) -> list[str]:
    """Whitespace tokens after normalize_short-style cleaning (articles kept: they are words)."""
    return clean_text(text).split()


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu4(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU-4 (one reference per prediction), uniform weights, brevity penalty, in [0, 1].

    Smoothing: for n > 1 an order with zero clipped matches gets precision 1 / (count + 1)
    (add-one on numerator and denominator), so one missing 4-gram order does not zero the whole
    corpus; zero unigram matches still give 0.
    """
    if _check_lengths(predictions=predictions, references=references) == 0:
        raise ValueError("bleu4 needs at least one prediction")
    matches, totals = [0] * 4, [0] * 4
    c_len = r_len = 0
    for pred, ref in zip(predictions, references):
        p, r = _tokens(pred), _tokens(ref)
        c_len += len(p)
        r_len += len(r)
        for n in range(1, 5):
            pc, rc = _ngrams(p, n), _ngrams(r, n)
            matches[n - 1] += sum(min(c, rc[g]) for g, c in pc.items())
            totals[n - 1] += sum(pc.values())
    if c_len == 0 or matches[0] == 0:
        return 0.0
    log_p = 0.0
    for n in range(4):
        m, t = matches[n], totals[n]
        log_p += math.log(m / t if m > 0 else 1.0 / (t + 1)) / 4
    bp = 1.0 if c_len > r_len else math.exp(1.0 - r_len / c_len)
    return float(min(1.0, bp * math.exp(log_p)))


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean over pairs of the LCS-based F1 (beta = 1) on `_tokens`; two empty texts score 1."""
    n = _check_lengths(predictions=predictions, references=references)
    if n == 0:
        raise ValueError("rouge_l needs at least one prediction")
    scores = []
    for pred, ref in zip(predictions, references):
        p, r = _tokens(pred), _tokens(ref)
        if not p and not r:
            scores.append(1.0)
            continue
        lcs = _lcs(p, r)
        scores.append(0.0 if lcs == 0 else 2 * lcs / (len(p) + len(r)))  # = 2PR / (P + R)
    return float(np.mean(scores))


# ---- ASR ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _whisper_normalizer() -> Any:
    # Imported lazily: transformers is heavy. The hub's normalizer.json (British -> American
    # spellings) is not available offline, so the spelling mapping is empty.
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer({})


def whisper_normalize(text: str) -> str:
    """Whisper's English normaliser: lower-case, punctuation out, number words to digits ("Five" -> "5")."""
    return _whisper_normalizer()(str(text))


def wer_cer(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus WER and CER on whisper-normalised text: summed edit errors over summed reference lengths
    (`edit_counts`, what jiwer's corpus figures are).

    A reference that is (or normalises to) empty raises ValueError naming its index, since the
    error rate has no denominator for it; an empty hypothesis is fine (all deletions).
    """
    counts = edit_counts(hypotheses, references)
    return {"wer": float(counts["word_errors"].sum() / counts["words"].sum()),
            "cer": float(counts["char_errors"].sum() / counts["chars"].sum())}


def edit_counts(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """Per utterance, on whisper-normalised text: word and character edit errors (S + D + I) and
    reference lengths — the parts corpus WER/CER are sums of (what a bootstrap over utterances resamples)."""
    if _check_lengths(hypotheses=hypotheses, references=references) == 0:
        raise ValueError("WER/CER needs at least one reference")
    refs = [whisper_normalize(r) for r in references]
    hyps = [whisper_normalize(h) for h in hypotheses]
    out = {k: np.zeros(len(refs), dtype=np.int64) for k in ("word_errors", "words", "char_errors", "chars")}
    for i, (r, h) in enumerate(zip(refs, hyps)):
        if not r.strip():
            raise ValueError(f"reference {i} is empty after normalisation: {references[i]!r}")
        w = jiwer.process_words(r, h)
        c = jiwer.process_characters(r, h)
        out["word_errors"][i] = w.substitutions + w.deletions + w.insertions
        out["words"][i] = w.substitutions + w.deletions + w.hits
        out["char_errors"][i] = c.substitutions + c.deletions + c.insertions
        out["chars"][i] = c.substitutions + c.deletions + c.hits
    return out


def wer_cer_ci(hypotheses: Sequence[str], references: Sequence[str], n_boot: int = 1000, seed: int = 0,
               level: float = 0.95) -> dict[str, Any]:
    """Corpus WER and CER with percentile bootstrap CIs over utterances (each resample re-sums errors
    and reference lengths, so long utterances weigh as they do in the corpus figure).

    {"wer", "wer_ci95": [lo, hi], "cer", "cer_ci95", "n"}; the point values equal `wer_cer`'s."""
    counts = edit_counts(hypotheses, references)
    n = len(counts["words"])
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    out: dict[str, Any] = {"n": n}
    for name, errors, length in (("wer", "word_errors", "words"), ("cer", "char_errors", "chars")):
        e, l = counts[errors], counts[length]
        boot = e[idx].sum(1) / np.maximum(l[idx].sum(1), 1)
        lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
        out[name] = float(e.sum() / l.sum())
        out[f"{name}_ci95"] = [float(lo), float(hi)]
    return out


_DIFF_STYLE = {
    "substitute": "background:#ffd",
    "delete": "background:#fdd;text-decoration:line-through",
    "insert": "background:#dfd",
}


def word_diff_html(reference: str, hypothesis: str, normalize: bool = True) -> str:
    """An HTML snippet of the word alignment (jiwer.process_words), for error analysis.

    Substitutions show `ref→hyp` on yellow, deletions struck through on red, insertions on
    green; all text is HTML-escaped. `normalize` applies `whisper_normalize` first (what WER sees).
    """
    ref = whisper_normalize(reference) if normalize else str(reference)
    hyp = whisper_normalize(hypothesis) if normalize else str(hypothesis)
    if not ref.split():
        raise ValueError(f"empty reference: {reference!r}")
    out = jiwer.process_words(ref, hyp)
    r_words, h_words = out.references[0], out.hypotheses[0]
    parts = []
    for ch in out.alignments[0]:
        r = html.escape(" ".join(r_words[ch.ref_start_idx:ch.ref_end_idx]))
        h = html.escape(" ".join(h_words[ch.hyp_start_idx:ch.hyp_end_idx]))
        if ch.type == "equal":
            parts.append(r)
        elif ch.type == "substitute":
            parts.append(f'<span style="{_DIFF_STYLE["substitute"]}" title="substitution">{r}&rarr;{h}</span>')
        elif ch.type == "delete":
            parts.append(f'<span style="{_DIFF_STYLE["delete"]}" title="deletion">{r}</span>')
        else:
            parts.append(f'<span style="{_DIFF_STYLE["insert"]}" title="insertion">{h}</span>')
    return '<span style="font-family:monospace">' + " ".join(parts) + "</span>"


# ---- statistics -----------------------------------------------------------------------------


def _as_array(values: Iterable[Any]) -> np.ndarray:
    if not hasattr(values, "__len__"):  # a generator
        values = list(values)
    return np.asarray(values, dtype=float).ravel()


def bootstrap_ci(correct: Iterable[Any], n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (usually of 0/1 correctness); (nan, nan) when empty.

    Deterministic given `seed`. Resamples are drawn in chunks so memory stays bounded for large n.
    """
    x = _as_array(correct)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    n = x.size
    if n == 0:
        return (float("nan"), float("nan"))
    if not np.all(np.isfinite(x)):
        raise ValueError("bootstrap_ci: non-finite values")
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // n)
    means = np.concatenate([
        x[rng.integers(0, n, size=(min(chunk, n_boot - s), n))].mean(axis=1)
        for s in range(0, n_boot, chunk)
    ])
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return (float(lo), float(hi))


def accuracy_with_ci(correct: Iterable[Any], **kw: Any) -> dict[str, Any]:
    """{"accuracy", "ci95": [lo, hi], "n"}; `kw` goes to `bootstrap_ci`."""
    x = _as_array(correct)
    lo, hi = bootstrap_ci(x, **kw)
    return {"accuracy": float(x.mean()) if x.size else float("nan"), "ci95": [lo, hi], "n": int(x.size)}


def accuracy_breakdown(df: pd.DataFrame, by: str | list[str], correct_col: str = "correct",
                       **kw: Any) -> pd.DataFrame:
    """Accuracy with bootstrap CI per group: columns accuracy, ci_lo, ci_hi, n; index = sorted groups."""
    keys = [by] if isinstance(by, str) else list(by)
    rows, index = [], []
    for key, g in df.groupby(keys, sort=True):
        res = accuracy_with_ci(g[correct_col].to_numpy(), **kw)
        rows.append({"accuracy": res["accuracy"], "ci_lo": res["ci95"][0],
                     "ci_hi": res["ci95"][1], "n": res["n"]})
        index.append(key[0] if isinstance(by, str) else key)
    idx = (pd.Index(index, name=by) if isinstance(by, str)
           else pd.MultiIndex.from_tuples(index, names=keys))
    return pd.DataFrame(rows, index=idx, columns=["accuracy", "ci_lo", "ci_hi", "n"])


# ---- baselines ------------------------------------------------------------------------------


def majority_answers(train_df: pd.DataFrame) -> dict[str, str]:
    """Most frequent canonical short answer per question type (ties: alphabetically first)."""
    counts: dict[str, Counter] = {}
    for qtype, short in zip(train_df["question_type"], train_df["short_answer"]):
        counts.setdefault(qtype, Counter())[canonical_answer(short, qtype)] += 1
    return {t: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for t, c in sorted(counts.items())}


def majority_predictions(test_df: pd.DataFrame, majority: dict[str, str]) -> list[str]:
    """The training majority answer for each test row's type; KeyError naming an unseen type."""
    out = []
    for qtype in test_df["question_type"]:
        if qtype not in majority:
            raise KeyError(f"question type {qtype!r} has no majority answer (absent from training)")
        out.append(majority[qtype])
    return out


# ---- balanced metrics (blindness shows as a constant answer per type) --------------------------


def balanced_accuracy(predictions: Sequence[str], truths: Sequence[str], question_type: str) -> float:
    """Mean per-class recall over the classes present in `truths` (canonical answers).

    A constant predictor scores 1/K on a type with K classes in the truth; a perfect one 1.0.
    NaN when there are no rows.
    """
    _check_lengths(predictions=predictions, truths=truths)
    if not len(truths):
        return float("nan")
    pred = [canonical_answer(p, question_type) for p in predictions]
    true = [canonical_answer(t, question_type) for t in truths]
    recalls = []
    for cls in sorted(set(true)):
        idx = [i for i, t in enumerate(true) if t == cls]
        recalls.append(sum(pred[i] == cls for i in idx) / len(idx))
    return float(np.mean(recalls))


def per_type_balance(df: pd.DataFrame, majority: dict[str, str], pred_col: str = "prediction",
                     truth_col: str = "short_answer") -> pd.DataFrame:
    """Per question type: n, classes in the truth, exact accuracy, balanced accuracy, the accuracy of
    the training-majority answer, the test-prior floor (best constant answer on these rows), the
    number of distinct canonical predictions and the most frequent prediction's share.

    `varying` marks the types whose truth takes more than one value (the discriminative subset).
    """
    rows, index = [], []
    for qtype, g in df.groupby("question_type", sort=True):
        pred = [canonical_answer(p, qtype) for p in g[pred_col]]
        true = [canonical_answer(t, qtype) for t in g[truth_col]]
        counts = Counter(true)
        maj = canonical_answer(majority.get(qtype, ""), qtype) if qtype in majority else None
        pc = Counter(pred)
        rows.append({
            "n": len(true),
            "classes": len(counts),
            "varying": len(counts) > 1,
            "accuracy": float(np.mean([p == t for p, t in zip(pred, true)])),
            "balanced_accuracy": balanced_accuracy(pred, true, qtype),
            "majority_accuracy": float(np.mean([maj == t for t in true])) if maj is not None else float("nan"),
            "prior_floor": max(counts.values()) / len(true),
            "distinct_predictions": len(pc),
            "top_prediction": pc.most_common(1)[0][0],
            "top_prediction_share": pc.most_common(1)[0][1] / len(pred),
        })
        index.append(qtype)
    table = pd.DataFrame(rows, index=pd.Index(index, name="question_type"))
    table["beats_majority"] = table["accuracy"] > table["majority_accuracy"] + 1e-12
    return table


def balanced_summary(df: pd.DataFrame, majority: dict[str, str], pred_col: str = "prediction",
                     truth_col: str = "short_answer") -> dict[str, Any]:
    """The issue-10 targets in one dict (see `per_type_balance`):

    macro_balanced_accuracy (mean over varying types), accuracy vs majority_accuracy (all rows),
    discriminative accuracy vs prior_floor (rows of varying types), types_beating_majority.
    """
    table = per_type_balance(df, majority, pred_col, truth_col)
    vary = table[table["varying"]]
    correct = [exact_match(p, t, q) for p, t, q in zip(df[pred_col], df[truth_col], df["question_type"])]
    maj = [exact_match(majority.get(q, ""), t, q) for t, q in zip(df[truth_col], df["question_type"])]
    in_vary = df["question_type"].isin(vary.index).to_numpy()
    n_vary = int(vary["n"].sum())
    return {
        "rows": int(len(df)),
        "macro_balanced_accuracy": float(vary["balanced_accuracy"].mean()) if len(vary) else float("nan"),
        "varying_types": int(len(vary)),
        "accuracy": float(np.mean(correct)) if correct else float("nan"),
        "majority_accuracy": float(np.mean(maj)) if maj else float("nan"),
        "discriminative_accuracy": float(np.asarray(correct)[in_vary].mean()) if n_vary else float("nan"),
        "discriminative_prior_floor": float((vary["prior_floor"] * vary["n"]).sum() / n_vary) if n_vary else float("nan"),
        "types_beating_majority": int(table["beats_majority"].sum()),
        "types": int(len(table)),
        "constant_types": int((table["distinct_predictions"] == 1).sum()),
    }
