"""Does the graft listen? The audio-swap experiment of notebook 05.

`audio_swap_check` is the one piece of the error analysis that runs a model: the fine-tuned graft answers
the same rows once with their own spoken question and once with the question of a row of another type
(`swap_audio_map`). A graft that listens should drop towards (or below) the majority baseline with swapped
audio; one that ignores its audio and answers from the video alone keeps its accuracy. `plot_swap` draws
its result; `error_analysis.error_metrics` puts it in notebook 05's metrics JSON.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from . import evaluate, metrics
from .answers import canonical_answer, in_vocabulary
from .data import Dataset, clip_key, row_key
from .schema import ANSWER_VOCAB
from .systems import VOICE_SPLITS

__all__ = ["split_rows", "swap_audio_map", "audio_swap_check", "consistency_check", "plot_swap"]


def split_rows(ds: Dataset, splits: Iterable[str] = VOICE_SPLITS) -> Dataset:
    """The rows of `ds` (evaluation rows, tagged with `split`) in `splits`, same roots."""
    keep = set(splits)
    return Dataset([r for r in ds.rows if r.get("split") in keep], ds.root, ds.audio_root)


def swap_audio_map(rows: list[dict], seed: int = 0, audio_root: str | Path | None = None,
                   same_vocabulary: bool = False) -> dict[tuple, str]:
    """`row_key` (video_id, id, template) -> the audio of another row whose question type differs (a seeded, deterministic swap).

    When no type has more than half the rows, the swap is a permutation (every audio used exactly
    once): rows grouped by type (groups and members shuffled with `seed`) and each given the audio
    `max group size` places further on. Otherwise each row draws a donor among the other types.
    Paths are the rows' `audio` values, joined to `audio_root` when given.
    With `same_vocabulary`, the donor's type also has the row's answer vocabulary (yes/no hears another
    yes/no question), so the answer to the question heard is a valid answer of the row's type; rows whose
    vocabulary no other type shares are left out of the map.
    Raises ValueError for rows without audio or fewer than two question types.
    """
    if not rows:
        return {}
    if same_vocabulary:
        groups: dict[frozenset, list[dict]] = {}
        for r in rows:
            groups.setdefault(frozenset(ANSWER_VOCAB[r["question_type"]]), []).append(r)
        out: dict[tuple, str] = {}
        for group in groups.values():
            if len({r["question_type"] for r in group}) > 1:
                out.update(swap_audio_map(group, seed, audio_root))
        return out
    missing = [r["id"] for r in rows if not r.get("audio")]
    if missing:
        raise ValueError(f"audio swap: {len(missing)} row(s) have no audio, e.g. {missing[0]!r}")
    types = sorted({r["question_type"] for r in rows})
    if len(types) < 2:
        raise ValueError(f"audio swap needs rows of at least two question types; all {len(rows)} are {types[0]!r}")

    def path(r: dict) -> str:
        return str(Path(audio_root) / r["audio"]) if audio_root is not None else r["audio"]

    rng = np.random.default_rng(seed)
    by_type = {t: sorted((r for r in rows if r["question_type"] == t), key=lambda r: (str(r["id"]), str(r.get("template"))))
               for t in types}
    for t in types:
        by_type[t] = [by_type[t][i] for i in rng.permutation(len(by_type[t]))]
    order = [types[i] for i in rng.permutation(len(types))]
    seq = [r for t in order for r in by_type[t]]
    n, largest = len(seq), max(len(v) for v in by_type.values())
    if 2 * largest <= n:
        return {row_key(seq[i]): path(seq[(i + largest) % n]) for i in range(n)}
    out = {}
    for r in seq:
        donors = [d for d in seq if d["question_type"] != r["question_type"]]
        out[row_key(r)] = path(donors[int(rng.integers(len(donors)))])
    return out


def audio_swap_check(model, processor, ds: Dataset, options, majority: dict[str, str], seed: int = 0,
                     progress_desc: str = "audio swap", cfg=None) -> dict[str, Any]:
    """The graft on `ds`'s rows with their own audio and with swapped audio (`swap_audio_map`).

    Returns accuracy with 95% bootstrap CI ({"accuracy", "ci95", "n"}) for `true_audio`,
    `swapped_audio` and `majority` (the training majority answer per type, on the same rows), plus
    `changed` (fraction of rows whose answer changed with the swap), `swapped_in_donor_vocab`
    (fraction of rows whose answer changed to one in the donor question's vocabulary but not in the
    row's own: the model answered the question it heard) and `rows`; `balanced`: macro balanced
    accuracy with true and swapped audio, and chance; `same_vocabulary`: the same for the rows whose
    type shares its answer vocabulary with another type, each hearing a question of such a type
    (`swap_audio_map(..., same_vocabulary=True)`), where a graft that listens falls to chance.
    """
    from .collate import vqa_examples

    rows = ds.rows
    swap = swap_audio_map(rows, seed=seed, audio_root=ds.audio_root or ds.root)
    donor_type = {str(Path(ds.audio_path(r))): r["question_type"] for r in rows}
    true_out = evaluate.run_model(model, processor, vqa_examples(ds, "audio"), options, f"{progress_desc}: true audio",
                                  cfg=cfg)
    swap_out = evaluate.run_model(model, processor, vqa_examples(ds, "audio", audio_override=swap), options,
                                  f"{progress_desc}: swapped audio", cfg=cfg)
    true_ok = evaluate.score(rows, true_out["predictions"])
    swap_ok = evaluate.score(rows, swap_out["predictions"])
    maj_ok = evaluate.score(rows, metrics.majority_predictions(pd.DataFrame(rows), majority))
    kw = dict(n_boot=options.bootstrap, seed=seed)
    changed = [canonical_answer(a, r["question_type"]) != canonical_answer(b, r["question_type"])
               for a, b, r in zip(true_out["predictions"], swap_out["predictions"], rows)]
    donor_vocab = [c and in_vocabulary(p, donor_type[str(Path(swap[row_key(r)]))])
                   and not in_vocabulary(p, r["question_type"])
                   for c, p, r in zip(changed, swap_out["predictions"], rows)]
    frame = pd.DataFrame({"question_type": [r["question_type"] for r in rows], "short_answer": [r["short_answer"] for r in rows]})

    def balanced(on: pd.DataFrame, runs: dict[str, list[str]]) -> dict[str, float]:
        """Macro balanced accuracy (types whose answers vary) of each run, and chance (mean 1/K)."""
        varying = metrics.per_type_balance(on.assign(prediction=on["short_answer"]), majority).query("varying")  # truth only
        return {name: metrics.balanced_summary(on.assign(prediction=preds), majority)["macro_balanced_accuracy"]
                for name, preds in runs.items()} | {"chance": float((1 / varying["classes"]).mean()) if len(varying) else float("nan")}

    # The swap above gives another type's question, mostly of another vocabulary: a graft that answers what it
    # hears then scores below chance, not at it. Here the question heard has the row's vocabulary (yes/no for
    # yes/no), so a graft that listens falls to chance and one that ignores its audio keeps its accuracy.
    shared = swap_audio_map(rows, seed=seed, audio_root=ds.audio_root or ds.root, same_vocabulary=True)
    inside = np.array([row_key(r) in shared for r in rows], dtype=bool)
    same_vocabulary: dict[str, Any] = {"rows": int(inside.sum())}
    if inside.any():
        kept = Dataset([r for r, k in zip(rows, inside) if k], ds.root, ds.audio_root)
        shared_out = evaluate.run_model(model, processor, vqa_examples(kept, "audio", audio_override=shared), options,
                                        f"{progress_desc}: swapped audio, same vocabulary", cfg=cfg)
        own = [p for p, k in zip(true_out["predictions"], inside) if k]
        same_vocabulary |= {"types": sorted({r["question_type"] for r in kept.rows}),
                            "balanced": balanced(frame[inside].reset_index(drop=True),
                                                 {"true_audio": own, "swapped_audio": shared_out["predictions"]}),
                            "predictions": shared_out["predictions"]}
    return {
        "rows": len(rows),
        "true_audio": metrics.accuracy_with_ci(true_ok, **kw),
        "swapped_audio": metrics.accuracy_with_ci(swap_ok, **kw),
        "majority": metrics.accuracy_with_ci(maj_ok, **kw),
        "changed": float(np.mean(changed)) if rows else float("nan"),
        "swapped_in_donor_vocab": float(np.mean(donor_vocab)) if rows else float("nan"),
        "balanced": balanced(frame, {"true_audio": true_out["predictions"], "swapped_audio": swap_out["predictions"]}),
        "same_vocabulary": same_vocabulary,
        "seed": seed,
        "predictions": pd.DataFrame({
            "id": [r["id"] for r in rows], "question_type": [r["question_type"] for r in rows],
            "short_answer": [r["short_answer"] for r in rows],
            "true_audio": true_out["predictions"], "swapped_audio": swap_out["predictions"],
            "donor_type": [donor_type[str(Path(swap[row_key(r)]))] for r in rows],
        }),
    }


def consistency_check(model, processor, ds: Dataset, options, progress_desc: str = "consistency", cfg=None) -> dict[str, Any]:
    """Does the graft answer the question it hears, and only that? The same rows answered twice, the second time in
    reverse order (other batch neighbours and padding): the share of identical answers (`same_audio_same_answer`);
    and every pair of rows about one clip whose true answers differ: the share of pairs whose answers differ too
    (`different_questions_different_answers`, with the pairs counted)."""
    from .collate import vqa_examples

    rows = ds.rows
    examples = vqa_examples(ds, "audio")
    first = evaluate.run_model(model, processor, examples, options, f"{progress_desc}: in order", cfg=cfg)["predictions"]
    again = evaluate.run_model(model, processor, examples[::-1], options, f"{progress_desc}: reversed",
                               cfg=cfg)["predictions"][::-1]
    answer = [canonical_answer(p, r["question_type"]) for p, r in zip(first, rows)]
    truth = [canonical_answer(r["short_answer"], r["question_type"]) for r in rows]
    by_clip: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_clip.setdefault(clip_key(r), []).append(i)
    pairs = [(i, j) for idx in by_clip.values() for a, i in enumerate(idx) for j in idx[a + 1:]
             if rows[i]["question_type"] != rows[j]["question_type"] and truth[i] != truth[j]]
    return {"rows": len(rows),
            "same_audio_same_answer": float(np.mean([a == b for a, b in zip(first, again)])) if rows else None,
            "different_questions_different_answers": float(np.mean([answer[i] != answer[j] for i, j in pairs])) if pairs else None,
            "pairs": len(pairs)}


def plot_swap(result: dict[str, Any]):
    """Left, exact accuracy (95% CI) with true audio, with swapped audio, and of the majority answer per type;
    right (when measured), macro balanced accuracy with true and swapped audio against chance, for the swap to
    any other type and for the swap within an answer vocabulary."""
    import matplotlib.pyplot as plt

    keys = [("true_audio", "true audio"), ("swapped_audio", "swapped audio\n(another type's question)"),
            ("majority", "majority answer\nper type")]
    vals = [100 * result[k]["accuracy"] for k, _ in keys]
    err = np.array([[v - 100 * result[k]["ci95"][0], 100 * result[k]["ci95"][1] - v] for v, (k, _) in zip(vals, keys)]).T
    groups = [("any other type", result["balanced"])] if "balanced" in result else []
    if "balanced" in result.get("same_vocabulary", {}):
        groups.append(("same vocabulary", result["same_vocabulary"]["balanced"]))
    fig, axes = plt.subplots(1, 1 + bool(groups), figsize=(6 + 5 * bool(groups), 3.6), squeeze=False)
    ax = axes[0, 0]
    ax.bar(range(len(keys)), vals, yerr=np.nan_to_num(err), capsize=4, color=["#2b6cb0", "#dd6b20", "#a0aec0"])
    for i, v in enumerate(vals):
        ax.text(i, v / 2, f"{v:.0f}%", ha="center", va="center", fontsize=10, color="white")
    ax.set_xticks(range(len(keys)), [label for _, label in keys])
    ax.set(ylabel="exact accuracy (%)", ylim=(0, 105),
           title=f"Does the graft listen? ({result['rows']} test rows; answers changed: {100 * result['changed']:.0f}%)")
    if groups:
        ax = axes[0, 1]
        for g, (label, bal) in enumerate(groups):
            for j, (key, colour) in enumerate((("true_audio", "#2b6cb0"), ("swapped_audio", "#dd6b20"))):
                x, v = 3 * g + j, 100 * bal[key]
                ax.bar(x, v, color=colour, label=key.replace("_", " ") if g == 0 else None)
                ax.text(x, v / 2, f"{v:.0f}", ha="center", va="center", fontsize=10, color="white")
            ax.hlines(100 * bal["chance"], 3 * g - 0.4, 3 * g + 1.4, colors="k", linestyles="--",
                      label="chance (mean 1/K)" if g == 0 else None)
        ax.set_xticks([3 * g + 0.5 for g in range(len(groups))], [f"swap: {label}" for label, _ in groups])
        ax.set(ylabel="macro balanced accuracy (%)", ylim=(0, 105), title="A graft that listens falls to chance")
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig
