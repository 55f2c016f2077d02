"""Statistics a reviewer accepts: clustered bootstrap intervals, paired differences and per-type tests.

Rows of one clip are correlated (about 20 questions per clip; in a video, its clips too), so an interval that
resamples rows overstates precision. Every replicate here resamples **clusters** with replacement: clips, or videos
where there are at least `MIN_VIDEOS` of them (the highest level with enough units). A replicate is a matrix of row
weights (how often each row's cluster was drawn), and every statistic is recomputed with those weights:

- rows of one cluster move together, so the interval reflects how many clips (videos) were seen;
- macro balanced accuracy resamples within each (type, class) cell (`BalancedCells.strata`), so every replicate
  keeps the truth's class set: row resampling lost rare classes and dropped the types left with one, which pushed
  the value up (the majority baseline's interval sat above its own point);
- two systems scored on the same rows share the replicates, so their difference is **paired**: a system against
  itself differs by exactly 0 in every replicate.

A claim "A beats B by more than m" is shown only when the paired interval's lower end clears m; per type, "beats
the majority answer" is a one-sided paired bootstrap test at 5%, Holm-adjusted across the types.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .answers import canonical_answer

MIN_VIDEOS = 6  # fewer distinct videos than this: clusters are clips (a video level of 2 says little)
LEVEL = 0.95
ALPHA = 0.05


def clusters_of(clips: Sequence, videos: Sequence | None = None, min_videos: int = MIN_VIDEOS) -> np.ndarray:
    """The resampling unit of each row: its video where the rows span at least `min_videos` videos, else its clip."""
    if videos is not None and len(set(videos)) >= min_videos:
        return np.asarray(videos, dtype=str)
    return np.asarray(clips, dtype=str)


def replicate_weights(clusters: Sequence, strata: Sequence | None = None, n_boot: int = 1000,
                      seed: int = 0) -> np.ndarray:
    """(n_boot, rows) bootstrap row weights: within each stratum (all rows by default), its clusters are drawn with
    replacement as many times as it has clusters, and a row weighs as often as its cluster was drawn. Pass a row
    index as `clusters` for the plain row bootstrap."""
    clusters = np.asarray(clusters, dtype=str)
    strata = np.zeros(len(clusters), dtype=int) if strata is None else np.asarray(strata, dtype=str)
    rng = np.random.default_rng(seed)
    weights = np.zeros((n_boot, len(clusters)))
    for stratum in np.unique(strata):
        rows = np.flatnonzero(strata == stratum)
        _, which = np.unique(clusters[rows], return_inverse=True)
        k = which.max() + 1
        weights[:, rows] = rng.multinomial(k, np.full(k, 1.0 / k), size=n_boot)[:, which]
    return weights


def weighted_mean(weights: np.ndarray, values: Sequence[float]) -> np.ndarray:
    """Mean of `values` under each row of `weights` ((rows,) -> scalar, (B, rows) -> (B,))."""
    values = np.asarray(values, dtype=float)
    return (weights @ values) / weights.sum(-1)


class BalancedCells:
    """The (type, class) cells of a set of scored rows, for macro balanced accuracy under any row weights.

    The class set is the truth's, fixed once: a type whose truth has one class is left out (it cannot tell a
    system that sees from one that does not), the others average their classes' recalls."""

    def __init__(self, types: Sequence[str], truths: Sequence[str]):
        self.types = np.asarray(types, dtype=str)
        self.truths = np.array([canonical_answer(t, q) for t, q in zip(truths, self.types)], dtype=str)
        self.cells: dict[str, list[np.ndarray]] = {}
        for qtype in sorted(set(self.types)):
            in_type = self.types == qtype
            classes = sorted(set(self.truths[in_type]))
            if len(classes) > 1:
                self.cells[qtype] = [np.flatnonzero(in_type & (self.truths == c)) for c in classes]

    @property
    def strata(self) -> np.ndarray:
        """Each row's (type, class) cell, the stratum its replicates are drawn within (types of one class: one
        stratum each; they do not enter the macro average)."""
        return np.char.add(np.char.add(self.types, "|"), self.truths)

    def hits(self, predictions: Sequence[str]) -> np.ndarray:
        """1.0 where the canonical prediction is the canonical truth."""
        pred = np.array([canonical_answer(p, q) for p, q in zip(predictions, self.types)], dtype=str)
        return (pred == self.truths).astype(float)

    def per_type(self, weights: np.ndarray, hits: np.ndarray) -> dict[str, np.ndarray]:
        """Balanced accuracy of each varying type under `weights` ((rows,) or (B, rows))."""
        return {qtype: np.mean([weighted_mean(weights[..., cell], hits[cell]) for cell in cells], axis=0)
                for qtype, cells in self.cells.items()}

    def macro(self, weights: np.ndarray, hits: np.ndarray) -> np.ndarray:
        per = self.per_type(weights, hits)
        return np.mean(list(per.values()), axis=0) if per else np.full(weights.shape[:-1], np.nan)


def interval(replicates: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates."""
    alpha = (1 - level) / 2
    lo, hi = np.quantile(np.asarray(replicates, dtype=float), [alpha, 1 - alpha])
    return (float(lo), float(hi))


def estimate(statistic: Callable[[np.ndarray], np.ndarray], weights: np.ndarray, level: float = LEVEL) -> dict:
    """`statistic(row weights)` at equal weights, with its interval over the replicate weights."""
    point = float(statistic(np.ones(weights.shape[-1])))
    return {"value": point, "ci95": interval(statistic(weights), level)}


def paired_difference(a: Callable[[np.ndarray], np.ndarray], b: Callable[[np.ndarray], np.ndarray],
                      weights: np.ndarray, margin: float = 0.0, level: float = LEVEL) -> dict:
    """a − b on the same rows and the same replicate weights; `shown` only when the interval's lower end clears
    `margin` (a "within m points" claim is the difference against −m)."""
    ones = np.ones(weights.shape[-1])
    diff = float(a(ones) - b(ones))
    lo, hi = interval(a(weights) - b(weights), level)
    return {"diff": diff, "ci95": (lo, hi), "margin": margin, "shown": bool(lo > margin)}


def one_sided_p(replicates: np.ndarray) -> float:
    """Bootstrap p-value of "the difference is > 0": the share of replicates at or below 0 (with the usual +1)."""
    replicates = np.asarray(replicates, dtype=float)
    return float((1 + np.sum(replicates <= 0)) / (1 + len(replicates)))


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm–Bonferroni adjusted p-values (monotone, capped at 1)."""
    order = sorted(pvalues, key=pvalues.get)
    adjusted, running = {}, 0.0
    for rank, key in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * pvalues[key]))
        adjusted[key] = running
    return adjusted


def beats_majority(cells: BalancedCells, hits: np.ndarray, majority_hits: np.ndarray, weights: np.ndarray,
                   alpha: float = ALPHA) -> pd.DataFrame:
    """Per varying type: balanced accuracy of the system and of the training-majority answer, their paired
    difference with its interval, the one-sided bootstrap p-value, Holm-adjusted across types, and `beats`
    (adjusted p < alpha): the one definition of "beats the majority answer" every report uses."""
    ones = np.ones(weights.shape[-1])
    system, majority = cells.per_type(ones, hits), cells.per_type(ones, majority_hits)
    reps_s, reps_m = cells.per_type(weights, hits), cells.per_type(weights, majority_hits)
    p = {t: one_sided_p(reps_s[t] - reps_m[t]) for t in cells.cells}
    adjusted = holm(p)
    rows = [{"question_type": t, "balanced_accuracy": float(system[t]), "majority_balanced": float(majority[t]),
             "diff": float(system[t] - majority[t]), "ci95": interval(reps_s[t] - reps_m[t]), "p": p[t],
             "p_holm": adjusted[t], "beats": adjusted[t] < alpha} for t in cells.cells]
    return pd.DataFrame(rows).set_index("question_type") if rows else pd.DataFrame(
        columns=["balanced_accuracy", "majority_balanced", "diff", "ci95", "p", "p_holm", "beats"])
