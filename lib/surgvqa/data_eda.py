"""Looking at the data step's output: EDA tables and figures, split tables, notebook 01's metrics, data benchmark.

Diagnostics beside the data layer; nothing here builds or changes data.
"""
from __future__ import annotations

import math
import time
from collections import Counter
from typing import Any, Iterable

import numpy as np

from . import speech, stratify, synthetic
from .data import Dataset, clip_key
from .datastep import BuildResult
from .schema import PRESENCE_TYPES, QUESTION_TYPES


def rows_frame(rows: Iterable[dict]):
    """Rows as a pandas DataFrame with the columns the EDA needs (+ clip key)."""
    import pandas as pd

    records = []
    for r in rows:
        records.append({
            "id": r["id"], "video_id": r["video_id"], "clip": clip_key(r), "question_type": r["question_type"],
            "template": r.get("template", "?"), "short_answer": r["short_answer"], "question": r["question"],
            "voice": r.get("voice"), "split": r.get("split"), "group": r.get("group"),
            "support_ratio": r["support_ratio"], "audio_s": r.get("audio_s"),
        })
    return pd.DataFrame.from_records(records)


def type_distribution(df):
    """Rows per question type x template (all 20 types listed, zeros kept)."""
    import pandas as pd

    table = pd.crosstab(df["question_type"], df["template"]).reindex(list(QUESTION_TYPES), fill_value=0)
    table["total"] = table.sum(axis=1)
    return table


def answer_distribution(df):
    """Per type and short answer: count and share within the type."""
    counts = df.groupby(["question_type", "short_answer"]).size().rename("count").reset_index()
    counts["share"] = counts["count"] / counts.groupby("question_type")["count"].transform("sum")
    order = {t: i for i, t in enumerate(QUESTION_TYPES)}
    return counts.sort_values(["question_type", "count"], key=lambda s: s.map(order) if s.name == "question_type" else -s)


def majority_baseline(df):
    """Per type: rows, distinct answers, majority answer and its rate (a constant-answer baseline).

    A type with rate 1.0 never varies (REAL-Colon-VQA's lighting_mode is always "NBI"), so its
    accuracy says nothing about the model.
    """
    import pandas as pd

    out = []
    for t in QUESTION_TYPES:
        answers = df.loc[df["question_type"] == t, "short_answer"]
        if answers.empty:
            continue
        counts = answers.value_counts()
        out.append({"question_type": t, "rows": int(len(answers)), "answers": int(len(counts)),
                    "majority_answer": counts.index[0], "majority_rate": float(counts.iloc[0] / len(answers))})
    return pd.DataFrame(out).set_index("question_type")


def presence_balance(df) -> dict[str, float]:
    """Share of the negative ("no"/"absent") answer for each presence type, and overall."""
    out = {}
    neg_total = n_total = 0
    for t, neg in PRESENCE_TYPES.items():
        answers = df.loc[df["question_type"] == t, "short_answer"]
        if len(answers):
            n_neg = int((answers == neg).sum())
            out[t] = n_neg / len(answers)
            neg_total += n_neg
            n_total += len(answers)
    out["all_presence_types"] = neg_total / n_total if n_total else float("nan")
    return out


def audio_summary(df, by: str = "split"):
    """Spoken-question seconds per group: count, total, mean, min, max."""
    d = df.dropna(subset=["audio_s"])
    table = d.groupby(by)["audio_s"].agg(["count", "sum", "mean", "min", "max"]).round(2)
    table.columns = ["rows", "total_s", "mean_s", "min_s", "max_s"]
    table["voices"] = d.groupby(by)["voice"].nunique()
    return table


def plot_type_distribution(df):
    import matplotlib.pyplot as plt

    table = type_distribution(df).drop(columns="total")
    fig, ax = plt.subplots(figsize=(9, 5.5))
    table.iloc[::-1].plot.barh(stacked=True, ax=ax, width=0.8)
    ax.set_xlabel("QA rows")
    ax.set_ylabel("")
    ax.set_title("Question types by template")
    return fig


def plot_answer_balance(df, max_cols: int = 5):
    """One small bar chart per question type: answer shares (imbalance at a glance)."""
    import matplotlib.pyplot as plt

    types = [t for t in QUESTION_TYPES if (df["question_type"] == t).any()]
    cols = min(max_cols, max(1, len(types)))
    rows = math.ceil(len(types) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.2 * rows), squeeze=False)
    for ax, t in zip(axes.flat, types):
        counts = df.loc[df["question_type"] == t, "short_answer"].value_counts(normalize=True)
        ax.bar([str(a) for a in counts.index], counts.values, color="tab:blue")
        ax.set_ylim(0, 1)
        ax.set_title(t, fontsize=8)
        ax.tick_params(axis="x", labelsize=7, rotation=30)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(types):]:
        ax.axis("off")
    fig.suptitle("Answer shares per question type")
    fig.tight_layout()
    return fig


def plot_audio_durations(df, by: str = "split"):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    d = df.dropna(subset=["audio_s"])
    groups = sorted(d[by].dropna().unique()) if by in d and d[by].notna().any() else [None]
    bins = np.linspace(0, max(1.0, float(d["audio_s"].max()) if len(d) else 1.0), 30)
    for g in groups:
        vals = d["audio_s"] if g is None else d.loc[d[by] == g, "audio_s"]
        ax.hist(vals, bins=bins, alpha=0.6, label=str(g) if g is not None else None)
    ax.set_xlabel("spoken question length (s)")
    ax.set_ylabel("rows")
    if groups != [None]:
        ax.legend(title=by)
    ax.set_title("Audio durations")
    return fig


def plot_voices_per_split(df):
    import matplotlib.pyplot as plt
    import pandas as pd

    table = pd.crosstab(df["voice"], df["split"])
    fig, ax = plt.subplots(figsize=(8, 3.8))
    table.plot.bar(ax=ax, width=0.8)
    ax.set_xlabel("voice")
    ax.set_ylabel("QA rows")
    ax.set_title("Voices per split (held-out voices appear only in test)")
    ax.tick_params(axis="x", rotation=30)
    return fig


def pick_examples(rows: Iterable[dict], types: Iterable[str], seed: int = 0, distinct_clips: bool = True) -> list[dict]:
    """One row per requested question type (random among that type, reproducible), from distinct clips."""
    rng = np.random.default_rng([seed, 0xE6])
    rows = list(rows)
    picked: list[dict] = []
    used: set[str] = set()
    for t in types:
        cands = [r for r in rows if r["question_type"] == t and not (distinct_clips and clip_key(r) in used)]
        if cands:
            r = cands[int(rng.integers(len(cands)))]
            picked.append(r)
            used.add(clip_key(r))
    return picked


def stratification_table(splits: dict[str, list[dict]]):
    """Rows per question type x split, a split's other groups apart ("test:<group>", "val:val_wording")."""
    import pandas as pd

    cols = {}
    for s, rows in splits.items():
        for g in sorted({r["group"] for r in rows}, key=lambda g: g != stratify.GROUPS.get(s)):
            cols[s if g == stratify.GROUPS.get(s) else f"{s}:{g}"] = Counter(r["question_type"] for r in rows if r["group"] == g)
    table = pd.DataFrame({c: [cnt.get(t, 0) for t in QUESTION_TYPES] for c, cnt in cols.items()},
                         index=list(QUESTION_TYPES))
    table.index.name = "question_type"
    return table


def split_overview(splits: dict[str, list[dict]]):
    """One line per split/group: rows, clips, videos, voices, templates."""
    import pandas as pd

    recs = []
    for s, rows in splits.items():
        for g in sorted({r["group"] for r in rows}):
            rs = [r for r in rows if r["group"] == g]
            recs.append({"split": s, "group": g, "rows": len(rs), "clips": len({clip_key(r) for r in rs}),
                         "videos": ", ".join(sorted({r["video_id"] for r in rs})),
                         "voices": ", ".join(sorted({r["voice"] for r in rs if r.get("voice")})),
                         "templates": ", ".join(sorted({r["template"] for r in rs}))})
    return pd.DataFrame(recs)


def shared_wording_table(rows: Iterable[dict], splits: dict[str, list[dict]] | None = None):
    """The wordings the dataset itself uses in both template files (`stratify.shared_wordings`), one line each:
    its question types, rows per template, and (with `splits`) the rows of each split that ask it, test rows
    marked `seen_wording` among them. Empty (with these columns) when the templates share no wording."""
    import pandas as pd

    from .answers import normalize_short

    rows = list(rows)
    shared = stratify.shared_wordings(rows)
    recs = []
    for wording, per_template in shared.items():
        rec = {"wording": wording,
               "question_types": ", ".join(sorted({r["question_type"] for r in rows if normalize_short(r["question"]) == wording})),
               "in_rows": per_template["in"], "out_rows": per_template["out"]}
        for s, split_rows in (splits or {}).items():
            asked = [r for r in split_rows if normalize_short(r["question"]) == wording]
            rec[f"{s}_rows"] = len(asked)
            if s == "test":
                rec["test_seen_wording"] = sum(1 for r in asked if r.get("seen_wording"))
        recs.append(rec)
    columns = ["wording", "question_types", "in_rows", "out_rows"] + [
        c for s in (splits or {}) for c in ([f"{s}_rows"] + (["test_seen_wording"] if s == "test" else []))]
    return pd.DataFrame.from_records(recs, columns=columns).set_index("wording")


def plot_stratification(table):
    """Share of each question type within each split column (stratification at a glance)."""
    import matplotlib.pyplot as plt

    share = table / table.sum(axis=0).replace(0, 1)
    fig, ax = plt.subplots(figsize=(10, 4.2))
    share.plot.bar(ax=ax, width=0.85)
    ax.set_ylabel("share of the split's rows")
    ax.set_xlabel("")
    ax.set_title("Question-type shares per split (stratified)")
    ax.tick_params(axis="x", rotation=75, labelsize=8)
    return fig


def corpus_table(corpus: list[dict]):
    """Stage-1 corpus: utterances and audio seconds per kind x split."""
    import pandas as pd

    df = pd.DataFrame(corpus)
    table = df.pivot_table(index="kind", columns="split", values="duration_s", aggfunc=["count", "sum"], fill_value=0)
    table.columns = [f"{'utterances' if a == 'count' else 'seconds'}:{b}" for a, b in table.columns]
    return table.round(1)


def class_clip_counts(rows: Iterable[dict]):
    """Training clips per (question type, answer): what a model can learn each class from."""
    counts = rows_frame(rows).drop_duplicates(["clip", "question_type"]).groupby(["question_type", "short_answer"]).size()
    return counts.rename("clips").reset_index()


def scale_check(train_rows: list[dict], min_clips: int = 20) -> dict[str, Any]:
    """Training data at the scale vision needs: clips, videos and the rarest class of each varying type."""
    counts = class_clip_counts(train_rows)
    varying = counts.groupby("question_type").filter(lambda g: len(g) > 1)
    thin = varying[varying["clips"] < min_clips]
    return {
        "train_clips": len({clip_key(r) for r in train_rows}),
        "train_videos": len({r["video_id"] for r in train_rows}),
        "min_clips_per_class": int(varying["clips"].min()) if len(varying) else 0,
        "rarest_class": {t: int(g["clips"].min()) for t, g in varying.groupby("question_type")},
        f"classes_under_{min_clips}_clips": [f"{t}={a} ({n})" for t, a, n in thin.itertuples(index=False)],
    }


def data_metrics(result: BuildResult, splits: dict, base: Dataset, corpus: list[dict],
                 bench: dict | None = None) -> dict[str, Any]:
    """The numbers notebook 01 reports in metrics/01_data.json."""
    df = rows_frame(base.rows)
    mb = majority_baseline(df)
    split_rows = {s: (ds.rows if hasattr(ds, "rows") else ds) for s, ds in splits.items()}
    return {
        "source": str(result.frames_root),
        "rows_total": base.summary.rows,
        "rows_per_template": base.summary.per_template,
        "videos": base.summary.videos,
        "clips": base.summary.clips,
        "question_types": len(base.summary.per_type),
        "split_rows": {s: len(r) for s, r in split_rows.items()},
        "split_clips": {s: len({clip_key(x) for x in r}) for s, r in split_rows.items()},
        "split_videos": {s: sorted({x["video_id"] for x in r}) for s, r in split_rows.items()},
        "test_groups": {g: sum(1 for x in split_rows["test"] if x["group"] == g)
                        for g in sorted({x["group"] for x in split_rows["test"]})},
        "unused_rows": result.unused_rows,
        "shared_wordings": result.shared_wordings,
        "train_voices": result.train_voices,
        "heldout_voices": result.heldout_voices,
        "class_balance": {
            "presence_negative_share": {k: round(v, 4) for k, v in presence_balance(df).items()},
            "majority_rate": {t: round(float(v), 4) for t, v in mb["majority_rate"].items()},
            "majority_answer": {t: str(v) for t, v in mb["majority_answer"].items()},
            "mean_majority_rate": round(float(mb["majority_rate"].mean()), 4),
        },
        "audio_seconds": {s: round(sum(x.get("audio_s") or 0.0 for x in r), 2) for s, r in split_rows.items()}
        | {"speech_corpus": round(sum(e["duration_s"] for e in corpus), 2)},
        "speech_corpus": {s: sum(1 for e in corpus if e["split"] == s) for s in ("train", "val", "test")},
        "coverage_missing": stratify.coverage(split_rows),
        "scale": scale_check(split_rows["train"]),
        "leakage_checks": "passed",
        "timings_s": result.timings,
        "reused": result.reused,  # the timings are then those of the build it read back
        "benchmark": bench or {},
    }


def data_benchmark(cfg, num_videos: int = 2, speech_texts: int = 20) -> dict[str, float]:
    """Generation rate (QA rows/s, clips/s incl. PNG writing) and speech rate (audio s per s)."""
    import tempfile


    d = cfg.data
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rows, scenes = synthetic.generate(cfg.seed + 1000, num_videos, d.clips_per_video, d.num_frames, d.frame_size,
                                d.priors, out_dir=tmp)
        dt = time.perf_counter() - t0
    n_rows = len(rows["in"]) + len(rows["out"])
    texts = sorted({r["question"] for r in rows["in"] + rows["out"]})[:speech_texts]
    vs = speech.voices(d.num_voices)
    t1 = time.perf_counter()
    secs = sum(len(speech.synthesize(t, vs[i % len(vs)])) for i, t in enumerate(texts)) / 16000
    st = time.perf_counter() - t1
    return {
        "frame_size": d.frame_size,
        "clips": len(scenes),
        "qa_rows": n_rows,
        "clips_per_s": round(len(scenes) / dt, 2),
        "qa_rows_per_s": round(n_rows / dt, 1),
        "frames_per_s": round(len(scenes) * d.num_frames / dt, 1),
        "speech_audio_s_per_s": round(secs / st, 1),
        "speech_utterances": len(texts),
    }


def one_question_per_engine(splits) -> dict[str, tuple[dict, object]]:
    """engine -> (a row, its dataset): the same question text as asked by one voice of every speech engine in the
    run (training engines from the training rows, the held-out engine from its dev-test rows), for listening."""
    by_text: dict[str, dict[str, tuple[dict, object]]] = {}
    for name in ("train", "test"):
        ds = splits[name]
        for r in ds.rows:
            if r.get("engine") and (name == "train" or r.get("group") == "heldout_engine"):
                by_text.setdefault(r["question"], {}).setdefault(r["engine"], (r, ds))
    if not by_text:
        raise ValueError("no row records its speech engine: rebuild the data step (notebook 01)")
    return max(by_text.values(), key=len)  # the question heard from the most engines
