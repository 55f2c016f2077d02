"""reports/RESULTS.md (and README's results block), rendered from a run's metrics.json, never by hand.

    python -m surgvqa.results_page [--metrics reports/metrics.json] [--readme README.md]

`render_results(metrics)` turns the object `report.finish_report` writes to metrics.json into Markdown: first the
headline table (every system x held-out split: macro balanced accuracy with its 95% interval, exact accuracy), then
short tables of transcription WER, the audio swap, long answers, speed and latency, the training stages, and the
targets as recorded. Every number is read from `metrics`; a key that is not there (or is null where a number is
needed) raises `MissingMetric` naming its dotted path, so the page has no silent blanks.

`write_results(metrics, reports_dir, readme=None)` writes `<reports_dir>/RESULTS.md` and, given `readme`, replaces
the text between `<!-- results:begin -->` and `<!-- results:end -->` with `render_headline(metrics)` (an error if
the markers are missing). `report.finish_report` calls `write_run_results` at the end of every run: RESULTS.md in
the run's reports folder, README's block only when the run writes the repository's own reports/.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

from .config import REPO_ROOT
from .systems import FINAL_TEST, NOISY, NOISY_ENGINE, SYSTEMS, TEST_SPLITS

BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"
RESULTS_FILE = "RESULTS.md"
SPLIT_NAMES = {"val": "val", "heldout_video": "held-out video", "heldout_voice": "held-out voice",
               NOISY: "held-out voice + OR noise", "heldout_engine": "held-out engine", "heldout_wording": "held-out wording",
               NOISY_ENGINE: "held-out engine + OR noise", FINAL_TEST: "final test"}
ASR_ORDER = ("whisper_base", "graft")
ASR_SET_NAMES = {"in_domain": "in-domain sentences", "unseen": "unseen sentences",
                 "engine_in_domain": "in-domain sentences, held-out engine", "engine_unseen": "unseen sentences, held-out engine"}
# The training stages: (name in the table, notebook, key of its StageResult metrics).
STAGES = (("stage 0: base VLM", "02_stage1", "stage0"), ("stage 1: speech alignment", "02_stage1", "stage1"),
          ("stage 2: graft", "03_stage2", "audio"), ("stage 2: text model", "03_stage2", "text"))
DASH = "—"


class MissingMetric(KeyError):
    """A number the results page needs is not in metrics.json; `path` is its dotted key."""

    def __init__(self, path: str, why: str = "missing"):
        super().__init__(path)
        self.path, self.why = path, why

    def __str__(self) -> str:
        return f"metrics.json: '{self.path}' is {self.why} (the results page needs it)"


class MarkersMissing(ValueError):
    """README.md has no `<!-- results:begin -->` ... `<!-- results:end -->` block to replace."""


# ---- reading the dict ----------------------------------------------------------------------------
def _dotted(path: Iterable[str]) -> str:
    return ".".join(str(p) for p in path)


def get(metrics: Mapping, *path: str | int) -> Any:
    """metrics[path[0]][path[1]]... (an int indexes a list); MissingMetric naming the dotted path if a step is absent."""
    node: Any = metrics
    for i, key in enumerate(path):
        if isinstance(node, Mapping) and key in node:
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            node = node[key]
        else:
            raise MissingMetric(_dotted(path[: i + 1]))
    return node


def _is_num(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(float(value))


def num(metrics: Mapping, *path: str | int) -> float:
    """A finite number at `path`; MissingMetric if absent, null or not a number."""
    value = get(metrics, *path)
    if not _is_num(value):
        raise MissingMetric(_dotted(path), "null" if value is None else f"not a number ({value!r})")
    return float(value)


def pair(metrics: Mapping, *path: str) -> tuple[float, float]:
    """A [low, high] interval at `path`."""
    value = get(metrics, *path)
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_num(v) for v in value)):
        raise MissingMetric(_dotted(path), f"not a [low, high] interval ({value!r})")
    return float(value[0]), float(value[1])


def mapping(metrics: Mapping, *path: str) -> Mapping:
    value = get(metrics, *path)
    if not isinstance(value, Mapping) or not value:
        raise MissingMetric(_dotted(path), "empty or not a mapping")
    return value


def ordered(keys: Iterable[str], order: Iterable[str]) -> list[str]:
    keys, order = list(keys), tuple(order)
    return [k for k in order if k in keys] + sorted(k for k in keys if k not in order)


# ---- formatting -----------------------------------------------------------------------------------
def pct(value: float) -> str:
    return f"{100 * value:.1f}"


def pct_ci(value: float, ci: tuple[float, float]) -> str:
    return f"{pct(value)} [{pct(ci[0])}, {pct(ci[1])}]"


def fixed(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def count(value: float) -> str:
    return f"{int(value):,}" if value == int(value) else f"{value:g}"


def table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return " / ".join(_scalar(v) for v in value)
    if value is None:
        return "null"
    return str(value)


# ---- the headline ---------------------------------------------------------------------------------
def scored_systems(metrics: Mapping) -> tuple[list[str], list[str]]:
    """(systems with accuracy on the held-out splits, speed-only systems whose held-out accuracies are all null)."""
    systems = mapping(metrics, "systems")
    scored, speed_only = [], []
    for sid in ordered(systems, SYSTEMS):
        values = [get(metrics, "systems", sid, key, split) for key in ("balanced_accuracy", "accuracy")
                  for split in headline_splits(metrics)]
        (speed_only if all(v is None for v in values) else scored).append(sid)
    if not scored:
        raise MissingMetric("systems", "without any system scored on the held-out splits")
    return scored, speed_only


def headline_splits(metrics: Mapping) -> tuple[str, ...]:
    """The dev-test splits the run scored (a run before the held-out engine has two), and the final test where the
    run scored it (the reference run)."""
    rows = get(metrics, "notebooks", "04_evaluation", "rows")
    return tuple(s for s in (*TEST_SPLITS, FINAL_TEST) if isinstance(rows, Mapping) and s in rows)


def headline_table(metrics: Mapping) -> str:
    scored, _ = scored_systems(metrics)
    splits = headline_splits(metrics)
    head = ["system"] + [f"balanced, {SPLIT_NAMES[s]}" for s in splits] + [f"exact, {SPLIT_NAMES[s]}" for s in splits]
    rows = []
    for sid in scored:
        row = [str(get(metrics, "systems", sid, "label"))]
        row += [pct_ci(num(metrics, "systems", sid, "balanced_accuracy", s), pair(metrics, "systems", sid, "balanced_ci95", s))
                for s in splits]
        row += [pct(num(metrics, "systems", sid, "accuracy", s)) for s in splits]
        rows.append(row)
    return table(head, rows)


def render_headline(metrics: Mapping) -> str:
    """The headline: one line naming the run, the table, and the systems timed but not scored. README's block."""
    _, speed_only = scored_systems(metrics)
    rows, scored_splits = get(metrics, "notebooks", "04_evaluation", "rows"), headline_splits(metrics)
    per_split = ", ".join(f"{SPLIT_NAMES.get(s, s)} {count(num(metrics, 'notebooks', '04_evaluation', 'rows', s))}"
                          for s in scored_splits if s in rows) if isinstance(rows, Mapping) else ""
    if not per_split:
        raise MissingMetric("notebooks.04_evaluation.rows", "without a held-out split")
    unscored = [SPLIT_NAMES.get(s, s) for s in TEST_SPLITS if s not in scored_splits]
    if unscored:  # a run made by code from before these splits existed
        per_split += f"; **not scored by this run:** {', '.join(unscored)} (its code had no such split)"
    lines = [
        f"Run `{get(metrics, 'params_hash')}` (`{get(metrics, 'params_source')}`), rows per split: {per_split}. "
        "Macro balanced accuracy (the per-type mean recall over answer classes, averaged over the types whose "
        "answers vary; a constant answer scores 1/K) with its 95% bootstrap interval, and exact accuracy, in percent:",
        "",
        headline_table(metrics),
    ]
    if speed_only:
        labels = ", ".join(str(get(metrics, "systems", sid, "label")) for sid in speed_only)
        lines += ["", f"Timed for speed only (no accuracy recorded): {labels}."]
    choice = which_system_line(metrics)
    if choice:
        lines += ["", choice]
    lines += ["", seed_spread_line(metrics)]
    stale = get(metrics, "stale")
    if stale:
        lines += ["", f"**Stale:** metrics of {', '.join(map(str, stale))} were produced with other params."]
    return "\n".join(lines)


CASCADES = ("asr_pipeline", "asr_prompted")
# where the choice between hearing and transcribing is made: speech of an engine no training pool heard, quiet and noisy
CHOICE_SPLITS = (("heldout_engine", "quiet"), (NOISY_ENGINE, "with operating-room noise"))


def which_system_line(metrics: Mapping) -> str | None:
    """Which system to use, from the held-out engine's rows: per condition, the graft against the stronger cascade
    there (its paired claim decides), then both single-question latencies; None for a run without those claims."""
    claims = [c for c in metrics.get("comparisons") or [] if c.get("a") == "audio_finetuned" and c.get("b") in CASCADES
              and c.get("metric") == "macro_balanced_accuracy"]
    parts, cascades = [], []
    for split, condition in CHOICE_SPLITS:
        here = {c["b"]: c for c in claims if c["split"] == split}
        if not here:
            continue
        b = max(here, key=lambda s: num(metrics, "systems", s, "balanced_accuracy", split))
        c, label = here[b], str(get(metrics, "systems", b, "label"))
        lo, hi = c["ci95"]
        verdict = ("the graft" if c["shown"] else f"the cascade ({label})" if hi < 0
                   else f"either (no difference shown against {label})")
        parts.append(f"{condition}, {verdict}: graft − cascade {fixed(100 * c['diff'])} points "
                     f"[{fixed(100 * lo)}, {fixed(100 * hi)}]")
        cascades.append(b)
    if not parts:
        return None
    latency = mapping(metrics, "notebooks", "04_latency", "systems")
    timed = [sid for sid in ("audio_finetuned", *dict.fromkeys(cascades)) if sid in latency]
    speed = "; ".join(f"{get(metrics, 'systems', sid, 'label')} {fixed(num(metrics, 'notebooks', '04_latency', 'systems', sid, 'latency_ms_p50'))} ms"
                      for sid in timed)
    return ("Which system to use for speech like the held-out engine's (macro balanced, paired, the stronger cascade "
            "on each condition): " + "; ".join(parts) + f". One question's latency (p50): {speed}.")


def seed_spread_line(metrics: Mapping) -> str:
    """Stage 2's seed spread (`surgvqa.seed_spread`) beside the headline: mean ± standard deviation [range] of macro
    balanced accuracy per dev-test split, or a line saying it was not measured for this run."""
    notebooks = metrics.get("notebooks") if isinstance(metrics.get("notebooks"), Mapping) else {}
    record = notebooks.get("seed_spread") if isinstance(notebooks.get("seed_spread"), Mapping) else None
    if not record or (metrics.get("notebook_params_hash") or {}).get("seed_spread") != metrics.get("params_hash"):
        return ("Seed spread of stage 2: not measured for this run (`python -m surgvqa.seed_spread`); a gap between "
                "two systems is not read as a finding without it.")
    parts = []
    for sid in ("audio_finetuned", "text_finetuned"):
        cells = []
        for split in (s for s in TEST_SPLITS if s in mapping(metrics, "notebooks", "seed_spread", "spread", sid)):
            s = get(metrics, "notebooks", "seed_spread", "spread", sid, split)
            cells.append(f"{SPLIT_NAMES[split]} {pct(s['mean'])} ± {pct(s['sd'])} [{pct(s['min'])}, {pct(s['max'])}]")
        parts.append(f"{get(metrics, 'systems', sid, 'label')}: " + "; ".join(cells))
    seeds = ", ".join(map(str, get(metrics, "notebooks", "seed_spread", "seeds")))
    return (f"Seed spread of stage 2 (seeds {seeds}; macro balanced, mean ± standard deviation [range], in percent): "
            + ". ".join(parts) + ". A gap smaller than this spread is not a finding.")


# ---- the later sections ---------------------------------------------------------------------------
def noisy_section(metrics: Mapping) -> str:
    scored, _ = scored_systems(metrics)
    heard = [sid for sid in scored if NOISY in mapping(metrics, "systems", sid, "balanced_accuracy")]
    if not heard:
        raise MissingMetric(f"systems.*.balanced_accuracy.{NOISY}", "missing for every system")
    snr = num(metrics, "notebooks", "04_evaluation", "options", "noise_snr_db")
    rows = [[str(get(metrics, "systems", sid, "label")),
             pct_ci(num(metrics, "systems", sid, "balanced_accuracy", NOISY), pair(metrics, "systems", sid, "balanced_ci95", NOISY)),
             pct(num(metrics, "systems", sid, "accuracy", NOISY))] for sid in heard]
    return (f"## Held-out voices with operating-room noise ({fixed(snr)} dB SNR)\n\nThe systems that hear the question.\n\n"
            + table(["system", "balanced", "exact"], rows))


def wording_section(metrics: Mapping) -> str | None:
    """The held-out-wording rows next to the same rows in the training wording (held-out voice): macro balanced
    accuracy and the share of answers from another question type's vocabulary; None for a run without them."""
    scored, _ = scored_systems(metrics)
    systems = [sid for sid in scored if get(metrics, "systems", sid, "balanced_accuracy").get("heldout_wording") is not None]
    if not systems:
        return None
    rows = []
    for sid in systems:
        cells = [str(get(metrics, "systems", sid, "label"))]
        for split in ("heldout_voice", "heldout_wording"):
            cells.append(pct_ci(num(metrics, "systems", sid, "balanced_accuracy", split), pair(metrics, "systems", sid, "balanced_ci95", split)))
        cells += [pct(num(metrics, "systems", sid, "another_type_answers", s)) for s in ("heldout_voice", "heldout_wording")]
        rows.append(cells)
    return ("## New wordings\n\nThe held-out-voice rows asked again, by the same voices, in wordings no training pool uses "
            "(macro balanced accuracy with its interval; the share of answers from another question type's vocabulary, "
            "in percent). The paired differences are under Claims.\n\n"
            + table(["system", "balanced, training wording", "balanced, held-out wording", "another type's answer, training wording",
                     "another type's answer, held-out wording"], rows))


def transcription_section(metrics: Mapping) -> str:
    asr = mapping(metrics, "asr")
    rows = []
    for who in ordered(asr, ASR_ORDER):
        for name in ordered(mapping(metrics, "asr", who), tuple(ASR_SET_NAMES)):
            p = ("asr", who, name)
            rows.append([who, ASR_SET_NAMES.get(name, name), count(num(metrics, *p, "n")),
                         pct_ci(num(metrics, *p, "wer"), pair(metrics, *p, "wer_ci95")), pct(num(metrics, *p, "cer")),
                         pct_ci(num(metrics, *p, "wer_noisy"), pair(metrics, *p, "wer_noisy_ci95")),
                         pct(num(metrics, *p, "cer_noisy"))])
    return ("## Transcription (held-out voices)\n\nWER with its 95% bootstrap interval over utterances, and CER, in "
            "percent; clean and with operating-room noise. `graft` is the model that also answers.\n\n"
            + table(["transcriber", "sentences", "utterances", "WER", "CER", "WER, noisy", "CER, noisy"], rows))


def swap_section(metrics: Mapping) -> str:
    s = ("notebooks", "05_error_analysis", "audio_swap")
    v = (*s, "same_vocabulary")
    rows = [
        ["any other type's question", count(num(metrics, *s, "rows")), pct(num(metrics, *s, "balanced", "true_audio")),
         pct(num(metrics, *s, "balanced", "swapped_audio")), pct(num(metrics, *s, "balanced", "chance")),
         _scalar(get(metrics, *s, "swapped_balanced_within_0.10_of_chance"))],
        ["another yes/no type's question", count(num(metrics, *v, "rows")), pct(num(metrics, *v, "balanced", "true_audio")),
         pct(num(metrics, *v, "balanced", "swapped_audio")), pct(num(metrics, *v, "balanced", "chance")),
         _scalar(get(metrics, *v, "swapped_balanced_within_0.10_of_chance"))],
    ]
    return ("## Audio swap (the graft, test rows)\n\nEach question's audio replaced by another question's, macro balanced "
            "accuracy in percent. With any other type's audio "
            f"{pct(num(metrics, *s, 'changed'))}% of the answers change, "
            f"{pct(num(metrics, *s, 'swapped_in_donor_vocab'))}% to a word of the heard question's vocabulary; exact "
            f"accuracy {pct(num(metrics, *s, 'true_audio', 'accuracy'))} -> {pct(num(metrics, *s, 'swapped_audio', 'accuracy'))}.\n\n"
            + table(["swapped in", "rows", "true audio", "swapped audio", "chance", "within 0.10 of chance"], rows))


def long_answers_section(metrics: Mapping) -> str:
    long = mapping(metrics, "long_answers")
    rows = [[str(get(metrics, "systems", sid, "label")), count(num(metrics, "long_answers", sid, "n")),
             pct_ci(num(metrics, "long_answers", sid, "keyword_accuracy"), pair(metrics, "long_answers", sid, "keyword_ci95")),
             f"{num(metrics, 'long_answers', sid, 'bleu4'):.3f}", f"{num(metrics, 'long_answers', sid, 'rouge_l'):.3f}"]
            for sid in ordered(long, SYSTEMS)]
    return ("## Long answers (held-out video)\n\nThe same questions asked for a sentence: keyword accuracy (the short "
            "answer as a whole phrase, 95% interval, percent), BLEU-4 and ROUGE-L against the reference sentence.\n\n"
            + table(["system", "rows", "keyword accuracy", "BLEU-4", "ROUGE-L"], rows))


def speed_section(metrics: Mapping) -> str:
    systems = mapping(metrics, "systems")
    batched = [[str(get(metrics, "systems", sid, "label")), fixed(num(metrics, "systems", sid, "samples_per_s"), 2),
                count(num(metrics, "systems", sid, "batch_size")), count(num(metrics, "systems", sid, "speed_rows"))]
               for sid in ordered(systems, SYSTEMS)]
    ratios = mapping(metrics, "notebooks", "04_evaluation", "speed_ratios")
    ratio_text = "; ".join(f"`{k}` {fixed(num(metrics, 'notebooks', '04_evaluation', 'speed_ratios', k), 2)}x"
                           for k in sorted(ratios))
    lat = ("notebooks", "04_latency")
    mapping(metrics, *lat, "method")
    single = []
    for sid in ordered(mapping(metrics, *lat, "systems"), SYSTEMS):
        p = (*lat, "systems", sid)
        iqr = pair(metrics, *p, "latency_ms_iqr")
        label = get(metrics, "systems", sid, "label") if sid in systems else sid
        single.append([str(label), fixed(num(metrics, *p, "latency_ms_p50")), f"{fixed(iqr[0])}–{fixed(iqr[1])}",
                       fixed(num(metrics, *p, "latency_ms_p95")), fixed(num(metrics, *p, "transcription_ms_p50")),
                       fixed(num(metrics, *p, "prefill_ms_p50")), fixed(num(metrics, *p, "decode_ms_per_token_p50"), 2),
                       count(num(metrics, *p, "input_tokens")), count(num(metrics, *p, "audio_tokens"))])
    return ("## Speed and latency\n\nBatched, files to answer text (samples per second; "
            f"ratios of the graft's throughput: {ratio_text}):\n\n"
            + table(["system", "samples/s", "batch", "rows"], batched)
            + f"\n\nOne question at a time: batch {get(metrics, *lat, 'method', 'batch_size')}, "
              f"{get(metrics, *lat, 'method', 'rows')} rows after {get(metrics, *lat, 'method', 'warmup')} warm-up, "
              f"{get(metrics, *lat, 'method', 'max_new_tokens')} new tokens, {get(metrics, *lat, 'method', 'device')}, "
              f"{get(metrics, *lat, 'method', 'torch_threads')} torch threads; milliseconds:\n\n"
            + table(["system", "p50", "IQR", "p95", "transcription p50", "prefill p50", "decode / token p50",
                     "input tokens", "audio tokens"], single))


def training_section(metrics: Mapping) -> str:
    rows = []
    for title, stem, key in STAGES:
        stage = get(metrics, "notebooks", stem, key)
        if stage is None:  # recorded as not run (stage 0 exists only where the base VLM is built here)
            rows.append([title, "not run", DASH, DASH, DASH, DASH, DASH])
            continue
        p = ("notebooks", stem, key)
        rows.append([title, "reused" if get(metrics, *p, "reused") else "trained", count(num(metrics, *p, "epochs")),
                     count(num(metrics, *p, "global_step")), count(num(metrics, *p, "train_examples")),
                     f"{num(metrics, *p, 'best_eval_loss'):.4f}", fixed(num(metrics, *p, "wall_time_s"))])
    timings = get(metrics, "timings")
    if not isinstance(timings, list) or not timings:
        raise MissingMetric("timings", "empty or not a list")
    seconds = [num(metrics, "timings", i, "seconds") for i in range(len(timings))]
    walls = [[str(get(metrics, "timings", i, "notebook")), fixed(s)] for i, s in enumerate(seconds)]
    total = sum(seconds)
    wer = num(metrics, "notebooks", "02_stage1", "stage1", "best_eval_wer")
    return ("## Training\n\nEach stage's run as recorded (a reused stage was trained by an earlier run with the same "
            f"stamp; its wall time is that run's). Stage 1 keeps the epoch with the best val WER: {wer:.4f}.\n\n"
            + table(["stage", "this run", "epochs", "optimizer steps", "train examples", "best eval loss", "wall s"], rows)
            + f"\n\nNotebook wall times (this run), {fixed(total / 60)} min in all:\n\n"
            + table(["notebook", "seconds"], walls))


def targets_section(metrics: Mapping) -> str:
    targets = mapping(metrics, "notebooks", "04_evaluation", "targets")
    rows = [[f"`{k}`", _scalar(targets[k])] for k in sorted(targets)]
    return ("## Targets, as notebook 04 recorded them\n\nFractions as fractions, points as points; `yes` / `no` is "
            "whether the target is met.\n\n" + table(["target", "value"], rows))


METRIC_NAMES = {"macro_balanced_accuracy": "macro balanced", "accuracy": "exact",
                "long_keyword_accuracy": "long-answer keyword", "wer": "WER (lower is better: a − b > 0)"}


def comparisons_section(metrics: Mapping) -> str:
    """Every claim as a paired difference of macro balanced accuracy on the same rows (a run made before the
    evidence statistics records none, and says so)."""
    claims = metrics.get("comparisons") or []
    if not claims:
        return "## Claims, paired\n\nThis run recorded no paired comparisons (made before `surgvqa.stats`)."
    rows = [[(f"{c['scale']:g} × " if c.get("scale") is not None else "") + f"{c['a']} − {c['b']}", c["split"], METRIC_NAMES.get(c["metric"], c["metric"]), fixed(100 * c["diff"]),
             f"[{fixed(100 * c['ci95'][0])}, "
             f"{fixed(100 * c['ci95'][1])}]", fixed(100 * c["margin"]), "shown" if c["shown"] else "not shown"]
            for c in claims]
    return ("## Claims, paired\n\nDifference in points on the same rows, with its clustered bootstrap interval; a claim "
            "is shown only when the interval's lower end clears its margin.\n\n"
            + table(["claim", "split", "metric", "difference", "95% interval", "margin", "verdict"], rows))


def render_results(metrics: Mapping) -> str:
    """The whole RESULTS.md."""
    profile = get(metrics, "params", "profile")
    head = (f"# Results: `{profile}` run `{get(metrics, 'params_hash')}`\n\n"
            f"Params hash `{get(metrics, 'params_hash')}`, params source `{get(metrics, 'params_source')}`. "
            "Generated from this folder's `metrics.json` by `surgvqa.results_page` at the end of the run; do not edit "
            "by hand. Per type, per template and the figures: `index.html` and the executed notebooks beside it.")
    sections = [head, "## Headline (held-out splits)\n\n" + render_headline(metrics), noisy_section(metrics),
                wording_section(metrics), transcription_section(metrics), swap_section(metrics),
                long_answers_section(metrics), speed_section(metrics), training_section(metrics),
                comparisons_section(metrics), targets_section(metrics)]
    return "\n\n".join(s for s in sections if s is not None) + "\n"


# ---- writing --------------------------------------------------------------------------------------
def replace_block(text: str, block: str, where: str = "README.md") -> str:
    """`text` with the lines between the results markers replaced by `block`."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < 0 or end < start:
        raise MarkersMissing(f"{where}: no '{BEGIN}' ... '{END}' block to write the results into")
    return text[: start + len(BEGIN)] + "\n" + block.strip("\n") + "\n" + text[end:]


def read_block(text: str, where: str = "README.md") -> str:
    """The text between the results markers (without the newlines next to them)."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < 0 or end < start:
        raise MarkersMissing(f"{where}: no '{BEGIN}' ... '{END}' block")
    return text[start + len(BEGIN): end].strip("\n")


def write_results(metrics: Mapping, reports_dir: str | Path, readme: str | Path | None = None) -> Path:
    """Write <reports_dir>/RESULTS.md; with `readme`, also its results block (headline table). Raises on a missing key
    (nothing is written then) or, for the README, missing markers (RESULTS.md is written first)."""
    page = render_results(metrics)
    block = render_headline(metrics) if readme is not None else None
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    out = reports_dir / RESULTS_FILE
    out.write_text(page, encoding="utf-8")
    if readme is not None:
        readme = Path(readme)
        readme.write_text(replace_block(readme.read_text(encoding="utf-8"), block, str(readme)), encoding="utf-8")
    return out


def repo_readme(reports_dir: str | Path) -> Path | None:
    """README.md when `reports_dir` is the repository's own reports/ (the reference profile), else None."""
    return REPO_ROOT / "README.md" if Path(reports_dir).resolve() == (REPO_ROOT / "reports").resolve() else None


def write_run_results(metrics: Mapping, reports_dir: str | Path, readme: str | Path | None = None) -> Path:
    """The run's end (report.finish_report): `write_results`, except that a run whose metrics lack a key (a partial
    run, or notebooks not run yet) gets a RESULTS.md that says which key is missing, loudly, and README is left as is."""
    try:
        return write_results(metrics, reports_dir, readme)
    except MissingMetric as e:
        out = Path(reports_dir) / RESULTS_FILE
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(f"# Results: incomplete run\n\n**Not rendered:** {e}. The page is written when metrics.json "
                       "holds every notebook's metrics (run the whole pipeline).\n", encoding="utf-8")
        print(f"[results] WARNING: {out} not rendered: {e}" + ("; README.md left as is" if readme else ""), file=sys.stderr)
        return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metrics", default=str(REPO_ROOT / "reports" / "metrics.json"))
    parser.add_argument("--readme", help="README to update (default: the repository's, when --metrics is in its reports/)")
    args = parser.parse_args(argv)
    path = Path(args.metrics)
    metrics = json.loads(path.read_text(encoding="utf-8"))
    readme = Path(args.readme) if args.readme else repo_readme(path.parent)
    out = write_results(metrics, path.parent, readme)
    print(f"[results] {out}" + (f"\n[results] {readme} (results block)" if readme else ""))


if __name__ == "__main__":
    main(sys.argv[1:])
