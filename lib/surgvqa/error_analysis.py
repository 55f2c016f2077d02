"""Error analysis of the evaluated systems: confusions, worst cases, ASR mishearings, notebook 05's metrics.

Everything here reads the evaluation's per-row predictions (`evaluate.load_predictions`): one row
per (system, QA row) with split, question_type, question, short_answer, prediction, correct, audio
(and `transcript` for the ASR pipeline); nothing here runs a model. The audio-swap experiment (the
graft with another row's spoken question) is `audio_swap`; `error_metrics` reports its result.

HTML produced here is self-contained (frames as GIF/PNG data URIs, audio as base64 WAV), so it
plays inside the static HTML report as well as in JupyterLab.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from . import metrics
from .answers import canonical_answer, exact_match
from .data import Dataset, qa_key
from .systems import NOISY, NOISY_ENGINE, TEST_SPLITS, VOICE_SPLITS
from .media import audio_html, flipbook_html
from .schema import ANSWER_VOCAB, QUESTION_TYPES

OTHER = "<other>"
GRAFT = "audio_finetuned"
TEXT = "text_finetuned"
ASR = "asr_pipeline"

__all__ = [
    "TEST_SPLITS", "OTHER",
    "confusion_matrix", "plot_confusions",
    "type_accuracy", "by_engine_and_voice", "worst_cases", "worst_wordings", "misunderstood_cases", "answer_belongs_to",
    "case_frames", "case_html", "show_cases",
    "misheard", "misheard_counts", "misheard_html",
    "error_metrics",
]


def _system(predictions: pd.DataFrame, system: str, splits: Iterable[str] | None = None) -> pd.DataFrame:
    """Rows of one system; `splits=None` means val + test (the noisy copies excluded)."""
    sel = predictions[predictions["system"] == system]
    if splits is None:
        return sel[~sel["split"].isin([NOISY, NOISY_ENGINE])]
    return sel[sel["split"].isin(list(splits))]


def _vocab(question_type: str) -> list[str]:
    """The type's canonical vocabulary, in ANSWER_VOCAB order."""
    out: list[str] = []
    for a in ANSWER_VOCAB.get(question_type, []):
        c = canonical_answer(a, question_type)
        if c not in out:
            out.append(c)
    return out


# ---- confusions ---------------------------------------------------------------------------------


def confusion_matrix(predictions: pd.DataFrame, system: str, question_type: str,
                     splits: Iterable[str] | None = None) -> pd.DataFrame:
    """Counts of canonical truth (rows) x canonical prediction (columns) for one system and type.

    Rows and columns list the type's whole vocabulary (in ANSWER_VOCAB order, zero rows kept);
    predictions outside it are grouped in a last column "<other>"; a truth outside the vocabulary
    (real data) gets a row of its own. `splits=None`: val + test (noisy copies excluded).
    """
    sel = _system(predictions, system, splits)
    sel = sel[sel["question_type"] == question_type]
    vocab = _vocab(question_type)
    truth = [canonical_answer(t, question_type) for t in sel["short_answer"]]
    pred = [p if p in vocab else OTHER for p in (canonical_answer(x, question_type) for x in sel["prediction"])]
    rows = vocab + sorted({t for t in truth if t not in vocab})
    cols = vocab + [OTHER]
    table = pd.DataFrame(0, index=pd.Index(rows, name="truth"), columns=pd.Index(cols, name="prediction"))
    for t, p in zip(truth, pred):
        table.loc[t, p] += 1
    return table


def plot_confusions(predictions: pd.DataFrame, system: str, types: Iterable[str] | None = None,
                    max_types: int = 12, splits: Iterable[str] | None = None):
    """A grid of row-normalised confusion heat maps (cells annotated with counts), one per type.

    By default the types (in QUESTION_TYPES order) whose rows have more than one distinct true
    answer, at most `max_types` of them.
    """
    import matplotlib.pyplot as plt

    sel = _system(predictions, system, splits)
    if types is None:
        answers: dict[str, set] = {}
        for qtype, truth in zip(sel["question_type"], sel["short_answer"]):
            answers.setdefault(qtype, set()).add(canonical_answer(truth, qtype))
        distinct = {t: len(a) for t, a in answers.items()}
        present = [t for t in QUESTION_TYPES if distinct.get(t, 0) > 1]
        present += sorted(t for t in distinct if t not in QUESTION_TYPES and distinct[t] > 1)
        types = present
    types = list(types)[:max_types]
    if not types:
        fig, ax = plt.subplots(figsize=(5, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, f"{system}: no question type with more than one true answer", ha="center", va="center")
        return fig
    ncols = min(4, len(types))
    nrows = -(-len(types) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 3.1 * nrows), squeeze=False)
    for ax in axes.flat[len(types):]:
        ax.axis("off")
    for ax, qtype in zip(axes.flat, types):
        counts = confusion_matrix(predictions, system, qtype, splits)
        totals = counts.sum(axis=1).to_numpy(dtype=float)[:, None]
        norm = np.divide(counts.to_numpy(dtype=float), totals, out=np.zeros(counts.shape), where=totals > 0)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        ax.grid(False)
        ax.set_xticks(range(counts.shape[1]), counts.columns, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(counts.shape[0]), counts.index, fontsize=7)
        for (i, j), n in np.ndenumerate(counts.to_numpy()):
            if n:
                ax.text(j, i, str(n), ha="center", va="center", fontsize=7, color="white" if norm[i, j] > 0.6 else "black")
        acc = sum(int(counts.loc[v, v]) for v in counts.columns if v in counts.index)
        total = int(counts.to_numpy().sum())
        ax.set_title(f"{qtype}\n{acc}/{total} correct", fontsize=8)
        ax.set_xlabel("prediction", fontsize=7)
        ax.set_ylabel("truth", fontsize=7)
    fig.suptitle(f"Confusions of {system} (rows normalised; numbers are counts)", fontsize=10)
    fig.tight_layout()
    return fig


# ---- worst cases ----------------------------------------------------------------------------------


def type_accuracy(predictions: pd.DataFrame, systems: Iterable[str] = (GRAFT, TEXT),
                  splits: Iterable[str] | None = VOICE_SPLITS) -> pd.DataFrame:
    """Accuracy (fraction) per question type (rows, QUESTION_TYPES order) x system, plus `n` rows per type.

    `splits` defaults to the dev-test rows as worded in training (`VOICE_SPLITS`); None = val + test.
    """
    systems = list(systems)
    frames = {s: _system(predictions, s, splits) for s in systems}
    present = set().union(*(set(f["question_type"]) for f in frames.values())) if frames else set()
    order = [t for t in QUESTION_TYPES if t in present] + sorted(present - set(QUESTION_TYPES))
    table = pd.DataFrame(index=pd.Index(order, name="question_type"))
    for s, f in frames.items():
        table[s] = f.groupby("question_type")["correct"].mean().reindex(order).astype(float)
    first = frames[systems[0]] if systems else pd.DataFrame(columns=["question_type"])
    table["n"] = first.groupby("question_type").size().reindex(order).fillna(0).astype(int)
    return table


def by_engine_and_voice(predictions: pd.DataFrame, systems: Iterable[str] = (GRAFT, ASR, TEXT),
                        splits: Iterable[str] = VOICE_SPLITS) -> pd.DataFrame:
    """Exact accuracy (%) per speech engine and voice of the question on the dev-test rows (clean), per system,
    with the rows behind each figure (as the seeds' author broke his results down per voice)."""
    sel = predictions[predictions["system"].isin(list(systems)) & predictions["split"].isin(list(splits))]
    if "engine" not in sel or sel["engine"].isna().all():
        raise ValueError("the predictions record no speech engine: re-run notebooks 01 and 04")
    table = sel.pivot_table(index=["engine", "voice"], columns="system", values="correct", aggfunc="mean") * 100
    table["rows"] = sel[sel["system"] == next(iter(systems))].groupby(["engine", "voice"]).size()
    return table[[s for s in systems if s in table.columns] + ["rows"]].round(1)


def worst_cases(predictions: pd.DataFrame, system: str, n: int = 6, seed: int = 0,
                per_type: int = 2, splits: Iterable[str] = TEST_SPLITS) -> pd.DataFrame:
    """Wrong predictions of `system` on the test splits, spread over question types.

    Types are visited from the lowest accuracy (on those splits) up (ties: QUESTION_TYPES order),
    one case per type per round, at most `per_type` per type, until `n` cases. Which wrong row of
    a type comes first is a seeded shuffle of its rows sorted by id, so the choice is deterministic.
    Adds `type_accuracy` (the type's accuracy on those splits).
    """
    sel = _system(predictions, system, splits)
    if sel.empty:
        return sel.assign(type_accuracy=pd.Series(dtype=float))
    acc = sel.groupby("question_type")["correct"].mean()
    rank = {t: i for i, t in enumerate(QUESTION_TYPES)}
    wrong = sel[~sel["correct"].astype(bool)]
    types = sorted(set(wrong["question_type"]), key=lambda t: (acc[t], rank.get(t, len(rank)), t))
    rng = np.random.default_rng(seed)
    queues = {}
    for t in types:
        g = wrong[wrong["question_type"] == t].sort_values(["id", "split"], kind="stable")
        queues[t] = list(g.index[rng.permutation(len(g))])
    picked: list = []
    for round_ in range(per_type):
        for t in types:
            if len(picked) >= n:
                break
            if round_ < len(queues[t]):
                picked.append(queues[t][round_])
    out = sel.loc[picked].copy()
    out["type_accuracy"] = out["question_type"].map(acc).astype(float)
    return out.reset_index(drop=True)


# ---- new wordings -----------------------------------------------------------------------------------
WORDING_SPLIT = "heldout_wording"


def answer_belongs_to(prediction: str, question_type: str) -> str:
    """The question type(s) whose vocabulary the answer is from: its own ("own"), others', or none ("none")."""
    from .answers import in_vocabulary

    if in_vocabulary(prediction, question_type):
        return "own"
    others = [t for t in QUESTION_TYPES if t != question_type and in_vocabulary(prediction, t)]
    return ", ".join(others[:3]) + (" ..." if len(others) > 3 else "") if others else "none"


def worst_wordings(predictions: pd.DataFrame, systems: Iterable[str] = (GRAFT, TEXT), n: int = 10) -> pd.DataFrame:
    """The held-out wordings (`heldout_wording` rows) the systems understand least: per wording, each system's exact
    accuracy and share of answers from another type's vocabulary, and the rows; the first system's accuracy first."""
    systems = [s for s in systems if s in set(predictions["system"])]
    sel = predictions[predictions["split"].isin([WORDING_SPLIT]) & predictions["system"].isin(systems)]
    if sel.empty:
        raise ValueError(f"no {WORDING_SPLIT} rows in the predictions: re-run notebooks 01 and 04")
    grouped = sel.groupby(["question_type", "question", "system"])
    table = pd.concat({"accuracy": grouped["correct"].mean(), "another type": grouped["another_type"].mean()}, axis=1)
    table = table.unstack("system")
    table.columns = [f"{what}: {system}" for what, system in table.columns]
    table["rows"] = sel[sel["system"] == systems[0]].groupby(["question_type", "question"]).size()
    return (table.sort_values([f"accuracy: {systems[0]}", f"another type: {systems[0]}"], ascending=[True, False])
            .head(n).round(2))


def misunderstood_cases(predictions: pd.DataFrame, system: str = GRAFT, n: int = 6, seed: int = 0) -> pd.DataFrame:
    """`system`'s held-out-wording rows answered from another type's vocabulary, from the worst-understood wordings
    down, one per wording (a seeded pick), with `answer_belongs_to`."""
    sel = _system(predictions, system, [WORDING_SPLIT])
    wrong = sel[sel["another_type"].astype(bool)]
    if wrong.empty:
        return wrong.assign(answer_belongs_to=pd.Series(dtype=str))
    acc = sel.groupby("question")["correct"].mean()
    rng = np.random.default_rng(seed)
    picked = []
    for question in sorted(set(wrong["question"]), key=lambda q: (acc[q], q))[:n]:
        rows = wrong[wrong["question"] == question].sort_values("id", kind="stable")
        picked.append(rows.index[int(rng.integers(len(rows)))])
    out = sel.loc[picked].copy()
    out["answer_belongs_to"] = [answer_belongs_to(p, t) for p, t in zip(out["prediction"], out["question_type"])]
    out["wording_accuracy"] = out["question"].map(acc).astype(float)
    return out.reset_index(drop=True)


# ---- case cards -----------------------------------------------------------------------------------


def _dataset_row(ds: Dataset, row: dict) -> dict:
    """The dataset row a prediction row refers to (by id and template; the row itself if it has frames)."""
    if row.get("frames") is not None and len(row.get("frames")) > 0:
        return row
    matches = [r for r in ds.rows if qa_key(r) == (row.get("video_id"), row.get("id"))]
    if row.get("template") is not None and len(matches) > 1:
        matches = [r for r in matches if r.get("template") == row.get("template")] or matches
    if not matches:
        raise KeyError(f"row {row.get('id')!r} is not in the dataset")
    return matches[0]


def case_frames(ds: Dataset, row: dict) -> np.ndarray:
    """The (T, H, W, 3) clip of a dataset or predictions row (looked up in `ds` by id)."""
    return ds.load_frames(_dataset_row(ds, dict(row)))


def _answer_span(text: str, ok: bool | None) -> str:
    color = "#1a7f37" if ok else ("#cf222e" if ok is not None else "#444")
    return f'<b style="color:{color}">{html.escape(str(text))}</b>'


def case_html(ds: Dataset, row: dict, prediction: str, extra: dict | None = None,
              audio_path: str | Path | None = None, size: int = 160) -> str:
    """One self-contained card: flipbook, spoken-question player, question text, truth vs prediction.

    `row` is a dataset row or a predictions row (looked up in `ds` by id); `audio_path` overrides
    the row's audio (e.g. the swapped or noisy file). The question text is shown for the analyst:
    in audio mode the model only heard it.
    """
    r = _dataset_row(ds, dict(row))
    qtype = r["question_type"]
    truth = r["short_answer"]
    correct = exact_match(prediction, truth, qtype)
    frames = ds.load_frames(r)
    flip = flipbook_html(frames, caption=f"{r['video_id']} frames {r['frame_numbers'][0]}-{r['frame_numbers'][-1]}",
                         size=size)
    if audio_path is not None or r.get("audio"):
        from .audio import load_audio

        player = audio_html(load_audio(audio_path if audio_path is not None else ds.audio_path(r)))
    else:
        player = "<i>no audio</i>"
    info = {
        "question type": qtype,
        "split": row.get("split", r.get("split", r.get("group", "?"))),
        "voice": row.get("voice", r.get("voice")),
        "template": row.get("template", r.get("template")),
        "id": r["id"],
    }
    info.update(extra or {})
    meta = "".join(f"<tr><td style='color:#666;padding-right:8px'>{html.escape(str(k))}</td>"
                   f"<td>{html.escape(str(v))}</td></tr>" for k, v in info.items())
    border = "#1a7f37" if correct else "#cf222e"
    return (
        f'<div style="display:inline-flex;gap:10px;border:2px solid {border};border-radius:6px;padding:8px;'
        f'margin:4px;max-width:760px;vertical-align:top;font-family:sans-serif;font-size:13px">'
        f"<div>{flip}</div>"
        f'<div style="min-width:260px">'
        f"<div style='margin-bottom:4px'>🔊 spoken question (what the model heard):</div>{player}"
        f"<div style='margin:6px 0'><span style='color:#666'>question text (not seen by the model in audio mode):</span>"
        f"<br/><i>{html.escape(r['question'])}</i></div>"
        f"<div>truth: {_answer_span(truth, None)} &nbsp; prediction: {_answer_span(prediction, correct)}"
        f" {'✓' if correct else '✗'}</div>"
        f"<table style='font-size:12px;margin-top:6px'>{meta}</table>"
        f"</div></div>"
    )


def show_cases(ds: Dataset, cases: pd.DataFrame, extra_cols: Iterable[str] = ("type_accuracy",)):
    """Cards for each row of `cases` (needs `prediction`), as one IPython HTML object."""
    from IPython.display import HTML

    cards = []
    for rec in cases.to_dict("records"):
        extra = {}
        for c in extra_cols:
            if c in rec and rec[c] is not None:
                v = rec[c]
                extra[c.replace("_", " ")] = f"{v:.2f}" if isinstance(v, float) else v
        cards.append(case_html(ds, rec, str(rec["prediction"]), extra=extra))
    return HTML("<div>" + "".join(cards) + "</div>" if cards else "<p><i>no cases</i></p>")


# ---- where ASR misheard ---------------------------------------------------------------------------

_MISHEARD_COLUMNS = ["id", "split", "question_type", "question", "transcript", "word_wer", "asr_answer", "asr_correct",
                     "graft_answer", "graft_correct", "short_answer"]


def misheard(predictions: pd.DataFrame, splits: Iterable[str] = TEST_SPLITS, graft: str = GRAFT) -> pd.DataFrame:
    """Test rows where faster-whisper's transcript differs from the question (after Whisper
    normalisation), with the ASR pipeline's and the graft's answers on the same id and split.

    Sorted: ASR wrong & graft right first, then both wrong, then ASR right & graft wrong, then
    both right; within each, the highest word error rate first (then id).
    """
    asr = _system(predictions, ASR, splits)
    if asr.empty or "transcript" not in asr:
        return pd.DataFrame(columns=_MISHEARD_COLUMNS)
    asr = asr.assign(transcript=asr["transcript"].fillna("").astype(str))
    differs = [metrics.whisper_normalize(q) != metrics.whisper_normalize(t) for q, t in zip(asr["question"], asr["transcript"])]
    asr = asr[differs]
    if asr.empty:
        return pd.DataFrame(columns=_MISHEARD_COLUMNS)
    g = _system(predictions, graft, splits)[["video_id", "id", "split", "prediction", "correct"]]
    g = g.rename(columns={"prediction": "graft_answer", "correct": "graft_correct"})
    out = asr.rename(columns={"prediction": "asr_answer", "correct": "asr_correct"}).merge(g, on=["video_id", "id", "split"], how="left")
    out["word_wer"] = [metrics.wer_cer([t], [q])["wer"] for q, t in zip(out["question"], out["transcript"])]
    out["asr_correct"] = out["asr_correct"].astype(bool)
    out["graft_correct"] = out["graft_correct"].fillna(False).astype(bool)  # no graft answer counts as wrong
    out["graft_answer"] = out["graft_answer"].fillna("").astype(str)
    a, g = out["asr_correct"].to_numpy(), out["graft_correct"].to_numpy()
    rank = np.select([~a & g, ~a & ~g, a & ~g], [0, 1, 2], 3)
    out = out.assign(_rank=rank).sort_values(["_rank", "word_wer", "id", "split"], ascending=[True, False, True, True],
                                             kind="stable")
    return out[_MISHEARD_COLUMNS].reset_index(drop=True)


def misheard_counts(df: pd.DataFrame) -> dict[str, int]:
    """How the two systems fared on misheard rows: ASR wrong & graft right, the reverse, both, neither."""
    asr = df["asr_correct"].astype(bool).to_numpy()
    graft = df["graft_correct"].astype(bool).to_numpy()
    return {
        "misheard_rows": int(len(df)),
        "asr_wrong_graft_right": int((~asr & graft).sum()),
        "asr_right_graft_wrong": int((asr & ~graft).sum()),
        "both_wrong": int((~asr & ~graft).sum()),
        "both_right": int((asr & graft).sum()),
    }


def misheard_html(df: pd.DataFrame, n: int = 8) -> str:
    """The first `n` misheard rows as an HTML table: word diff question -> transcript, answers coloured."""
    if df.empty:
        return "<p><i>faster-whisper heard every test question exactly (after normalisation).</i></p>"
    head = ("<tr><th>split</th><th>type</th><th style='text-align:left'>question → transcript (word diff)</th>"
            "<th>WER</th><th>truth</th><th>ASR → text model</th><th>graft</th></tr>")
    body = []
    for rec in df.head(n).to_dict("records"):
        graft_ok = bool(rec["graft_correct"])
        body.append(
            "<tr>"
            f"<td>{html.escape(str(rec['split']))}</td>"
            f"<td>{html.escape(str(rec.get('question_type', '')))}</td>"
            f"<td style='text-align:left'>{metrics.word_diff_html(rec['question'], rec['transcript'])}</td>"
            f"<td>{rec['word_wer']:.2f}</td>"
            f"<td>{_answer_span(rec['short_answer'], None)}</td>"
            f"<td>{_answer_span(rec['asr_answer'], bool(rec['asr_correct']))}</td>"
            f"<td>{_answer_span(rec['graft_answer'], graft_ok)}</td>"
            "</tr>")
    return ("<table style='border-collapse:collapse;font-size:12px'>" + head + "".join(body) + "</table>"
            + f"<p style='font-size:11px;color:#666'>{min(n, len(df))} of {len(df)} misheard rows; "
              "yellow = substituted (heard→said), red = dropped, green = inserted.</p>")


# ---- the graft as a transcriber, and long answers -----------------------------------------------------


def load_eval_table(cfg, name: str) -> pd.DataFrame:
    """One of the evaluation's tables (`eval/transcripts.jsonl`, `eval/long_answers.jsonl`), written by notebook 04."""
    path = cfg.paths.eval / f"{name}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the evaluation (notebook 04) first")
    if path.stat().st_size == 0:
        return pd.DataFrame()
    return pd.read_json(path, orient="records", lines=True, dtype=False)


def transcript_cases(transcripts: pd.DataFrame, system: str = "graft", n: int = 3, noisy: bool = False) -> pd.DataFrame:
    """Per sentence set, the `n` worst and `n` best utterances of `system`'s transcripts by WER (ties: by id)."""
    if transcripts.empty:
        return transcripts
    col = f"{system}_noisy" if noisy else system
    out = transcripts.assign(hypothesis=transcripts[col].fillna("").astype(str),
                             audio_heard=transcripts["audio_noisy" if noisy else "audio"])
    out["wer"] = [metrics.wer_cer([h], [r])["wer"] for h, r in zip(out["hypothesis"], out["reference"])]
    picked = []
    for _, g in out.sort_values(["wer", "id"]).groupby("set", sort=True):
        picked += [g.tail(n).iloc[::-1].assign(case="worst"), g.head(n).assign(case="best")]
    return pd.concat(picked, ignore_index=True)


def transcript_cases_html(cases: pd.DataFrame) -> str:
    """Reference -> transcript word diff, its WER and an audio player per case."""
    from .audio import load_audio
    from .media import audio_html

    if cases.empty:
        return "<p><i>no transcription test in this run.</i></p>"
    head = ("<tr><th>set</th><th>case</th><th>voice</th><th style='text-align:left'>reference → transcript (word diff)"
            "</th><th>WER</th><th>audio</th></tr>")
    body = []
    for rec in cases.to_dict("records"):
        body.append("<tr>"
                    f"<td>{html.escape(str(rec['set']))}</td><td>{html.escape(str(rec['case']))}</td>"
                    f"<td>{html.escape(str(rec['voice']))}</td>"
                    f"<td style='text-align:left'>{metrics.word_diff_html(rec['reference'], rec['hypothesis'])}</td>"
                    f"<td>{rec['wer']:.2f}</td><td>{audio_html(load_audio(rec['audio_heard']))}</td></tr>")
    return ("<table style='border-collapse:collapse;font-size:12px'>" + head + "".join(body) + "</table>"
            "<p style='font-size:11px;color:#666'>yellow = substituted (said→written), red = dropped, green = inserted.</p>")


def long_answer_examples(long_table: pd.DataFrame, n: int = 6, seed: int = 0) -> pd.DataFrame:
    """`n` rows (seeded) with the reference sentence next to each system's sentence, and whether it names the answer."""
    if long_table.empty:
        return long_table
    wide = long_table.pivot_table(index=["video_id", "id", "question", "reference", "short_answer"], columns="system",
                                  values="prediction", aggfunc="first")
    hits = long_table.pivot_table(index=["video_id", "id"], columns="system", values="keyword_hit", aggfunc="first")
    wide = wide.reset_index().merge(hits.add_suffix(" names it").reset_index(), on=["video_id", "id"])
    return wide.sample(n=min(n, len(wide)), random_state=seed).reset_index(drop=True)


# ---- the numbers the notebook reports -------------------------------------------------------------


def _json_float(x: Any) -> float | None:
    x = float(x)
    return None if np.isnan(x) else round(x, 4)


def error_metrics(predictions: pd.DataFrame, swap: dict[str, Any] | None = None, consistency: dict[str, Any] | None = None,
                  misheard_df: pd.DataFrame | None = None, misheard_noisy_df: pd.DataFrame | None = None,
                  graft: str = GRAFT, text: str = TEXT, splits: Iterable[str] = TEST_SPLITS) -> dict[str, Any]:
    """Notebook 05's metrics JSON: per-type test accuracy of the graft vs the text model, the swap result
    (`audio_swap.audio_swap_check`) and the misheard counts, clean (computed from `predictions` when `misheard_df`
    is None) and noisy."""
    table = type_accuracy(predictions, (graft, text), splits)
    per_type = {t: {graft: _json_float(r[graft]), text: _json_float(r[text]), "n": int(r["n"])}
                for t, r in table.iterrows()}
    overall = {s: _json_float(_system(predictions, s, splits)["correct"].mean()) if len(_system(predictions, s, splits))
               else None for s in (graft, text, ASR)}
    mis = misheard_df if misheard_df is not None else misheard(predictions, splits, graft)
    out: dict[str, Any] = {
        "splits": list(splits),
        "test_accuracy": overall,
        "per_type_accuracy": per_type,
        "graft_better_types": sorted(t for t, r in per_type.items()
                                     if r[graft] is not None and r[text] is not None and r[graft] > r[text]),
        "text_better_types": sorted(t for t, r in per_type.items()
                                    if r[graft] is not None and r[text] is not None and r[text] > r[graft]),
        "misheard": misheard_counts(mis),
    }
    if misheard_noisy_df is not None:
        out["misheard_noisy"] = misheard_counts(misheard_noisy_df)
    if consistency is not None:  # audio_swap.consistency_check; the target: >= 0.90 of pairs answered differently
        out["consistency"] = {**consistency, "different_answers_at_least_0.90": bool(
            (consistency.get("different_questions_different_answers") or 0) >= 0.90)}
    if swap is not None:
        out["audio_swap"] = {
            "rows": swap["rows"],
            **{k: {"accuracy": _json_float(swap[k]["accuracy"]), "ci95": [_json_float(c) for c in swap[k]["ci95"]]}
               for k in ("true_audio", "swapped_audio", "majority")},
            "changed": _json_float(swap["changed"]),
            "swapped_in_donor_vocab": _json_float(swap["swapped_in_donor_vocab"]),
            "drop": _json_float(swap["true_audio"]["accuracy"] - swap["swapped_audio"]["accuracy"]),
        }
        if "balanced" in swap:
            out["audio_swap"]["balanced"] = {k: _json_float(v) for k, v in swap["balanced"].items()}
            out["audio_swap"]["swapped_balanced_within_0.10_of_chance"] = bool(
                abs(swap["balanced"]["swapped_audio"] - swap["balanced"]["chance"]) <= 0.10)
        shared = swap.get("same_vocabulary", {})
        if "balanced" in shared:
            out["audio_swap"]["same_vocabulary"] = {
                "rows": shared["rows"], "types": shared["types"],
                "balanced": {k: _json_float(v) for k, v in shared["balanced"].items()},
                "swapped_balanced_within_0.10_of_chance": bool(
                    abs(shared["balanced"]["swapped_audio"] - shared["balanced"]["chance"]) <= 0.10)}
    return out
