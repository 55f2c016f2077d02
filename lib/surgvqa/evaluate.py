"""Every system on the same rows in the same process: accuracy with CIs, speed, transcription.

Systems (IDs are the keys of `metrics.json["systems"]`):
  majority             most frequent training answer per question type
  text_zeroshot        the base VLM reading the question (stage 0 / Qwen2-VL-Instruct)
  text_finetuned       the base VLM + LoRA trained on text questions (same data and budget as the graft)
  audio_zeroshot       the graft after stage 1 only, hearing the question
  audio_finetuned      the graft after stage 2, hearing the question
  asr_pipeline         faster-whisper (the same Whisper) transcribes, text_finetuned answers the transcript
  audio_seed_faithful  the seeds' audio setting (1500 tokens per 30 s window): speed only, untrained projector

Scoring is exact on canonical short answers (`metrics.exact_match`), never substring.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import graft as G
from . import metrics as M
from . import train as T
from .collate import Collator, Example, transcription_examples, vqa_examples
from .config import Config, ConfigError
from .data import Dataset
from .infer import predict

SYSTEMS = ("majority", "text_zeroshot", "text_finetuned", "audio_zeroshot", "audio_finetuned", "asr_pipeline",
           "audio_seed_faithful")
LABELS = {
    "majority": "majority answer per type",
    "text_zeroshot": "text + video: base VLM",
    "text_finetuned": "text + video: LoRA fine-tuned",
    "audio_zeroshot": "audio + video: graft, stage 1 only",
    "audio_finetuned": "audio + video: graft, stage 2",
    "asr_pipeline": "ASR (faster-whisper) -> text model",
    "audio_seed_faithful": "audio + video: seed-faithful graft (1500 tokens)",
}
SPLITS = ("val", "heldout_video", "heldout_voice")
NOISY = "heldout_voice_noisy"  # held-out voices with operating-room noise (audio systems and ASR only)
AUDIO_SYSTEMS = ("audio_zeroshot", "audio_finetuned", "asr_pipeline")


@dataclass
class EvalOptions:
    """`eval` section of the params."""

    batch_size: int = 16
    max_new_tokens: int = 8
    speed_rows: int = 48  # rows every system is timed on (same rows, same batch size)
    noise_snr_db: float = 5.0  # SNR of the operating-room noise for the noisy condition
    bootstrap: int = 1000
    asr_compute_type: str = "int8"  # faster-whisper on the CPU: its usual (fastest) setting, so the speed ratio is conservative
    max_rows: int | None = None  # cap rows per split (quick looks); None = all

    @classmethod
    def from_cfg(cls, cfg: Config) -> "EvalOptions":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(cfg.eval) - names
        if unknown:
            raise ConfigError(f"{cfg.params_source}: unknown key(s) {sorted('eval.' + k for k in unknown)}; "
                              f"known: {sorted(names)}")
        return cls(**cfg.eval)


# ---- rows -------------------------------------------------------------------------------------


def evaluation_rows(splits: dict[str, Dataset], max_rows: int | None = None) -> Dataset:
    """Val (in-domain) + test (held-out video, held-out voice) rows, each tagged with `split`."""
    rows = []
    for source, ds in (("val", splits["val"]), ("test", splits["test"])):
        for row in ds.rows:
            split = "val" if source == "val" else row["group"]
            rows.append({**row, "split": split})
    if max_rows:
        kept, seen = [], {}
        for r in rows:
            seen[r["split"]] = seen.get(r["split"], 0) + 1
            if seen[r["split"]] <= max_rows:
                kept.append(r)
        rows = kept
    ds = splits["test"]
    return Dataset(rows, ds.root, ds.audio_root)


def noisy_audio(cfg: Config, ds: Dataset, snr_db: float) -> dict[str, str]:
    """Held-out-voice rows' audio mixed with operating-room noise (deterministic per file): row id -> path."""
    from .audio import write_wav
    from .speech import mix_at_snr, or_noise

    out_dir = cfg.run_dir / "eval" / f"noisy_snr{snr_db:g}"
    out_dir.mkdir(parents=True, exist_ok=True)
    mapping = {}
    for row in ds.rows:
        if row["split"] != "heldout_voice":
            continue
        src = ds.audio_path(row)
        dst = out_dir / src.name
        if not dst.is_file():
            clean = ds.load_audio(row)
            seed = int.from_bytes(src.name.encode()[-8:].rjust(8, b"\0"), "little") % 2**32
            noisy = mix_at_snr(clean, or_noise(len(clean), np.random.default_rng([cfg.seed, seed])), snr_db)
            write_wav(dst, noisy)
        mapping[row["id"]] = str(dst)
    return mapping


def corpus_noisy_audio(cfg: Config, corpus: list[dict], snr_db: float) -> list[dict]:
    """The same noise for the transcription test (corpus entries with their audio replaced)."""
    from .audio import load_audio, write_wav
    from .speech import mix_at_snr, or_noise

    out_dir = cfg.run_dir / "eval" / f"noisy_snr{snr_db:g}"
    out_dir.mkdir(parents=True, exist_ok=True)
    noisy = []
    for i, e in enumerate(corpus):
        src = cfg.data_dir / e["audio"]
        dst = out_dir / f"corpus_{src.name}"
        if not dst.is_file():
            clean = load_audio(src)
            write_wav(dst, mix_at_snr(clean, or_noise(len(clean), np.random.default_rng([cfg.seed, 7, i])), snr_db))
        noisy.append({**e, "audio": str(dst)})
    return noisy


# ---- ASR (faster-whisper with the same Whisper) ------------------------------------------------


def asr_model(cfg: Config, options: EvalOptions):
    """faster-whisper on the CTranslate2 form of the graft's Whisper."""
    from faster_whisper import WhisperModel
    from .whisper_conversion import EMBEDDED_WHISPER, embedded_ct2_dir

    source = str(embedded_ct2_dir(cfg.model.whisper_cache_dir)) if cfg.model.whisper == EMBEDDED_WHISPER else cfg.model.whisper
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return WhisperModel(source, device=device, compute_type=options.asr_compute_type if device == "cpu" else "float16",
                        cpu_threads=torch.get_num_threads())


def transcribe_faster_whisper(model, paths: list[str], progress: bool = True) -> tuple[list[str], list[float]]:
    """Greedy English transcription of each file, with per-file seconds (decoding included)."""
    from tqdm.auto import tqdm

    texts, seconds = [], []
    for path in tqdm(paths, desc="faster-whisper", disable=not progress, leave=False):
        t0 = time.perf_counter()
        segments, _ = model.transcribe(str(path), language="en", beam_size=1, without_timestamps=True,
                                       condition_on_previous_text=False, vad_filter=False)
        texts.append(" ".join(s.text.strip() for s in segments).strip())
        seconds.append(time.perf_counter() - t0)
    return texts, seconds


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
    def load(cls, cfg: Config, options: EvalOptions) -> "Models":
        kw = G.load_kwargs(cfg)
        stage1, processor = G.load_graft(T.stage_dir(cfg, "stage1") / "final", **kw)
        stage2, _ = G.load_graft(T.stage_dir(cfg, "stage2") / "merged", **kw)
        text_ft = T.load_text_base(cfg, T.stage_dir(cfg, "stage2_text") / "merged")
        return cls(processor, T.load_text_base(cfg).eval(), text_ft.eval(), stage1, stage2, asr_model(cfg, options))


def seed_faithful_graft(cfg: Config):
    """The seeds' audio setting on the same base: linear projector, no stacking, every window padded to 30 s."""
    seed_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **G.SEED_FAITHFUL))
    torch.manual_seed(cfg.seed)
    model, processor = G.build_graft(seed_cfg, base=T.base_vlm_source(cfg))
    return model.eval(), processor


def run_model(model, processor, examples: list[Example], options: EvalOptions, desc: str,
              max_new_tokens: int | None = None) -> dict:
    return predict(model, Collator(processor, training=False), examples, batch_size=options.batch_size,
                   max_new_tokens=max_new_tokens or options.max_new_tokens, desc=desc)


def asr_pipeline(models: Models, ds: Dataset, options: EvalOptions, audio_override: dict[str, str] | None = None,
                 desc: str = "asr_pipeline", reuse_transcripts: bool = False) -> dict:
    """Transcribe each row's audio, then the fine-tuned text model answers the transcript (times add up).

    `reuse_transcripts`: rows that share an audio file (the same question by the same voice about
    another clip) reuse its transcript — the same deterministic output, computed once. Accuracy runs
    use it; the speed test does not (every row is transcribed and timed).
    """
    examples = vqa_examples(ds, "audio", audio_override)
    paths = [e.audio for e in examples]
    if reuse_transcripts:
        unique = sorted(set(paths))
        texts, seconds = transcribe_faster_whisper(models.asr, unique, progress=True)
        heard = dict(zip(unique, zip(texts, seconds)))
        transcripts = [heard[p][0] for p in paths]
        asr_seconds = [heard[p][1] for p in paths]  # as if each row were transcribed
    else:
        transcripts, asr_seconds = transcribe_faster_whisper(models.asr, paths, progress=True)
    text_examples = [dataclasses.replace(e, mode="text", question=t or "?", audio=None) for e, t in zip(examples, transcripts)]
    out = run_model(models.text_finetuned, models.processor, text_examples, options, desc)
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
    return [M.exact_match(p, r["short_answer"], r["question_type"]) for p, r in zip(predictions, rows)]


def summarize(frame: pd.DataFrame, options: EvalOptions) -> tuple[dict, dict]:
    """Accuracy and bootstrap CI per split and overall (val + held-out video + held-out voice)."""
    acc, ci = {}, {}
    for split in (*SPLITS, NOISY):
        sel = frame.loc[frame["split"] == split, "correct"]
        if len(sel):
            r = M.accuracy_with_ci(sel.to_numpy(), n_boot=options.bootstrap)
            acc[split], ci[split] = r["accuracy"], r["ci95"]
    overall = frame.loc[frame["split"].isin(SPLITS), "correct"]
    if len(overall):
        r = M.accuracy_with_ci(overall.to_numpy(), n_boot=options.bootstrap)
        acc["overall"], ci["overall"] = r["accuracy"], r["ci95"]
    return acc, ci


@dataclass
class EvaluationResult:
    predictions: pd.DataFrame  # one row per (system, QA row): split, question_type, template, prediction, correct ...
    systems: dict[str, dict]
    asr: dict[str, dict]
    transcripts: pd.DataFrame  # transcription test: reference, whisper_base, graft (clean and noisy)

    def save(self, cfg: Config) -> Path:
        out = cfg.run_dir / "eval"
        out.mkdir(parents=True, exist_ok=True)
        self.predictions.to_json(out / "predictions.jsonl", orient="records", lines=True)
        self.transcripts.to_json(out / "transcripts.jsonl", orient="records", lines=True)
        (out / "systems.json").write_text(json.dumps({"systems": self.systems, "asr": self.asr}, indent=2))
        return out


def load_predictions(cfg: Config) -> pd.DataFrame:
    path = cfg.run_dir / "eval" / "predictions.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the evaluation (notebook 04) first")
    return pd.read_json(path, orient="records", lines=True, dtype={"prediction": str, "short_answer": str})


def _frame(system: str, rows: list[dict], predictions: list[str], split_override: str | None = None) -> pd.DataFrame:
    correct = score(rows, predictions)
    return pd.DataFrame([{
        "system": system, "id": r["id"], "split": split_override or r["split"], "question_type": r["question_type"],
        "template": r.get("template"), "voice": r.get("voice"), "video_id": r["video_id"], "question": r["question"],
        "short_answer": r["short_answer"], "prediction": p, "correct": bool(c), "audio": r.get("audio"),
    } for r, p, c in zip(rows, predictions, correct)])


def evaluate_systems(cfg: Config, splits: dict[str, Dataset], corpus: list[dict], options: EvalOptions | None = None,
                     models: Models | None = None) -> EvaluationResult:
    """Run every system on the same rows and the transcription test, in this one process."""
    options = options or EvalOptions.from_cfg(cfg)
    models = models or Models.load(cfg, options)
    ds = evaluation_rows(splits, options.max_rows)
    rows = ds.rows
    noisy = noisy_audio(cfg, ds, options.noise_snr_db)
    noisy_ds = Dataset([r for r in rows if r["id"] in noisy], ds.root, ds.audio_root)
    frames = []

    train_df = pd.DataFrame(splits["train"].rows)
    majority = M.majority_answers(train_df)
    frames.append(_frame("majority", rows, M.majority_predictions(pd.DataFrame(rows), majority)))
    frames.append(_frame("majority", noisy_ds.rows, M.majority_predictions(pd.DataFrame(noisy_ds.rows), majority), NOISY))

    text_examples = vqa_examples(ds, "text")
    audio_examples = vqa_examples(ds, "audio")
    noisy_examples = vqa_examples(noisy_ds, "audio", noisy)
    for system, model, examples in (("text_zeroshot", models.text_base, text_examples),
                                    ("text_finetuned", models.text_finetuned, text_examples),
                                    ("audio_zeroshot", models.audio_zeroshot, audio_examples),
                                    ("audio_finetuned", models.audio_finetuned, audio_examples)):
        out = run_model(model, models.processor, examples, options, system)
        frames.append(_frame(system, rows, out["predictions"]))
        if system.startswith("audio"):
            frames.append(_frame(system, noisy_ds.rows, run_model(model, models.processor, noisy_examples, options,
                                                                  f"{system} (noisy)")["predictions"], NOISY))
    asr_out = asr_pipeline(models, ds, options, reuse_transcripts=True)
    frames.append(_frame("asr_pipeline", rows, asr_out["predictions"]).assign(transcript=asr_out["transcripts"]))
    asr_noisy = asr_pipeline(models, noisy_ds, options, noisy, desc="asr_pipeline (noisy)", reuse_transcripts=True)
    frames.append(_frame("asr_pipeline", noisy_ds.rows, asr_noisy["predictions"], NOISY).assign(transcript=asr_noisy["transcripts"]))
    predictions = pd.concat(frames, ignore_index=True)

    speed = speed_test(cfg, models, ds, options)
    systems = {}
    for system in SYSTEMS:
        entry: dict[str, Any] = {"label": LABELS[system], "batch_size": options.batch_size}
        sel = predictions[predictions["system"] == system]
        if len(sel):
            entry["accuracy"], entry["ci95"] = summarize(sel, options)
        else:
            entry["accuracy"] = {k: None for k in (*SPLITS, "overall")}
            entry["ci95"] = {k: None for k in (*SPLITS, "overall")}
        entry.update(speed.get(system, {}))
        systems[system] = entry
    asr, transcripts = transcription_test(cfg, models.audio_zeroshot, models.processor, models.asr, corpus, options)
    return EvaluationResult(predictions, systems, asr, transcripts)


# ---- speed ----------------------------------------------------------------------------------------


def speed_test(cfg: Config, models: Models, ds: Dataset, options: EvalOptions) -> dict[str, dict]:
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
    M.majority_predictions(pd.DataFrame(rows), M.majority_answers(pd.DataFrame(rows)))
    elapsed = max(time.perf_counter() - start, 1e-9)
    out["majority"] = {"samples_per_s": round(len(rows) / elapsed, 1), "latency_ms_p50": 0.0, "latency_ms_p95": 0.0,
                       "speed_rows": len(rows)}
    keep("text_zeroshot", run_model(models.text_base, models.processor, vqa_examples(sub, "text"), options, "speed: text_zeroshot"))
    keep("text_finetuned", run_model(models.text_finetuned, models.processor, vqa_examples(sub, "text"), options, "speed: text_finetuned"))
    keep("audio_zeroshot", run_model(models.audio_zeroshot, models.processor, vqa_examples(sub, "audio"), options, "speed: audio_zeroshot"))
    keep("audio_finetuned", run_model(models.audio_finetuned, models.processor, vqa_examples(sub, "audio"), options, "speed: audio_finetuned"))
    keep("asr_pipeline", asr_pipeline(models, sub, options, desc="speed: asr_pipeline"))
    seed_model, seed_processor = seed_faithful_graft(cfg)
    keep("audio_seed_faithful", run_model(seed_model, seed_processor, vqa_examples(sub, "audio"), options, "speed: seed-faithful"))
    del seed_model
    return out


# ---- transcription --------------------------------------------------------------------------------


def transcription_test(cfg: Config, graft_model, processor, asr, corpus: list[dict], options: EvalOptions
                       ) -> tuple[dict, pd.DataFrame]:
    """WER/CER on held-out voices (corpus test split: unseen texts, unseen voices), clean and with
    noise: faster-whisper (`asr`, the same Whisper) vs the graft (after stage 1) as a transcriber."""
    test = [e for e in corpus if e["split"] == "test"]
    if not test:
        return {}, pd.DataFrame()
    noisy = corpus_noisy_audio(cfg, test, options.noise_snr_db)
    refs = [e["text"] for e in test]
    table = pd.DataFrame({"id": [e["id"] for e in test], "voice": [e["voice"] for e in test], "reference": refs,
                          "audio": [str(cfg.data_dir / e["audio"]) for e in test], "audio_noisy": [e["audio"] for e in noisy]})
    scores: dict[str, dict] = {"whisper_base": {}, "graft": {}}
    for condition, entries, paths in (("", test, table["audio"].tolist()), ("_noisy", noisy, table["audio_noisy"].tolist())):
        whisper_texts, _ = transcribe_faster_whisper(asr, paths)
        graft_texts = graft_transcribe(graft_model, processor, entries, cfg.data_dir, options)
        table[f"whisper_base{condition}"] = whisper_texts
        table[f"graft{condition}"] = graft_texts
        for system, hyps in (("whisper_base", whisper_texts), ("graft", graft_texts)):
            r = M.wer_cer(hyps, refs)
            scores[system][f"wer{condition}"] = round(r["wer"], 4)
            scores[system][f"cer{condition}"] = round(r["cer"], 4)
    return scores, table


def graft_transcribe(model, processor, entries: list[dict], audio_root: Path, options: EvalOptions,
                     max_new_tokens: int = 48) -> list[str]:
    """The graft as a transcriber ("Transcribe the speech.")."""
    examples = transcription_examples(entries, audio_root)
    return run_model(model, processor, examples, options, "graft transcribes", max_new_tokens)["predictions"]


# ---- tables and figures -----------------------------------------------------------------------------


def systems_table(systems: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for system, e in systems.items():
        row = {"system": system, "label": e["label"]}
        for split in ("overall", *SPLITS, NOISY):
            a = (e.get("accuracy") or {}).get(split)
            row[split] = None if a is None else round(100 * a, 1)
        row.update({k: e.get(k) for k in ("samples_per_s", "latency_ms_p50", "latency_ms_p95", "batch_size")})
        rows.append(row)
    return pd.DataFrame(rows).set_index("system")


def per_type_accuracy(predictions: pd.DataFrame) -> pd.DataFrame:
    """Accuracy (%) per question type x system on val + test (noisy copies excluded)."""
    sel = predictions[predictions["split"] != NOISY]
    table = sel.pivot_table(index="question_type", columns="system", values="correct", aggfunc="mean") * 100
    return table[[s for s in SYSTEMS if s in table.columns]].round(1)


def plot_systems(systems: dict[str, dict]):
    import matplotlib.pyplot as plt

    scored = [s for s in SYSTEMS if s in systems and (systems[s].get("accuracy") or {}).get("overall") is not None]
    splits = [*SPLITS, NOISY]
    fig, ax = plt.subplots(figsize=(11, 4))
    width = 0.8 / len(splits)
    for j, split in enumerate(splits):
        vals = [100 * (systems[s]["accuracy"].get(split) or np.nan) for s in scored]
        cis = [systems[s]["ci95"].get(split) for s in scored]
        err = np.array([[v - 100 * c[0], 100 * c[1] - v] if c else [0, 0] for v, c in zip(vals, cis)]).T
        ax.bar(np.arange(len(scored)) + (j - (len(splits) - 1) / 2) * width, vals, width, yerr=err, capsize=2, label=split)
    ax.set_xticks(np.arange(len(scored)), [s.replace("_", "\n") for s in scored])
    ax.set(ylabel="exact accuracy (%)", ylim=(0, 100), title="Accuracy per system and split (95% bootstrap CI)")
    ax.legend(ncol=4, fontsize=8)
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


def plot_wer(asr: dict[str, dict]):
    """WER and CER (%) per transcriber, clean vs noisy."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    systems = list(asr)
    for ax, metric in zip(axes, ("wer", "cer")):
        x = np.arange(len(systems))
        for j, (suffix, label) in enumerate((("", "clean"), ("_noisy", "noisy"))):
            vals = [100 * asr[s].get(metric + suffix, np.nan) for s in systems]
            ax.bar(x + (j - 0.5) * 0.38, vals, 0.38, label=label)
            for xi, v in zip(x, vals):
                ax.text(xi + (j - 0.5) * 0.38, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x, systems)
        ax.set(ylabel=f"{metric.upper()} (%)", title=f"{metric.upper()} on held-out voices")
        ax.legend()
    fig.tight_layout()
    return fig


# ---- ratios and targets -------------------------------------------------------------------------------


def speed_ratios(systems: dict[str, dict]) -> dict[str, float]:
    """Throughput of the fine-tuned graft relative to the other ways of answering a spoken question."""
    graft = systems.get("audio_finetuned", {}).get("samples_per_s")
    out = {}
    for other in ("asr_pipeline", "audio_seed_faithful", "text_finetuned"):
        speed = systems.get(other, {}).get("samples_per_s")
        if graft and speed:
            out[f"graft_vs_{other}"] = round(graft / speed, 2)
    return out


def test_accuracy(predictions: pd.DataFrame, system: str) -> float:
    """Accuracy on the held-out test rows (held-out video + held-out voice, `out` wording)."""
    sel = predictions[(predictions.system == system) & predictions.split.isin(["heldout_video", "heldout_voice"])]
    return float(sel["correct"].mean()) if len(sel) else float("nan")


def targets(predictions: pd.DataFrame, systems: dict[str, dict], speed: dict[str, float]) -> dict[str, Any]:
    """The project's targets, each with its measured value and whether it is met."""
    acc = {s: test_accuracy(predictions, s) for s in ("audio_finetuned", "text_finetuned", "majority", "asr_pipeline")}
    noisy = {s: (systems.get(s, {}).get("accuracy") or {}).get(NOISY) for s in ("audio_finetuned", "asr_pipeline")}
    test = predictions[predictions.split.isin(["heldout_video", "heldout_voice"])]
    per_type = test.pivot_table(index="question_type", columns="system", values="correct", aggfunc="mean")
    varying = per_type.index[per_type.get("majority", pd.Series(dtype=float)) < 1.0] if "majority" in per_type else []
    above = int((per_type.loc[varying, "audio_finetuned"] > per_type.loc[varying, "majority"]).sum()) if len(varying) else 0
    gap = 100 * (acc["text_finetuned"] - acc["audio_finetuned"])
    out = {
        "test_accuracy_audio_finetuned": round(acc["audio_finetuned"], 4),
        "test_accuracy_text_finetuned": round(acc["text_finetuned"], 4),
        "test_accuracy_majority": round(acc["majority"], 4),
        "audio_vs_text_gap_points": round(gap, 2),
        "audio_within_5_points_of_text": bool(gap <= 5.0),
        "audio_above_majority_points": round(100 * (acc["audio_finetuned"] - acc["majority"]), 2),
        "types_where_audio_beats_majority": f"{above}/{len(varying)}",
        "noisy_heldout_voice_audio_vs_asr": [noisy["audio_finetuned"], noisy["asr_pipeline"]],
        "audio_beats_asr_with_noise": bool(noisy["audio_finetuned"] is not None and noisy["asr_pipeline"] is not None
                                           and noisy["audio_finetuned"] > noisy["asr_pipeline"]),
    }
    for key, goal in (("graft_vs_asr_pipeline", 3.0), ("graft_vs_audio_seed_faithful", 3.0)):
        if key in speed:
            out[f"{key}_speed"] = speed[key]
            out[f"{key}_at_least_{goal:g}x"] = bool(speed[key] >= goal)
    return out
