"""The evaluation as a reader sees it: tables, figures, speed ratios, targets and notebook 04's metrics.

Diagnostics beside `evaluate` (which runs the systems); nothing here runs a model.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from . import metrics, stats
from .config import Config, EvalConfig
from .data import Dataset
from .evaluate import (BALANCED, WER_CLAIMS, EvaluationResult, engine_wer_comparison, long_answer_comparison,
                       paired_comparisons, replicates, split_comparisons, transcription_comparisons)
from .systems import EVAL_SPLITS, FINAL_TEST, NOISY, NOISY_ENGINE, SYSTEMS, TEST_SPLITS, VOICE_SPLITS


def systems_table(systems: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for system, e in systems.items():
        row = {"system": system, "label": e["label"]}
        for split in ("overall", *EVAL_SPLITS, NOISY, NOISY_ENGINE):
            a = (e.get("accuracy") or {}).get(split)
            row[split] = None if a is None else round(100 * a, 1)
        row.update({k: e.get(k) for k in ("samples_per_s", "latency_ms_p50", "latency_ms_p95", "batch_size")})
        rows.append(row)
    return pd.DataFrame(rows).set_index("system")


def per_type_accuracy(predictions: pd.DataFrame) -> pd.DataFrame:
    """Accuracy (%) per question type x system on val + test (noisy copies excluded)."""
    sel = predictions[~predictions["split"].isin([NOISY, NOISY_ENGINE])]
    table = sel.pivot_table(index="question_type", columns="system", values="correct", aggfunc="mean") * 100
    return table[[s for s in SYSTEMS if s in table.columns]].round(1)


def plot_systems(systems: dict[str, dict]):
    """Exact accuracy (top) and macro balanced accuracy (bottom) per system and split, with 95% bootstrap CIs."""
    import matplotlib.pyplot as plt

    scored = [s for s in SYSTEMS if s in systems and (systems[s].get("accuracy") or {}).get("overall") is not None]
    splits = [*EVAL_SPLITS, NOISY, NOISY_ENGINE]
    fig, axes = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    width = 0.8 / len(splits)
    for ax, (key, ci_key, label) in zip(axes, (("accuracy", "ci95", "exact accuracy (%)"),
                                               ("balanced_accuracy", "balanced_ci95", "macro balanced accuracy (%)"))):
        for j, split in enumerate(splits):
            vals = [100 * ((systems[s].get(key) or {}).get(split) or np.nan) for s in scored]
            cis = [(systems[s].get(ci_key) or {}).get(split) for s in scored]
            err = np.array([[v - 100 * c[0], 100 * c[1] - v] if c and c[0] is not None else [0, 0] for v, c in zip(vals, cis)]).T
            ax.bar(np.arange(len(scored)) + (j - (len(splits) - 1) / 2) * width, vals, width, yerr=err, capsize=2, label=split)
        ax.set(ylabel=label, ylim=(0, 100))
    axes[0].set_title("Exact and balanced accuracy per system and split (95% bootstrap CI)")
    axes[1].set_xticks(np.arange(len(scored)), [s.replace("_", "\n") for s in scored])
    axes[0].legend(ncol=4, fontsize=8)
    fig.tight_layout()
    return fig


def plot_per_type(table: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.35 * len(table) + 1.5))
    im = ax.imshow(table.to_numpy(dtype=float), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(table.shape[1]), [c.replace("_", "\n") for c in table.columns], fontsize=8)
    ax.set_yticks(range(table.shape[0]), table.index, fontsize=8)
    for (i, j), v in np.ndenumerate(table.to_numpy(dtype=float)):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7, color="white" if v < 60 else "black")
    fig.colorbar(im, ax=ax, label="accuracy (%)")
    ax.set_title("Accuracy per question type (val + test)")
    fig.tight_layout()
    return fig


def plot_accuracy_vs_speed(systems: dict[str, dict]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for system, e in systems.items():
        acc = (e.get("accuracy") or {}).get("overall")
        if system == "majority" or not e.get("samples_per_s"):
            continue
        y = 100 * acc if acc is not None else 0.0
        ax.scatter(e["samples_per_s"], y, s=60, marker="o" if acc is not None else "x")
        ax.annotate(system + ("" if acc is not None else " (speed only)"), (e["samples_per_s"], y), xytext=(5, 4),
                    textcoords="offset points", fontsize=8)
    if "majority" in systems and systems["majority"]["accuracy"].get("overall") is not None:
        ax.axhline(100 * systems["majority"]["accuracy"]["overall"], color="grey", ls=":", label="majority answer")
        ax.legend(loc="lower right")
    ax.set(xscale="log", xlabel="samples / s (log)", ylabel="overall accuracy (%)", title="Accuracy vs throughput")
    fig.tight_layout()
    return fig


def asr_table(asr: dict[str, dict]) -> pd.DataFrame:
    """WER/CER (%) with 95% CI per (transcriber, sentence set): one row each, clean and noisy columns."""
    rows = {}
    for system, per_set in asr.items():
        for name, r in per_set.items():
            row = {"n": r.get("n")}
            for key in ("wer", "cer", "wer_noisy", "cer_noisy"):
                ci = r.get(f"{key}_ci95") or [np.nan, np.nan]
                row[key.upper().replace("_NOISY", " noisy")] = f"{100 * r[key]:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" \
                    if key in r else None
            rows[(system, name)] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["transcriber", "sentences"])


def plot_wer(asr: dict[str, dict]):
    """WER (%) per transcriber on each held-out-voice sentence set, clean vs noisy, with 95% CIs."""
    import matplotlib.pyplot as plt

    sets = list(dict.fromkeys(name for per_set in asr.values() for name in per_set))
    fig, axes = plt.subplots(1, max(1, len(sets)), figsize=(4.6 * max(1, len(sets)), 3.6), squeeze=False)
    for ax, name in zip(axes[0], sets):
        systems = [s for s in asr if name in asr[s]]
        x = np.arange(len(systems))
        for j, (suffix, label) in enumerate((("", "clean"), ("_noisy", "OR noise"))):
            vals = np.array([100 * asr[s][name].get("wer" + suffix, np.nan) for s in systems])
            cis = np.array([asr[s][name].get(f"wer{suffix}_ci95") or [np.nan, np.nan] for s in systems], dtype=float) * 100
            err = np.vstack([vals - cis[:, 0], cis[:, 1] - vals])
            ax.bar(x + (j - 0.5) * 0.38, vals, 0.38, label=label, yerr=np.nan_to_num(err), capsize=3)
            for xi, v in zip(x, vals):
                ax.text(xi + (j - 0.5) * 0.38, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x, systems)
        n = asr[systems[0]][name].get("n") if systems else None
        ax.set(ylabel="WER (%)", title=f"{name.replace('_', '-')} sentences, held-out voices (n={n})")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def speed_ratios(systems: dict[str, dict]) -> dict[str, float]:
    """Throughput of the fine-tuned graft relative to the other ways of answering a spoken question."""
    graft = systems.get("audio_finetuned", {}).get("samples_per_s")
    out = {}
    for other in ("asr_pipeline", "audio_upstream", "text_finetuned"):
        speed = systems.get(other, {}).get("samples_per_s")
        if graft and speed:
            out[f"graft_vs_{other}"] = round(graft / speed, 2)
    return out


def heldout_accuracy(predictions: pd.DataFrame, system: str) -> float:
    """Accuracy on the dev-test rows as worded in training (`VOICE_SPLITS`)."""
    sel = predictions[(predictions.system == system) & predictions.split.isin(VOICE_SPLITS)]
    return float(sel["correct"].mean()) if len(sel) else float("nan")


def targets(predictions: pd.DataFrame, systems: dict[str, dict], speed: dict[str, float],
            floors: dict[str, dict] | None = None, asr: dict[str, dict] | None = None,
            comparisons: list[dict] | None = None) -> dict[str, Any]:
    """The project's targets, each with its measured value and whether it is met. A claim that one system beats
    another, or is within N points of it, is met only when its paired interval clears the margin (`comparisons`)."""
    shown = {(c["a"], c["b"], c["split"], c["metric"]): c["shown"] for c in comparisons or []}
    acc = {s: heldout_accuracy(predictions, s) for s in ("audio_finetuned", "text_finetuned", "majority", "asr_pipeline")}
    noisy = {s: (systems.get(s, {}).get("accuracy") or {}).get(NOISY) for s in ("audio_finetuned", "asr_pipeline")}
    graft = systems.get("audio_finetuned", {})
    gap = 100 * (acc["text_finetuned"] - acc["audio_finetuned"])
    out = {
        "test_accuracy_audio_finetuned": round(acc["audio_finetuned"], 4),
        "test_accuracy_text_finetuned": round(acc["text_finetuned"], 4),
        "test_accuracy_majority": round(acc["majority"], 4),
        "audio_vs_text_gap_points": round(gap, 2),
        # exact accuracy, paired on the same rows of each test split (dev-test and final test)
        **{f"audio_within_5_points_of_text_{split}": shown.get(("audio_finetuned", "text_finetuned", split, "accuracy"), False)
           for split in (*TEST_SPLITS, FINAL_TEST)},
        "audio_above_majority_points": round(100 * (acc["audio_finetuned"] - acc["majority"]), 2),
        # held-out video, one-sided paired test per type with Holm (`stats.beats_majority`), as every count is made
        "types_where_audio_beats_majority": f"{graft.get('types_beating_majority')}/{graft.get('types_tested_against_majority')}",
        "noisy_heldout_voice_audio_vs_asr": [noisy["audio_finetuned"], noisy["asr_pipeline"]],
        "audio_beats_asr_with_noise": shown.get(("audio_finetuned", "asr_pipeline", NOISY, BALANCED), False),
        "audio_beats_prompted_asr_with_noise": shown.get(("audio_finetuned", "asr_prompted", NOISY, BALANCED), False),
        # the held-out engine: heard within 5 points of the held-out voices (same rows), at least the cascades in noise
        "graft_heldout_engine_within_5_points_of_heldout_voice": shown.get(
            ("audio_finetuned:heldout_engine", "audio_finetuned:heldout_voice", "heldout_engine vs heldout_voice", BALANCED), False),
        "graft_beats_asr_on_heldout_engine_with_noise": shown.get(("audio_finetuned", "asr_pipeline", NOISY_ENGINE, BALANCED), False),
        "graft_beats_prompted_asr_on_heldout_engine_with_noise": shown.get(
            ("audio_finetuned", "asr_prompted", NOISY_ENGINE, BALANCED), False),
        "graft_engine_in_domain_wer_at_most_2x_heldout_voice": any(
            c["shown"] for c in comparisons or [] if c["split"] == "engine_in_domain vs in_domain"),
        # new wordings: each trained model within 8 points of its own-wording number (same rows and voices), and
        # fewer than 5% of its answers from another question type's vocabulary
        **{f"{who}_heldout_wording_within_8_points_of_heldout_voice": shown.get(
            (f"{sid}:heldout_wording", f"{sid}:heldout_voice", "heldout_wording vs heldout_voice", BALANCED), False)
           for who, sid in (("graft", "audio_finetuned"), ("text", "text_finetuned"))},
        **{f"{who}_another_type_answers_heldout_wording": (systems.get(sid, {}).get("another_type_answers") or {}).get("heldout_wording")
           for who, sid in (("graft", "audio_finetuned"), ("text", "text_finetuned"))},
        # met when the share's interval lies below 5%
        **{f"{who}_another_type_answers_below_5_percent_heldout_wording": bool(ci is not None and ci[1] < 0.05)
           for who, sid in (("graft", "audio_finetuned"), ("text", "text_finetuned"))
           for ci in [(systems.get(sid, {}).get("another_type_ci95") or {}).get("heldout_wording")]},
    }
    floors = floors if floors is not None else floors_and_subsets(predictions)
    bal = {s: systems.get(s, {}).get("balanced_accuracy") or {} for s in ("text_finetuned", "audio_finetuned")}
    for split in (*TEST_SPLITS, FINAL_TEST):
        text, graft = bal["text_finetuned"].get(split), bal["audio_finetuned"].get(split)
        if text is None:
            continue  # the final test outside the reference run
        sub = floors.get("text_finetuned", {}).get(split, {})
        out[f"text_macro_balanced_{split}"] = text
        text_ci = (systems.get("text_finetuned", {}).get("balanced_ci95") or {}).get(split)
        out[f"text_macro_balanced_at_least_0.80_{split}"] = bool(text_ci is not None and text_ci[0] >= 0.80)  # its interval
        out[f"text_exact_minus_majority_points_{split}"] = _points(sub.get("accuracy"), sub.get("majority_accuracy"))
        out[f"text_discriminative_minus_floor_points_{split}"] = _points(sub.get("discriminative_accuracy"),
                                                                        sub.get("discriminative_prior_floor"))
        out[f"graft_minus_text_macro_balanced_points_{split}"] = _points(graft, text)
        out[f"graft_within_3_points_of_text_balanced_{split}"] = shown.get(("audio_finetuned", "text_finetuned", split, BALANCED), False)
    out.update(transcription_targets(asr or {}, comparisons or []))
    beating = systems.get("text_finetuned", {}).get("types_beating_majority")
    out["text_types_beating_majority_heldout_video"] = beating
    out["text_beats_majority_on_at_least_14_types"] = bool(beating is not None and beating >= 14)
    for key, goal in (("graft_vs_asr_pipeline", 3.0), ("graft_vs_audio_upstream", 3.0)):
        if key in speed:
            out[f"{key}_speed"] = speed[key]
            out[f"{key}_at_least_{goal:g}x"] = bool(speed[key] >= goal)
    return out


def transcription_targets(asr: dict[str, dict], comparisons: list[dict]) -> dict[str, Any]:
    """The graft as a transcriber vs whisper-base on the same held-out-voice recordings: in-domain sentences at
    most half whisper's WER clean and below it with noise; unseen sentences at most whisper's WER. Met when the
    paired interval clears it (`evaluate.transcription_comparisons`)."""
    graft, whisper = asr.get("graft", {}), asr.get("whisper_base", {})
    shown = {(c["split"], c.get("scale")): c["shown"] for c in comparisons if c["metric"] == "wer"}
    out: dict[str, Any] = {}
    for name, condition, factor in WER_CLAIMS:
        key = "wer" + condition
        g, w = graft.get(name, {}).get(key), whisper.get(name, {}).get(key)
        if g is None or w is None:
            continue
        out[f"graft_vs_whisper_{name}_{key}"] = [g, w]
        out[f"graft_{name}_{key}_at_most_{factor:g}x_whisper"] = shown.get((name + condition, factor), False)
    return out


def long_answer_targets(long_answers: dict[str, dict], comparisons: list[dict]) -> dict[str, Any]:
    """The graft's keyword accuracy on long answers within 5 points of the text model's: met when the paired
    interval (`evaluate.long_answer_comparison`) clears −5."""
    graft = long_answers.get("audio_finetuned", {}).get("keyword_accuracy")
    text = long_answers.get("text_finetuned", {}).get("keyword_accuracy")
    if graft is None or text is None:
        return {}
    shown = any(c["shown"] for c in comparisons if c["metric"] == "long_keyword_accuracy")
    return {"long_keyword_graft_minus_text_points": _points(graft, text),
            "long_keyword_graft_within_5_points_of_text": shown}


def long_answers_table(long_answers: dict[str, dict]) -> pd.DataFrame:
    """Keyword accuracy (with CI), BLEU-4, ROUGE-L (%) per system."""
    rows = {s: {"keyword accuracy": f"{100 * r['keyword_accuracy']:.1f} [{100 * r['keyword_ci95'][0]:.1f}, "
                                    f"{100 * r['keyword_ci95'][1]:.1f}]",
                "BLEU-4": round(100 * r["bleu4"], 1), "ROUGE-L": round(100 * r["rouge_l"], 1), "n": r["n"]}
            for s, r in long_answers.items()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("system")


def training_majority(predictions: pd.DataFrame) -> dict[str, str]:
    """The training-majority answer of each type, as the `majority` system answered it."""
    return predictions[predictions.system == "majority"].groupby("question_type")["prediction"].first().to_dict()


def balance_by_type(predictions: pd.DataFrame, options: EvalConfig, split: str = "heldout_video") -> pd.DataFrame:
    """Per system x question type on one split: exact and balanced accuracy, the training-majority answer's
    accuracy, the test-prior floor, how many distinct answers the system gave (1 = a lookup table), and whether it
    beats the majority answer (`beats_majority`, with `p_holm`: the one-sided paired test of `stats.beats_majority`,
    Holm across types; types whose answers do not vary in these rows are not tested)."""
    majority = training_majority(predictions)
    tables = []
    for system, g in predictions[predictions.split == split].groupby("system"):
        table = metrics.per_type_balance(g, majority).assign(system=system)
        cells = stats.BalancedCells(g["question_type"], g["short_answer"])
        tested = stats.beats_majority(cells, cells.hits(g["prediction"]),
                                      cells.hits([majority.get(q, "") for q in g["question_type"]]),
                                      replicates(g, options, cells.strata))
        table["p_holm"] = tested["p_holm"].reindex(table.index)
        table["beats_majority"] = tested["beats"].reindex(table.index).fillna(False).astype(bool)
        tables.append(table)
    return pd.concat(tables).reset_index().set_index(["system", "question_type"]) if tables else pd.DataFrame()


def floors_and_subsets(predictions: pd.DataFrame) -> dict[str, dict]:
    """Per system and split: exact accuracy on all rows next to the training-majority answer's, and on the
    discriminative subset (types whose answers vary in those rows) next to the test-prior floor."""
    majority = training_majority(predictions)
    out: dict[str, dict] = {}
    for (system, split), g in predictions[predictions.split.isin([*EVAL_SPLITS, NOISY, NOISY_ENGINE])].groupby(["system", "split"]):
        # without the point count of types above the majority: "beats" is the test of `balance_by_type`
        out.setdefault(system, {})[split] = {k: _round(v) for k, v in metrics.balanced_summary(g, majority).items()
                                             if k != "types_beating_majority"}
    return out


def diversity(table: pd.DataFrame) -> pd.DataFrame:
    """Distinct canonical answers each system gave per question type (one per type is a lookup table),
    from a `balance_by_type` table."""
    return table["distinct_predictions"].unstack("system") if len(table) else table


def plot_balance(table: pd.DataFrame, systems: tuple[str, ...] = ("majority", "text_finetuned", "audio_finetuned", "asr_pipeline")):
    """Balanced accuracy per question type (held-out video) of the main systems, against chance (1/K)."""
    import matplotlib.pyplot as plt

    systems = [s for s in systems if s in table.index.get_level_values("system")]
    bal = table["balanced_accuracy"].unstack("system")[systems] * 100
    chance = 100 / table["classes"].groupby("question_type").first()
    fig, ax = plt.subplots(figsize=(11, 4.2))
    bal.plot.bar(ax=ax, width=0.8)
    ax.scatter(np.arange(len(bal)), chance.reindex(bal.index), marker="_", s=300, color="black", zorder=3, label="chance (1/K)")
    ax.set(ylabel="balanced accuracy (%)", ylim=(0, 105), xlabel="", title="Balanced accuracy per type, held-out video")
    ax.tick_params(axis="x", rotation=75, labelsize=8)
    ax.legend(fontsize=8, ncol=5)
    fig.tight_layout()
    return fig


def _round(value):
    return round(float(value), 4) if isinstance(value, (float, np.floating)) else value


def _points(a, b):
    return None if a is None or b is None else round(100 * (float(a) - float(b)), 2)


def accuracy_by_template(predictions: pd.DataFrame) -> pd.DataFrame:
    """Accuracy (%) per system x question wording (`in` template vs `out` paraphrase); noisy copies excluded."""
    return predictions[~predictions.split.isin([NOISY, NOISY_ENGINE])].pivot_table(
        index="system", columns="template", values="correct", aggfunc="mean").mul(100).round(1)


def rows_per_split(rows: Dataset) -> dict[str, int]:
    return {s: int(n) for s, n in pd.DataFrame(rows.rows)["split"].value_counts().items()}


def evaluation_metrics(cfg: Config, result: EvaluationResult, rows: Dataset) -> dict[str, Any]:
    """Notebook 04's metrics JSON: every system, transcription, per-type and per-wording accuracy, speed, targets."""
    speed = speed_ratios(result.systems)
    comparisons = (paired_comparisons(result.predictions, cfg.eval) + split_comparisons(result.predictions, cfg.eval)
                   + long_answer_comparison(result.long_table, cfg.eval) + transcription_comparisons(result.transcripts, cfg.eval)
                   + engine_wer_comparison(result.transcripts, cfg.eval))
    floors, balance = floors_and_subsets(result.predictions), balance_by_type(result.predictions, cfg.eval)
    return {
        "systems": result.systems,
        "asr": result.asr,
        "long_answers": result.long_answers,
        "per_type_accuracy": per_type_accuracy(result.predictions).to_dict(),
        "accuracy_by_template": accuracy_by_template(result.predictions).to_dict(),
        "speed_ratios": speed,
        "targets": {**targets(result.predictions, result.systems, speed, floors, result.asr, comparisons),
                    **long_answer_targets(result.long_answers, comparisons)},
        "comparisons": comparisons,
        "floors": floors,
        "per_type_balance_heldout_video": {f"{s}|{t}": {k: _round(v) for k, v in row.items()}
                                           for (s, t), row in balance.iterrows()},
        "diversity_heldout_video": diversity(balance).to_dict(),
        "options": dataclasses.asdict(cfg.eval),
        "rows": rows_per_split(rows),
    }
