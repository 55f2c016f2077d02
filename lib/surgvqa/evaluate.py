"""Every system on the same rows in the same process: accuracy with CIs, speed, transcription.

Systems (IDs are the keys of `metrics.json["systems"]`):
  majority             most frequent training answer per question type
  text_zeroshot        the base VLM reading the question (stage 0 / Qwen2-VL-Instruct)
  text_finetuned       the base VLM + LoRA trained on text questions (same data and budget as the graft)
  audio_zeroshot       the graft after stage 1 only, hearing the question
  audio_finetuned      the graft after stage 2, hearing the question
  asr_pipeline         faster-whisper (the same Whisper) transcribes, text_finetuned answers the transcript
  asr_prompted         the adapted cascade: the same, decoding with the training questions as Whisper's prompt
  audio_upstream       the upstream repository's audio setting (1500 tokens per 30 s window): speed only, untrained projector

Scoring is exact on canonical short answers (`metrics.exact_match`), never substring.
"""
from __future__ import annotations

import dataclasses
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import answers, checkpoints, metrics, models, stats
from .asr import asr_model, domain_prompt, fill_transcript_caches, transcribe_faster_whisper, transcript_cache
from .collate import Collator, Example, as_question, transcription_examples, vqa_examples
from .config import REPO_ROOT, Config, EvalConfig
from .data import Dataset, clip_key, row_key
from .infer import predict
from .speech import noisy_copy
from .stratify import RESPOKEN
from .systems import (DEV_SPLITS, EVAL_SPLITS, FINAL_TEST, LABELS, NOISY, NOISY_ENGINE, NOISY_OF, SYSTEMS, TEST_SPLITS,
                      VAL_WORDING, VOICE_SPLITS)



BALANCED = "macro_balanced_accuracy"


# ---- rows -------------------------------------------------------------------------------------


def evaluation_rows(splits: dict[str, Dataset], max_rows: int | None = None, seed: int = 0,
                    final_test: bool = False, val_wording: bool = False) -> Dataset:
    """Val (in-domain) + dev-test (held-out video, voice, engine and wording) rows, with `final_test` the final
    test's and with `val_wording` the val rows re-asked in val wordings (what recipes for new wordings are chosen
    on), each tagged with `split`.

    `max_rows` caps each split with a seeded random sample (fixed before any model runs, the same rows for every
    system), so a capped split still spans its clips and question types. The re-asked rows (`stratify.RESPOKEN`)
    are the copies of the sampled rows they re-ask, so they stay paired.
    """
    parent_split = {"heldout_video": "heldout_video", "in_domain": "val"}
    rows = []
    for source, ds in (("val", splits["val"]), ("test", splits["test"])):
        for row in ds.rows:
            split = "val" if row["group"] == "in_domain" else row["group"]
            if (split != FINAL_TEST or final_test) and (split != VAL_WORDING or val_wording):
                rows.append({**row, "split": split})
    if max_rows:
        rng = np.random.default_rng(seed)
        kept: list[int] = []
        for split in dict.fromkeys(r["split"] for r in rows):
            if split in RESPOKEN:
                continue
            idx = [i for i, r in enumerate(rows) if r["split"] == split]
            kept += idx if len(idx) <= max_rows else rng.choice(idx, size=max_rows, replace=False).tolist()
        sampled = {(rows[i]["split"], rows[i]["video_id"], rows[i]["id"], rows[i]["template"]) for i in kept}
        for i, r in enumerate(rows):
            if r["split"] in RESPOKEN:
                suffix, parent = RESPOKEN[r["split"]]
                if (parent_split[parent], r["video_id"], r["id"].removesuffix(suffix), r["template"]) in sampled:
                    kept.append(i)
        rows = [rows[i] for i in sorted(kept)]
    ds = splits["test"]
    return Dataset(rows, ds.root, ds.audio_root)


def noisy_audio(cfg: Config, ds: Dataset, snr_db: float) -> dict[tuple, str]:
    """Held-out-voice and held-out-engine rows' audio mixed with operating-room noise (`speech.noisy_copy`):
    `row_key` -> path (their scores go to the split's noisy condition, `NOISY_OF`)."""
    out_dir = cfg.paths.noisy(snr_db)
    return {row_key(row): str(noisy_copy(ds.audio_path(row), out_dir, snr_db, cfg.seed))
            for row in ds.rows if row["split"] in NOISY_OF}


def noisy_entries(cfg: Config, entries: list[dict], snr_db: float) -> list[dict]:
    """The same noise for the transcription test (entries with absolute `audio`, replaced by its noisy copy)."""
    out_dir = cfg.paths.noisy(snr_db)
    return [{**e, "audio": str(noisy_copy(e["audio"], out_dir, snr_db, cfg.seed))} for e in entries]


# ---- systems ------------------------------------------------------------------------------------


@dataclass
class Models:
    """Everything the evaluation loads once."""

    processor: Any
    text_base: Any
    text_finetuned: Any
    audio_zeroshot: Any
    audio_finetuned: Any
    asr: Any

    @classmethod
    def load(cls, cfg: Config, options: EvalConfig) -> "Models":
        kw = models.load_kwargs(cfg)
        stage1, processor = models.load_graft(checkpoints.stage_dir(cfg, "stage1") / "final", **kw)
        stage2, _ = models.load_graft(checkpoints.stage_dir(cfg, "stage2") / "merged", **kw)
        text_ft = checkpoints.load_text_base(cfg, checkpoints.stage_dir(cfg, "stage2_text") / "merged")
        return cls(processor, checkpoints.load_text_base(cfg).eval(), text_ft.eval(), stage1, stage2, asr_model(cfg, options))


def upstream_graft(cfg: Config):
    """The upstream repository's audio setting on the same base: linear projector, no stacking, every window padded to 30 s."""
    upstream_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **models.UPSTREAM_AUDIO))
    torch.manual_seed(cfg.seed)
    model, processor = models.build_graft(upstream_cfg, base=checkpoints.base_vlm_source(cfg))
    return model.eval(), processor


def run_model(model, processor, examples: list[Example], options: EvalConfig, desc: str,
              max_new_tokens: int | None = None, cfg: Config | None = None) -> dict:
    """Greedy answers of `model`. With `cfg` (accuracy runs), the frozen towers' outputs come from
    the run's caches (keyed by the towers' weights); the speed test passes none, so it times them."""
    caches = {}
    if cfg is not None:
        caches["vision_cache"] = checkpoints.vision_cache(cfg, model, processor)
        if hasattr(getattr(model, "model", model), "audio_tower"):
            caches["feature_cache"] = checkpoints.feature_cache(cfg, model, processor)
    return predict(model, Collator(processor, training=False, **caches), examples, batch_size=options.batch_size,
                   max_new_tokens=max_new_tokens or options.max_new_tokens, desc=desc)


def asr_pipeline(models: Models, ds: Dataset, options: EvalConfig, audio_override: dict[tuple, str] | None = None,
                 desc: str = "asr_pipeline", reuse_transcripts: bool = False, cfg: Config | None = None,
                 long: bool = False, prompt: str | None = None) -> dict:
    """Transcribe each row's audio, then the fine-tuned text model answers the transcript (times add up).
    `prompt`: the adapted cascade's decoder prompt (`asr.domain_prompt`).

    `reuse_transcripts`: rows that share an audio file (the same question by the same voice about
    another clip) reuse its transcript — the same deterministic output, computed once. Accuracy runs
    use it; the speed test does not (every row is transcribed and timed).
    """
    examples = vqa_examples(ds, "audio", audio_override, long=long)
    paths = [e.audio for e in examples]
    if reuse_transcripts:
        unique = sorted(set(paths))
        cache = transcript_cache(cfg, models.asr, prompt) if cfg is not None else None
        texts, seconds = transcribe_faster_whisper(models.asr, unique, progress=True, cache=cache, prompt=prompt)
        heard = dict(zip(unique, zip(texts, seconds)))
        transcripts = [heard[p][0] for p in paths]
        asr_seconds = [heard[p][1] for p in paths]  # as if each row were transcribed
    else:
        transcripts, asr_seconds = transcribe_faster_whisper(models.asr, paths, progress=True, prompt=prompt)
    text_examples = [dataclasses.replace(e, mode="text", question=as_question(t), audio=None) for e, t in zip(examples, transcripts)]
    out = run_model(models.text_finetuned, models.processor, text_examples, options, desc, cfg=cfg,
                    max_new_tokens=options.long_max_new_tokens if long else None)
    # Per batch, the transcription time of its rows is added to the answer time.
    bs = options.batch_size
    batch_asr = [sum(asr_seconds[i : i + bs]) for i in range(0, len(asr_seconds), bs)]
    total = out["seconds"] + sum(asr_seconds)
    latencies = []
    for b, start in enumerate(range(0, len(examples), bs)):
        n = len(examples[start : start + bs])
        latencies += [out["batch_seconds"][b] + batch_asr[b]] * n
    out.update(transcripts=transcripts, seconds=total, samples_per_s=len(examples) / total,
               latency_ms_p50=float(np.percentile(latencies, 50) * 1000),
               latency_ms_p95=float(np.percentile(latencies, 95) * 1000))
    return out


def score(rows: list[dict], predictions: list[str]) -> list[bool]:
    return [answers.exact_match(p, r["short_answer"], r["question_type"]) for p, r in zip(predictions, rows)]


def replicates(sel: pd.DataFrame, options: EvalConfig, strata=None) -> np.ndarray:
    """`eval.bootstrap` replicate weights of these rows, clustered by clip (by video where there are enough:
    `stats.clusters_of`); one seed, so every system scored on the same rows gets the same replicates."""
    return stats.replicate_weights(stats.clusters_of(sel["clip"], sel["video_id"]), strata, n_boot=options.bootstrap)


def accuracy_ci(sel: pd.DataFrame, options: EvalConfig) -> tuple[float, list[float]]:
    """Exact accuracy of these rows and its clustered bootstrap CI."""
    correct = sel["correct"].to_numpy(dtype=float)
    r = stats.estimate(lambda w: stats.weighted_mean(w, correct), replicates(sel, options))
    return r["value"], list(r["ci95"])


def summarize(frame: pd.DataFrame, options: EvalConfig) -> tuple[dict, dict]:
    """Accuracy and its clustered bootstrap CI per split and overall (val + held-out video + held-out voice)."""
    acc, ci = {}, {}
    for split, sel in _split_rows(frame):
        acc[split], ci[split] = accuracy_ci(sel, options)
    return acc, ci


def another_type_share(frame: pd.DataFrame, options: EvalConfig) -> tuple[dict, dict]:
    """Per split, the share of answers that belong to another question type's vocabulary (`answers.another_types_answer`:
    how often the question was taken for another one) and its clustered bootstrap CI."""
    share, ci = {}, {}
    for split, sel in _split_rows(frame):
        share[split], ci[split] = accuracy_ci(sel.assign(correct=sel["another_type"]), options)
    return share, ci


def summarize_balanced(frame: pd.DataFrame, majority: dict[str, str], options: EvalConfig) -> dict[str, Any]:
    """Macro balanced accuracy per split and overall: the mean over the types whose answers vary in those rows of
    the per-type mean class recall (a constant answer per type scores 1/K), with a clustered bootstrap CI that
    resamples within each (type, class) cell; and the types where the system beats the training-majority answer
    on held-out video (`stats.beats_majority`: one-sided paired test, Holm across types)."""
    bal, ci = {}, {}
    for split, sel in _split_rows(frame):
        cells = stats.BalancedCells(sel["question_type"], sel["short_answer"])
        if not cells.cells:  # no type's answers vary in these rows
            bal[split] = ci[split] = None
            continue
        hits = cells.hits(sel["prediction"])
        r = stats.estimate(lambda w: cells.macro(w, hits), replicates(sel, options, cells.strata))
        bal[split], ci[split] = r["value"], list(r["ci95"])
    video = frame[frame["split"] == "heldout_video"]
    beating = tested = None
    if len(video):
        cells = stats.BalancedCells(video["question_type"], video["short_answer"])
        majority_hits = cells.hits([majority.get(q, "") for q in video["question_type"]])
        table = stats.beats_majority(cells, cells.hits(video["prediction"]), majority_hits,
                                     replicates(video, options, cells.strata))
        beating, tested = int(table["beats"].sum()), int(len(table))
    return {"balanced_accuracy": bal, "balanced_ci95": ci, "types_beating_majority": beating,
            "types_tested_against_majority": tested}


# The claims the report makes, each a paired difference on the same rows: (a, b, margin, splits, metric), where
# "a − b > margin" is shown only when the paired interval's lower end clears the margin. Dev-test splits guide the
# work; the final test (scored by the reference run only) is the record.
CLAIMS = (
    ("audio_finetuned", "text_finetuned", -0.03, (*TEST_SPLITS, FINAL_TEST), BALANCED),  # within 3 points
    ("audio_finetuned", "text_finetuned", -0.05, (*TEST_SPLITS, FINAL_TEST), "accuracy"),  # within 5
    ("audio_finetuned", "asr_pipeline", 0.0, (*TEST_SPLITS, NOISY, NOISY_ENGINE, FINAL_TEST), BALANCED),
    ("audio_finetuned", "asr_prompted", 0.0, (*TEST_SPLITS, NOISY, NOISY_ENGINE, FINAL_TEST), BALANCED),
    ("text_finetuned", "majority", 0.0, (*TEST_SPLITS, FINAL_TEST), BALANCED),
    ("audio_finetuned", "majority", 0.0, (*TEST_SPLITS, NOISY, NOISY_ENGINE, FINAL_TEST), BALANCED),
)
# One system on two re-spoken copies of the same rows: (system, split a, split b, margin), "a − b > margin"
# (the graft hears the held-out engine within 5 points of the held-out voices of its training engines).
SPLIT_CLAIMS = (("audio_finetuned", "heldout_engine", "heldout_voice", -0.05),
                # a new wording costs each trained model less than 8 points (the same voices and rows)
                ("audio_finetuned", "heldout_wording", "heldout_voice", -0.08),
                ("text_finetuned", "heldout_wording", "heldout_voice", -0.08))
PAIR_KEY = ["id", "video_id", "template", "voice", "split"]  # one scored row of one split


def paired_difference(both: pd.DataFrame, options: EvalConfig, metric: str, margin: float) -> dict | None:
    """a − b on rows scored by both (`both`: a's columns, b's `prediction_b` / `correct_b`), with the clustered,
    cell-stratified replicates of `summarize_balanced` (macro balanced accuracy) or the clustered ones of
    `accuracy_ci` (exact accuracy): {"metric", "rows", "diff", "ci95", "margin", "shown"}; None when nothing pairs."""
    if not len(both):
        return None
    if metric == BALANCED:
        cells = stats.BalancedCells(both["question_type"], both["short_answer"])
        if not cells.cells:
            return None
        hits_a, hits_b = cells.hits(both["prediction"]), cells.hits(both["prediction_b"])
        value_a, value_b = (lambda w: cells.macro(w, hits_a)), (lambda w: cells.macro(w, hits_b))
        weights = replicates(both, options, cells.strata)
    else:
        correct_a, correct_b = (both[c].to_numpy(dtype=float) for c in ("correct", "correct_b"))
        value_a, value_b = (lambda w: stats.weighted_mean(w, correct_a)), (lambda w: stats.weighted_mean(w, correct_b))
        weights = replicates(both, options)
    d = stats.paired_difference(value_a, value_b, weights, margin)
    return {"metric": metric, "rows": int(len(both)), **d, "ci95": list(d["ci95"])}


def paired_comparisons(predictions: pd.DataFrame, options: EvalConfig, claims=CLAIMS) -> list[dict]:
    """Every claim of `claims` on the rows both systems were scored on: {"a", "b", "split", "metric", "diff",
    "ci95", "margin", "shown"} (`paired_difference`)."""
    out = []
    for a, b, margin, splits, metric in claims:
        for split in splits:
            rows = [predictions[(predictions["system"] == s) & (predictions["split"] == split)] for s in (a, b)]
            both = rows[0].merge(rows[1][PAIR_KEY + ["prediction", "correct"]], on=PAIR_KEY, suffixes=("", "_b"))
            if (d := paired_difference(both, options, metric, margin)) is not None:
                out.append({"a": a, "b": b, "split": split, **d})
    return out


def split_comparisons(predictions: pd.DataFrame, options: EvalConfig, claims=SPLIT_CLAIMS) -> list[dict]:
    """`SPLIT_CLAIMS`: one system's macro balanced accuracy on two re-spoken copies of the same base rows (ids without
    their `_hv` / `_he` suffix), paired on those rows: {"a": "<system>:<split a>", "b": "<system>:<split b>", ...}."""

    def base(ids: pd.Series) -> pd.Series:
        for suffix, _ in RESPOKEN.values():
            ids = ids.str.removesuffix(suffix)
        return ids

    out = []
    for system, split_a, split_b, margin in claims:
        a, b = (predictions[(predictions["system"] == system) & (predictions["split"] == s)] for s in (split_a, split_b))
        if not len(a) or not len(b):
            continue
        a, b = a.assign(base=base(a["id"])), b.assign(base=base(b["id"]))
        both = a.merge(b[["base", "video_id", "template", "prediction", "correct"]], on=["base", "video_id", "template"],
                       suffixes=("", "_b"))
        if (d := paired_difference(both, options, BALANCED, margin)) is not None:
            out.append({"a": f"{system}:{split_a}", "b": f"{system}:{split_b}", "split": f"{split_a} vs {split_b}", **d})
    return out


LONG_CLAIM = ("audio_finetuned", "text_finetuned", -0.05)  # the graft's long answers within 5 points of the text model's


def long_answer_comparison(long_table: pd.DataFrame, options: EvalConfig) -> list[dict]:
    """`LONG_CLAIM` as a paired, clustered difference of keyword accuracy on the same held-out-video rows (a
    `paired_comparisons` entry, metric "long_keyword_accuracy"); [] without long answers."""
    a, b, margin = LONG_CLAIM
    if not len(long_table) or not {a, b} <= set(long_table["system"]):
        return []
    both = long_table[long_table["system"] == a].merge(long_table[long_table["system"] == b][["video_id", "id", "keyword_hit"]],
                                                       on=["video_id", "id"], suffixes=("", "_b"))
    hits_a, hits_b = (both[c].to_numpy(dtype=float) for c in ("keyword_hit", "keyword_hit_b"))
    d = stats.paired_difference(lambda w: stats.weighted_mean(w, hits_a), lambda w: stats.weighted_mean(w, hits_b),
                                replicates(both, options), margin)
    return [{"a": a, "b": b, "split": "heldout_video", "metric": "long_keyword_accuracy", "rows": int(len(both)), **d,
             "ci95": list(d["ci95"])}]


def summarize_by_engine(frame: pd.DataFrame, options: EvalConfig) -> dict[str, dict]:
    """The dev-test rows (`VOICE_SPLITS`, clean) per speech engine of the question's voice: exact and macro balanced
    accuracy with their clustered intervals, and the rows."""
    out: dict[str, dict] = {}
    test = frame[frame["split"].isin(VOICE_SPLITS)]
    for engine, sel in test.groupby("engine"):
        acc, ci = accuracy_ci(sel, options)
        cells = stats.BalancedCells(sel["question_type"], sel["short_answer"])
        bal = (stats.estimate(lambda w: cells.macro(w, cells.hits(sel["prediction"])), replicates(sel, options, cells.strata))
               if cells.cells else {"value": None, "ci95": None})
        out[str(engine)] = {"accuracy": acc, "ci95": ci, "balanced_accuracy": bal["value"],
                            "balanced_ci95": list(bal["ci95"]) if bal["ci95"] is not None else None, "n": int(len(sel))}
    return out


def summarize_wording(frame: pd.DataFrame, options: EvalConfig) -> dict[str, dict]:
    """Per test split, accuracy of the held-out-wording rows and, apart, of the rows marked `seen_wording` (a
    wording the dataset uses in both its template files, so training saw it: `data.shared_wordings`)."""
    out: dict[str, dict] = {}
    for split, sel in _split_rows(frame):
        if split in ("val", "overall"):
            continue
        out[split] = {}
        for name, part in (("heldout_wording", sel[~sel["seen_wording"]]), ("seen_wording", sel[sel["seen_wording"]])):
            value, ci = accuracy_ci(part, options) if len(part) else (None, None)
            out[split][name] = {"accuracy": value, "ci95": ci, "n": int(len(part))}
    return out


def _split_rows(frame: pd.DataFrame):
    """(split, rows) for each evaluation split present, the noisy condition, and "overall" (val + test)."""
    for split in (*EVAL_SPLITS, VAL_WORDING, NOISY, NOISY_ENGINE):
        sel = frame[frame["split"] == split]
        if len(sel):
            yield split, sel
    overall = frame[frame["split"].isin(DEV_SPLITS)]
    if len(overall):
        yield "overall", overall


@dataclass
class EvaluationResult:
    predictions: pd.DataFrame  # one row per (system, QA row): split, question_type, template, prediction, correct ...
    systems: dict[str, dict]
    asr: dict[str, dict]
    transcripts: pd.DataFrame  # transcription test: reference, whisper_base, graft (clean and noisy)
    long_answers: dict[str, dict] = dataclasses.field(default_factory=dict)  # system -> keyword accuracy, BLEU-4, ROUGE-L
    long_table: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)  # one row per (system, row)

    TABLES = {"predictions": "predictions.jsonl", "transcripts": "transcripts.jsonl", "long_table": "long_answers.jsonl"}

    def save(self, cfg: Config, stamp: str | None = None) -> Path:
        """The evaluation's files under the run's eval dir; with `stamp` (`evaluation_stamp`), a later
        `evaluate_systems` with the same stamp reads them back instead of evaluating again."""
        out = cfg.paths.eval
        out.mkdir(parents=True, exist_ok=True)
        (out / "stamp.txt").unlink(missing_ok=True)  # the files below are not those of the old stamp any more
        for attr, name in self.TABLES.items():
            getattr(self, attr).to_json(out / name, orient="records", lines=True)
        (out / "systems.json").write_text(json.dumps({"systems": self.systems, "asr": self.asr,
                                                      "long_answers": self.long_answers}, indent=2))
        if stamp:
            (out / "stamp.txt").write_text(stamp)
        return out

    @classmethod
    def load(cls, cfg: Config, stamp: str) -> "EvaluationResult | None":
        """The saved evaluation when it was made under `stamp`, else None. Values are read as written (no type
        guessing: an answer "2" or a video id "001" stays a string)."""
        out = cfg.paths.eval
        if not (out / "stamp.txt").is_file() or (out / "stamp.txt").read_text() != stamp:
            return None
        saved = json.loads((out / "systems.json").read_text())
        tables = {attr: pd.read_json(out / name, orient="records", lines=True, dtype=False)
                  for attr, name in cls.TABLES.items()}
        return cls(systems=saved["systems"], asr=saved["asr"], long_answers=saved["long_answers"], **tables)


def load_predictions(cfg: Config) -> pd.DataFrame:
    path = cfg.paths.eval / "predictions.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the evaluation (notebook 04) first")
    return pd.read_json(path, orient="records", lines=True, dtype={"prediction": str, "short_answer": str})


def scored_frame(system: str, rows: list[dict], predictions: list[str], noisy: bool = False) -> pd.DataFrame:
    """One row per scored row; `noisy`: the rows heard with operating-room noise, scored under their split's noisy
    condition (`NOISY_OF`)."""
    correct = score(rows, predictions)
    return pd.DataFrame([{
        "system": system, "id": r["id"], "split": NOISY_OF[r["split"]] if noisy else r["split"],
        "question_type": r["question_type"], "engine": r.get("engine"),
        "template": r.get("template"), "voice": r.get("voice"), "video_id": r["video_id"], "question": r["question"],
        "short_answer": r["short_answer"], "prediction": p, "correct": bool(c), "audio": r.get("audio"),
        "seen_wording": bool(r.get("seen_wording", False)), "clip": clip_key(r),
        "another_type": answers.another_types_answer(p, r["question_type"]),
    } for r, p, c in zip(rows, predictions, correct)])


EVALUATED_STAGES = ("stage0", "stage1", "stage2", "stage2_text")


def library_code_hash() -> str:
    """Every module of the library and the model overlay: an evaluation made by other code is not reused (wider
    than what the evaluation imports, so an unrelated edit costs a re-evaluation, never a stale result)."""
    overlay = REPO_ROOT / "transformers_fork" / "qwen2_vl_audio"
    return checkpoints.code_hash(sorted(Path(__file__).resolve().parent.glob("*.py")) + sorted(overlay.glob("*.py")))


def evaluation_stamp(cfg: Config, options: EvalConfig, ds: Dataset) -> str:
    """What `evaluate_systems`' result depends on: the checkpoints it loads (their stages' stamps), the data, the
    scored rows, the evaluation options, the seed and the code."""
    import hashlib

    from .data import read_data_meta

    stages = {}
    for stage in EVALUATED_STAGES:
        path = checkpoints.stage_dir(cfg, stage) / "stamp.txt"
        stages[stage] = path.read_text() if path.is_file() else None  # a paper-scale run has no stage 0
    parts = {"stages": stages, "data": read_data_meta(cfg.paths.data)["stamp"], "seed": cfg.seed,
             "model": dataclasses.asdict(cfg.model), "options": dataclasses.asdict(options),
             "rows": [row_key(r) + (r["split"],) for r in ds.rows], "code": library_code_hash()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def evaluate_systems(cfg: Config, splits: dict[str, Dataset], corpus: list[dict], options: EvalConfig | None = None,
                     models: Models | None = None, reuse: bool = True) -> EvaluationResult:
    """Run every system on the same rows and the transcription test, in this one process, and save the result
    (`EvaluationResult.save`). With `reuse`, a saved result made under the same `evaluation_stamp` is read back
    instead: re-running notebook 04 after a change to its text or plots costs no model pass."""
    options = options or cfg.eval
    ds = evaluation_rows(splits, options.max_rows, cfg.seed, final_test=options.score_final_test)
    stamp = evaluation_stamp(cfg, options, ds)
    if reuse and (saved := EvaluationResult.load(cfg, stamp)) is not None:
        print(f"evaluation reused: {cfg.paths.eval} (stamp {stamp})")
        return saved
    models = models or Models.load(cfg, options)
    rows = ds.rows
    prompt = domain_prompt([r["question"] for r in splits["train"].rows])  # the adapted cascade's
    noisy = noisy_audio(cfg, ds, options.noise_snr_db)
    noisy_ds = Dataset([r for r in rows if row_key(r) in noisy], ds.root, ds.audio_root)
    frames = []

    train_df = pd.DataFrame(splits["train"].rows)
    majority = metrics.majority_answers(train_df)
    frames.append(scored_frame("majority", rows, metrics.majority_predictions(pd.DataFrame(rows), majority)))
    frames.append(scored_frame("majority", noisy_ds.rows, metrics.majority_predictions(pd.DataFrame(noisy_ds.rows), majority), noisy=True))

    text_examples = vqa_examples(ds, "text")
    audio_examples = vqa_examples(ds, "audio")
    noisy_examples = vqa_examples(noisy_ds, "audio", noisy)
    for system, model, examples in (("text_zeroshot", models.text_base, text_examples),
                                    ("text_finetuned", models.text_finetuned, text_examples),
                                    ("audio_zeroshot", models.audio_zeroshot, audio_examples),
                                    ("audio_finetuned", models.audio_finetuned, audio_examples)):
        out = run_model(model, models.processor, examples, options, system, cfg=cfg)
        frames.append(scored_frame(system, rows, out["predictions"]))
        if system.startswith("audio"):
            frames.append(scored_frame(system, noisy_ds.rows, run_model(model, models.processor, noisy_examples, options,
                                                                  f"{system} (noisy)", cfg=cfg)["predictions"], noisy=True))
    # every file heard by the cascade, decoded once per prompt, both decodes sharing one encoder pass
    heard = [e.audio for e in audio_examples] + [e.audio for e in noisy_examples]
    fill_transcript_caches(models.asr, heard, {None: transcript_cache(cfg, models.asr),
                                               prompt: transcript_cache(cfg, models.asr, prompt)})
    asr_out = asr_pipeline(models, ds, options, reuse_transcripts=True, cfg=cfg)
    frames.append(scored_frame("asr_pipeline", rows, asr_out["predictions"]).assign(transcript=asr_out["transcripts"]))
    asr_noisy = asr_pipeline(models, noisy_ds, options, noisy, desc="asr_pipeline (noisy)", reuse_transcripts=True, cfg=cfg)
    frames.append(scored_frame("asr_pipeline", noisy_ds.rows, asr_noisy["predictions"], noisy=True).assign(transcript=asr_noisy["transcripts"]))
    # the adapted cascade: the same ASR decoding with the training questions as its prompt
    for part, audio, is_noisy in ((ds, None, False), (noisy_ds, noisy, True)):
        out = asr_pipeline(models, part, options, audio, desc="asr_prompted" + (" (noisy)" if is_noisy else ""),
                           reuse_transcripts=True, cfg=cfg, prompt=prompt)
        frames.append(scored_frame("asr_prompted", part.rows, out["predictions"], noisy=is_noisy).assign(transcript=out["transcripts"]))
    predictions = pd.concat(frames, ignore_index=True)

    speed = speed_test(cfg, models, ds, options, prompt)
    systems = {}
    for system in SYSTEMS:
        entry: dict[str, Any] = {"label": LABELS[system], "batch_size": options.batch_size}
        sel = predictions[predictions["system"] == system]
        if len(sel):
            entry["accuracy"], entry["ci95"] = summarize(sel, options)
            entry["another_type_answers"], entry["another_type_ci95"] = another_type_share(sel, options)
            entry.update(summarize_balanced(sel, majority, options))
        else:
            for key in ("accuracy", "ci95", "balanced_accuracy", "balanced_ci95"):
                entry[key] = {k: None for k in (*EVAL_SPLITS, "overall")}
            entry["types_beating_majority"] = entry["types_tested_against_majority"] = None
        if len(sel) and sel["engine"].notna().any():
            entry["by_engine"] = summarize_by_engine(sel, options)
        if len(sel) and sel["seen_wording"].any():  # test rows worded as in training (data.shared_wordings)
            entry["by_wording"] = summarize_wording(sel, options)
        entry.update(speed.get(system, {}))
        systems[system] = entry
    # The graft as a transcriber: after stage 2 when stage 2 also trained transcription, else after stage 1.
    transcriber = models.audio_finetuned if cfg.train.transcription_fraction else models.audio_zeroshot
    asr, transcripts = transcription_test(cfg, transcriber, models.processor, models.asr, corpus, options)
    long_answers, long_table = long_answer_test(cfg, models, ds, options)
    result = EvaluationResult(predictions, systems, asr, transcripts, long_answers, long_table)
    result.save(cfg, stamp)
    return result


def long_answer_test(cfg: Config, models: Models, ds: Dataset, options: EvalConfig) -> tuple[dict, pd.DataFrame]:
    """The same held-out-video rows answered in a sentence (the long instruction) by the text model, the graft
    and the ASR pipeline: keyword accuracy (the short answer as a whole phrase of the sentence), BLEU-4 and
    ROUGE-L against the row's long-form `answer`. The short-answer scoring is untouched by this."""
    rows = [r for r in ds.rows if r["split"] == "heldout_video"]
    if not rows or not options.long_answer_rows:
        return {}, pd.DataFrame()
    keep = np.random.default_rng(cfg.seed).permutation(len(rows))[: options.long_answer_rows]
    sub = Dataset([rows[i] for i in sorted(keep)], ds.root, ds.audio_root)
    budget = options.long_max_new_tokens
    outputs = {
        "text_finetuned": run_model(models.text_finetuned, models.processor, vqa_examples(sub, "text", long=True), options,
                                    "long: text_finetuned", budget, cfg=cfg)["predictions"],
        "audio_finetuned": run_model(models.audio_finetuned, models.processor, vqa_examples(sub, "audio", long=True), options,
                                     "long: audio_finetuned", budget, cfg=cfg)["predictions"],
        "asr_pipeline": asr_pipeline(models, sub, options, desc="long: asr_pipeline", reuse_transcripts=True, cfg=cfg,
                                     long=True)["predictions"],
    }
    refs = [r["answer"] for r in sub.rows]
    scores, tables = {}, []
    for system, preds in outputs.items():
        hits = [metrics.keyword_hit(p, r["short_answer"], r["question_type"]) for p, r in zip(preds, sub.rows)]
        value, ci = accuracy_ci(pd.DataFrame({"correct": hits, "clip": [clip_key(r) for r in sub.rows],
                                              "video_id": [r["video_id"] for r in sub.rows]}), options)
        scores[system] = {"keyword_accuracy": value, "keyword_ci95": ci,
                          "bleu4": metrics.bleu4(preds, refs), "rouge_l": metrics.rouge_l(preds, refs), "n": len(preds)}
        tables.append(pd.DataFrame({"system": system, "video_id": [r["video_id"] for r in sub.rows],
                                    "clip": [clip_key(r) for r in sub.rows],
                                    "id": [r["id"] for r in sub.rows], "question_type": [r["question_type"] for r in sub.rows],
                                    "question": [r["question"] for r in sub.rows], "reference": refs,
                                    "short_answer": [r["short_answer"] for r in sub.rows], "prediction": preds,
                                    "keyword_hit": hits, "audio": [r.get("audio") for r in sub.rows]}))
    return scores, pd.concat(tables, ignore_index=True)


# ---- speed ----------------------------------------------------------------------------------------


def speed_test(cfg: Config, models: Models, ds: Dataset, options: EvalConfig, prompt: str = "") -> dict[str, dict]:
    """Every system on the same `speed_rows` test rows, same batch size, one after the other.

    Timed from files to answer text (no feature cache): audio systems load and encode their
    audio, the ASR pipeline transcribes then answers.
    """
    rows = [r for r in ds.rows if r["split"] != "val"][: options.speed_rows]
    sub = Dataset(rows, ds.root, ds.audio_root)
    out: dict[str, dict] = {}

    def keep(system: str, result: dict) -> None:
        out[system] = {k: round(float(result[k]), 3) for k in ("samples_per_s", "latency_ms_p50", "latency_ms_p95")}
        out[system]["speed_rows"] = len(rows)

    start = time.perf_counter()
    metrics.majority_predictions(pd.DataFrame(rows), metrics.majority_answers(pd.DataFrame(rows)))
    elapsed = max(time.perf_counter() - start, 1e-9)
    out["majority"] = {"samples_per_s": round(len(rows) / elapsed, 1), "latency_ms_p50": 0.0, "latency_ms_p95": 0.0,
                       "speed_rows": len(rows)}
    keep("text_zeroshot", run_model(models.text_base, models.processor, vqa_examples(sub, "text"), options, "speed: text_zeroshot"))
    keep("text_finetuned", run_model(models.text_finetuned, models.processor, vqa_examples(sub, "text"), options, "speed: text_finetuned"))
    keep("audio_zeroshot", run_model(models.audio_zeroshot, models.processor, vqa_examples(sub, "audio"), options, "speed: audio_zeroshot"))
    keep("audio_finetuned", run_model(models.audio_finetuned, models.processor, vqa_examples(sub, "audio"), options, "speed: audio_finetuned"))
    keep("asr_pipeline", asr_pipeline(models, sub, options, desc="speed: asr_pipeline"))
    if prompt:
        keep("asr_prompted", asr_pipeline(models, sub, options, desc="speed: asr_prompted", prompt=prompt))
    upstream_model, upstream_processor = upstream_graft(cfg)
    keep("audio_upstream", run_model(upstream_model, upstream_processor, vqa_examples(sub, "audio"), options,
                                     "speed: upstream-style"))
    del upstream_model
    return out


# ---- transcription --------------------------------------------------------------------------------


TRANSCRIPTION_SETS = {
    "in_domain": "domain questions and answers by held-out voices; stage 1 heard them from training voices only",
    "unseen": "sentences in no training split, by held-out voices (the corpus test split)",
    "engine_in_domain": "the in-domain sentences spoken by the held-out engine's voices",
    "engine_unseen": "the unseen sentences spoken by the held-out engine's voices",
}
CORPUS_SPLIT_OF = {"in_domain": "test_in_domain", "unseen": "test", "engine_in_domain": "engine_test_in_domain",
                   "engine_unseen": "engine_test"}


def transcription_sets(corpus: list[dict], data_dir: Path, max_per_set: int | None = None,
                       seed: int = 0) -> dict[str, list[dict]]:
    """The transcription test sets of the speech corpus (`TRANSCRIPTION_SETS`, by corpus split `CORPUS_SPLIT_OF`),
    with absolute `audio`; a set the corpus does not have (no held-out engine) is empty. `max_per_set`: a seeded
    sample of each."""
    sets = {name: [{**e, "audio": str(Path(data_dir) / e["audio"])} for e in corpus if e["split"] == split]
            for name, split in CORPUS_SPLIT_OF.items()}
    if max_per_set is not None:
        rng = np.random.default_rng(seed)
        sets = {k: [v[i] for i in sorted(rng.permutation(len(v))[:max_per_set])] for k, v in sets.items()}
    return sets


def transcription_test(cfg: Config, graft_model, processor, asr, corpus: list[dict], options: EvalConfig
                       ) -> tuple[dict, pd.DataFrame]:
    """WER/CER with bootstrap CIs of faster-whisper (`asr`, the same Whisper) and the graft as transcribers,
    on each held-out-voice set of `transcription_sets`, clean and with operating-room noise.

    Returns ({"whisper_base"|"graft": {set: {"wer", "wer_ci95", "cer", "cer_ci95", "wer_noisy", ..., "n"}}},
    one row per (set, audio) with the reference and every transcript)."""
    sets = transcription_sets(corpus, cfg.paths.data, options.max_transcription_rows, cfg.seed)
    for name in [k for k, v in sets.items() if not v and not k.startswith("engine_")]:
        warnings.warn(f"transcription test: no {name} entries in the speech corpus ({TRANSCRIPTION_SETS[name]}); "
                      "that set is left out", stacklevel=2)
        del sets[name]
    sets = {k: v for k, v in sets.items() if v}  # the engine's sets exist only with data.heldout_engine
    scores: dict[str, dict] = {"whisper_base": {}, "graft": {}}
    tables = []
    cache = transcript_cache(cfg, asr)
    for name, entries in sets.items():
        noisy = noisy_entries(cfg, entries, options.noise_snr_db)
        refs = [e["text"] for e in entries]
        table = pd.DataFrame({"set": name, "id": [e["id"] for e in entries], "voice": [e["voice"] for e in entries],
                              "reference": refs, "audio": [e["audio"] for e in entries],
                              "audio_noisy": [e["audio"] for e in noisy]})
        for condition, items in (("", entries), ("_noisy", noisy)):
            whisper_texts, _ = transcribe_faster_whisper(asr, [e["audio"] for e in items], cache=cache)
            graft_texts = graft_transcribe(graft_model, processor, items, None, options, cfg=cfg)
            table[f"whisper_base{condition}"] = whisper_texts
            table[f"graft{condition}"] = graft_texts
            for system, hyps in (("whisper_base", whisper_texts), ("graft", graft_texts)):
                r = wer_cer_ci(hyps, refs, options, seed=cfg.seed)
                entry = scores[system].setdefault(name, {"n": r["n"]})
                for key in ("wer", "cer"):
                    entry[f"{key}{condition}"] = round(r[key], 4)
                    entry[f"{key}{condition}_ci95"] = [round(x, 4) for x in r[f"{key}_ci95"]]
        tables.append(table)
    return scores, (pd.concat(tables, ignore_index=True) if tables else pd.DataFrame())


def wer_cer_ci(hypotheses: list[str], references: list[str], options: EvalConfig, seed: int = 0,
               clusters=None) -> dict[str, Any]:
    """Corpus WER and CER (`metrics.edit_counts`: errors summed over reference lengths) with bootstrap intervals that
    resample `clusters` (default: the references, so one sentence's recordings by several voices are drawn together).
    {"wer", "wer_ci95", "cer", "cer_ci95", "n"}."""
    counts = metrics.edit_counts(hypotheses, references)
    weights = stats.replicate_weights(list(references) if clusters is None else clusters, n_boot=options.bootstrap, seed=seed)
    out: dict[str, Any] = {"n": len(counts["words"])}
    for name, errors, length in (("wer", "word_errors", "words"), ("cer", "char_errors", "chars")):
        corpus_rate = lambda w: (w @ counts[errors]) / np.maximum(w @ counts[length], 1)  # noqa: E731
        r = stats.estimate(corpus_rate, weights)
        out[name], out[f"{name}_ci95"] = r["value"], list(r["ci95"])
    return out


# The transcription claims, each on the same recordings: (set, condition, factor) — the graft's WER at most `factor`
# times whisper-base's, i.e. factor × WER(whisper-base) − WER(graft) > 0.
WER_CLAIMS = (("in_domain", "", 0.5), ("in_domain", "_noisy", 1.0), ("unseen", "", 1.0))
# The graft on the held-out engine's in-domain sentences: its WER at most twice its held-out-voice WER on the same texts.
ENGINE_WER_CLAIM = ("engine_in_domain", "in_domain", 2.0)


def transcription_comparisons(transcripts: pd.DataFrame, options: EvalConfig) -> list[dict]:
    """`WER_CLAIMS` as paired differences of corpus WER on the same recordings (`paired_comparisons` entries with
    `scale`), resampling sentences (a sentence's recordings by every held-out voice are drawn together)."""
    out = []
    for name, condition, factor in WER_CLAIMS:
        t = transcripts[transcripts["set"] == name] if len(transcripts) else transcripts
        if not len(t):
            continue
        refs = t["reference"].tolist()
        whisper, graft = (metrics.edit_counts(t[f"{s}{condition}"].tolist(), refs) for s in ("whisper_base", "graft"))

        def wer(counts):
            return lambda w: (w @ counts["word_errors"]) / (w @ counts["words"])

        d = stats.paired_difference(lambda w: factor * wer(whisper)(w), wer(graft),
                                    stats.replicate_weights(refs, n_boot=options.bootstrap), 0.0)
        out.append({"a": "whisper_base", "scale": factor, "b": "graft", "split": name + condition, "metric": "wer",
                    "rows": int(len(t)), **d, "ci95": list(d["ci95"])})
    return out


def engine_wer_comparison(transcripts: pd.DataFrame, options: EvalConfig) -> list[dict]:
    """`ENGINE_WER_CLAIM`: factor × the graft's WER on one set − its WER on the other (the same texts by other
    voices), resampling texts across both sets together; [] without the held-out engine's set."""
    engine_set, voice_set, factor = ENGINE_WER_CLAIM
    if not len(transcripts) or not {engine_set, voice_set} <= set(transcripts["set"]):
        return []
    t = transcripts[transcripts["set"].isin([engine_set, voice_set])]
    counts = metrics.edit_counts(t["graft"].tolist(), t["reference"].tolist())
    masks = {name: (t["set"] == name).to_numpy(dtype=float) for name in (engine_set, voice_set)}

    def wer(name):
        return lambda w: (w @ (counts["word_errors"] * masks[name])) / (w @ (counts["words"] * masks[name]))

    d = stats.paired_difference(lambda w: factor * wer(voice_set)(w), wer(engine_set),
                                stats.replicate_weights(t["reference"].tolist(), n_boot=options.bootstrap), 0.0)
    return [{"a": f"graft:{voice_set}", "scale": factor, "b": f"graft:{engine_set}", "split": f"{engine_set} vs {voice_set}",
             "metric": "wer", "rows": int(len(t)), **d, "ci95": list(d["ci95"])}]


def graft_transcribe(model, processor, entries: list[dict], audio_root: Path | None, options: EvalConfig,
                     max_new_tokens: int = 48, cfg: Config | None = None) -> list[str]:
    """The graft as a transcriber ("Transcribe the speech."); `audio_root` None: the entries' paths are absolute."""
    examples = transcription_examples(entries, audio_root if audio_root is not None else "")
    return run_model(model, processor, examples, options, "graft transcribes", max_new_tokens, cfg=cfg)["predictions"]




# ---- ratios and targets -------------------------------------------------------------------------------


