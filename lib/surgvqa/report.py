"""Merge every notebook's metrics into one JSON and render a self-contained index.html.

    python -m surgvqa.report --params params/default.yaml

`finish_report(cfg, timings)` is the last step of `make report`: it reads
`cfg.paths.metrics/*.json` (written by `Config.write_metrics`), flags files produced with
different params as stale, and writes `cfg.paths.reports/metrics.json` and
`cfg.paths.reports/index.html` (inline CSS, no JS, no external resources; figures are
linked relative to the sibling figures directory), then `RESULTS.md` beside them (`surgvqa.results_page`; for the
repository's own reports/, README's results block too).

Accuracies, confidence intervals, WER and CER are expected as fractions (0.713) and
rendered as percent (71.3).
"""
from __future__ import annotations

import argparse
import html
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from . import results_page
from .config import Config, json_default
from .systems import SPLIT_TITLES, SYSTEMS, TEST_SPLITS

EVAL_STEM = "04_evaluation"
ASR_ORDER = ("whisper_base", "graft")
ASR_COLUMNS = (("wer", "WER clean"), ("cer", "CER clean"), ("wer_noisy", "WER noisy"), ("cer_noisy", "CER noisy"))
ASR_SETS = {"in_domain": "in-domain sentences", "unseen": "unseen sentences",
            "engine_in_domain": "in-domain sentences, held-out engine", "engine_unseen": "unseen sentences, held-out engine"}  # evaluate.TRANSCRIPTION_SETS
TRAINING_PREFIXES = ("02_", "03_")
FIGURE_PREFIXES = ("02_", "03_", "04_", "05_")
NOTEBOOK_HTML = re.compile(r"^\d\d_.+\.html$")
MAX_TRAINING_ROWS = 25
DASH = "—"


# ---- merging --------------------------------------------------------------------------------
def merge_metrics(cfg: Config, timings: list[dict] | None = None) -> dict:
    """Read every `cfg.paths.metrics/*.json` into one dict; files from other params are listed in "stale"."""
    own_hash = cfg.params_hash()
    notebooks: dict[str, Any] = {}
    hashes: dict[str, str | None] = {}
    stale: list[str] = []
    files = sorted(cfg.paths.metrics.glob("*.json")) if cfg.paths.metrics.is_dir() else []
    for path in files:
        try:
            payload = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: metrics file is not valid JSON: {e}") from None
        if isinstance(payload, dict) and "metrics" in payload:
            metrics, file_hash = payload["metrics"], payload.get("params_hash")
        else:  # not written by Config.write_metrics: keep it, but it cannot prove its params
            metrics, file_hash = payload, None
        notebooks[path.stem] = metrics
        hashes[path.stem] = file_hash
        if file_hash != own_hash:
            stale.append(path.stem)
    evaluation = notebooks.get(EVAL_STEM)
    evaluation = evaluation if isinstance(evaluation, dict) else {}
    # Notebook 04's single-stream latency (metrics/04_latency.json, surgvqa.latency) beside each system's batched figures.
    latency = notebooks.get("04_latency")
    latency = latency if isinstance(latency, dict) else {}
    systems = {k: dict(v) for k, v in (evaluation.get("systems") or {}).items()}
    for system, figures in (latency.get("systems") or {}).items():
        if system in systems:
            systems[system]["single_stream"] = figures
    return {
        "params": cfg.to_dict(),
        "params_hash": own_hash,
        "params_source": cfg.params_source,
        "notebooks": notebooks,
        "notebook_params_hash": hashes,
        "stale": stale,
        "timings": list(timings or []),
        "systems": systems,
        "asr": evaluation.get("asr") or {},
        "long_answers": evaluation.get("long_answers") or {},
        "comparisons": evaluation.get("comparisons") or [],
    }


def write_metrics_json(cfg: Config, merged: dict) -> Path:
    cfg.paths.reports.mkdir(parents=True, exist_ok=True)
    out = cfg.paths.reports / "metrics.json"
    out.write_text(json.dumps(merged, indent=2, sort_keys=True, default=json_default) + "\n")
    return out


# ---- formatting -----------------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any) -> float | None:
    """A finite float, or None for missing / null / non-numeric / NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def fmt_pct(value: Any) -> str:
    v = _num(value)
    return DASH if v is None else f"{100 * v:.1f}"


def fmt_acc_ci(acc: Any, ci: Any) -> str:
    """0.713, [0.66, 0.761] -> '71.3 [66.0, 76.1]'; CI omitted if absent."""
    if _num(acc) is None:
        return DASH
    text = fmt_pct(acc)
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_num(c) is not None for c in ci):
        text += f" [{fmt_pct(ci[0])}, {fmt_pct(ci[1])}]"
    return text


def _fmt_rate(value: Any) -> str:
    v = _num(value)
    if v is None:
        return DASH
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


def _fmt_ms(value: Any) -> str:
    v = _num(value)
    return DASH if v is None else f"{v:.1f}"


def _fmt_int(value: Any) -> str:
    v = _num(value)
    return DASH if v is None else str(int(v)) if v == int(v) else f"{v:g}"


def _fmt_scalar(value: Any) -> str:
    if value is None:
        return DASH
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _ordered(mapping: dict, order: tuple[str, ...]) -> list[str]:
    return [k for k in order if k in mapping] + [k for k in mapping if k not in order]


# ---- HTML sections --------------------------------------------------------------------------
CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0}th,td{border:1px solid #bbb;padding:4px 8px}
th{background:#f2f2f2;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.meta{color:#555}code{background:#f5f5f5;padding:0 3px}pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em}
.warning{border:2px solid #d9822b;background:#fff4e5;padding:.6em 1em;margin:1em 0}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{color:#555;font-size:.9em}
.muted{color:#777}
"""


def _header(cfg: Config, merged: dict) -> str:
    params_yaml = yaml.safe_dump(merged.get("params", {}), sort_keys=False, default_flow_style=False)
    return (
        f"<h1>SurgViVQA-Audio — {_e(cfg.profile)} run</h1>\n"
        f'<p class="meta">Params: <code>{_e(merged.get("params_source", ""))}</code> · '
        f'hash <code>{_e(merged.get("params_hash", ""))}</code></p>\n'
        f"<details><summary>Parameters (YAML)</summary><pre>{_e(params_yaml)}</pre></details>\n"
    )


def _stale_box(merged: dict) -> str:
    stale = merged.get("stale") or []
    if not stale:
        return ""
    hashes = merged.get("notebook_params_hash", {})
    items = "".join(
        f"<li><code>{_e(s)}</code> (params hash <code>{_e(hashes.get(s) or 'missing')}</code>)</li>" for s in stale
    )
    return (
        '<div class="warning"><strong>Stale metrics:</strong> these files were produced with different params '
        f'than this run (<code>{_e(merged.get("params_hash", ""))}</code>); re-run their notebooks.<ul>{items}</ul></div>\n'
    )


def _notebook_links(cfg: Config, merged: dict) -> str:
    seconds = {}
    for t in merged.get("timings") or []:
        if isinstance(t, dict) and "notebook" in t:
            seconds[Path(str(t["notebook"])).stem] = t.get("seconds")
    pages = sorted(p.name for p in cfg.paths.reports.glob("*.html") if NOTEBOOK_HTML.match(p.name)) if cfg.paths.reports.is_dir() else []
    if not pages:
        return '<h2>Notebooks</h2>\n<p class="muted">No executed notebooks found.</p>\n'
    items = []
    for name in pages:
        s = _num(seconds.get(Path(name).stem))
        wall = f' <span class="muted">({s:.1f} s)</span>' if s is not None else ""
        items.append(f'<li><a href="{_e(quote(name))}">{_e(name)}</a>{wall}</li>')
    return "<h2>Notebooks</h2>\n<ul>" + "".join(items) + "</ul>\n"


def _headline(merged: dict) -> str:
    """The numbers that say whether the models see: macro balanced accuracy on the held-out splits, and
    on how many types each beats the training-majority answer."""
    systems = merged.get("systems") or {}
    rows = []
    for sid in _ordered(systems, SYSTEMS):
        s = systems[sid] if isinstance(systems[sid], dict) else {}
        bal, ci = s.get("balanced_accuracy") or {}, s.get("balanced_ci95") or {}
        if not any(bal.get(split) is not None for split in TEST_SPLITS):  # a split the run lacks shows "–"
            continue
        cells = "".join(f'<td class="num">{_e(fmt_acc_ci(bal.get(split), ci.get(split)))}</td>' for split in TEST_SPLITS)
        rows.append(f'<tr><td title="{_e(sid)}">{_e(s.get("label") or sid)}</td>{cells}'
                    f'<td class="num">{_e(_fmt_int(s.get("types_beating_majority")))}</td></tr>')
    if not rows:
        return ""
    head = "".join(f"<th>{_e(SPLIT_TITLES[split])} %</th>" for split in TEST_SPLITS)
    return (
        "<h2>Headline: macro balanced accuracy</h2>\n<p class=\"meta\">Mean over the question types whose test "
        "answers vary of the per-type mean class recall (a constant answer per type scores 1/K), with 95% bootstrap "
        "CI; and the number of types on which the system beats the training-majority answer (held-out video).</p>\n"
        f"<table><tr><th>System</th>{head}<th>Types beating majority</th></tr>\n" + "\n".join(rows) + "\n</table>\n"
    )


def _systems_table(merged: dict, key: str = "accuracy", ci_key: str = "ci95", title: str = "Systems",
                   what: str = "Exact accuracy", speed: bool = True) -> str:
    systems = merged.get("systems") or {}
    if not systems:
        return f'<h2>{_e(title)}</h2>\n<p class="muted">No evaluation metrics (04_evaluation) yet.</p>\n'
    ids = _ordered(systems, SYSTEMS)
    best = {}
    for split, _ in SPLIT_TITLES.items():
        values = [_num((systems[i].get(key) or {}).get(split)) for i in ids if isinstance(systems[i], dict)]
        values = [v for v in values if v is not None]
        best[split] = max(values) if values else None
    head = "".join(f"<th>{_e(t)} %</th>" for _, t in SPLIT_TITLES.items())
    rows = []
    for sid in ids:
        s = systems[sid] if isinstance(systems[sid], dict) else {}
        acc, ci = s.get(key) or {}, s.get(ci_key) or {}
        cells = [f'<td title="{_e(sid)}">{_e(s.get("label") or sid)}</td>']
        for split, _ in SPLIT_TITLES.items():
            text = _e(fmt_acc_ci(acc.get(split), ci.get(split)))
            v = _num(acc.get(split))
            if v is not None and best[split] is not None and v == best[split]:
                text = f"<strong>{text}</strong>"
            cells.append(f'<td class="num">{text}</td>')
        if speed:
            single = s.get("single_stream") or {}
            cells += [
                f'<td class="num">{_e(_fmt_rate(s.get("samples_per_s")))}</td>',
                # one question at a time (notebook 04's single-stream timing), not a batch's time per row
                f'<td class="num">{_e(_fmt_ms(single.get("latency_ms_p50")))} / {_e(_fmt_ms(single.get("latency_ms_p95")))}</td>',
                f'<td class="num">{_e(_fmt_int(s.get("batch_size")))}</td>',
            ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    speed_head = "<th>Samples/s (batched)</th><th>Single-question latency p50 / p95 ms</th><th>Batch</th>" if speed else ""
    return (
        f"<h2>{_e(title)}</h2>\n<p class=\"meta\">{_e(what)} in percent with 95% CI; best per column in bold.</p>\n"
        f"<table><tr><th>System</th>{head}{speed_head}</tr>\n"
        + "\n".join(rows) + "\n</table>\n"
    )


def _asr_table(merged: dict) -> str:
    """WER/CER (%, 95% CI) per transcriber and held-out-voice sentence set, clean and with noise."""
    asr = merged.get("asr") or {}
    if not asr:
        return ""
    head = "".join(f"<th>{_e(t)} %</th>" for _, t in ASR_COLUMNS)
    rows = []
    for aid in _ordered(asr, ASR_ORDER):
        per_set = asr[aid] if isinstance(asr[aid], dict) else {}
        for set_id in _ordered(per_set, tuple(ASR_SETS)):
            a = per_set[set_id] if isinstance(per_set[set_id], dict) else {}
            cells = "".join(f'<td class="num">{_e(fmt_acc_ci(a.get(k), a.get(f"{k}_ci95")))}</td>' for k, _ in ASR_COLUMNS)
            rows.append(f"<tr><td>{_e(aid)}</td><td>{_e(ASR_SETS.get(set_id, set_id))} (n={_e(_fmt_int(a.get('n')))})</td>"
                        f"{cells}</tr>")
    return ("<h2>Speech recognition (held-out voices)</h2>\n<p class=\"meta\">Word and character error rates in percent "
            "with 95% bootstrap CI over utterances; lower is better.</p>\n"
            f"<table><tr><th>Transcriber</th><th>Sentences</th>{head}</tr>\n" + "\n".join(rows) + "\n</table>\n")


def _long_answers_table(merged: dict) -> str:
    """Keyword accuracy (with CI), BLEU-4 and ROUGE-L of each system's sentence answers."""
    long = merged.get("long_answers") or {}
    if not long:
        return ""
    labels = {k: (v or {}).get("label") for k, v in (merged.get("systems") or {}).items()}
    rows = []
    for sid in _ordered(long, SYSTEMS):
        a = long[sid] if isinstance(long[sid], dict) else {}
        rows.append(f"<tr><td>{_e(labels.get(sid) or sid)}</td>"
                    f'<td class="num">{_e(fmt_acc_ci(a.get("keyword_accuracy"), a.get("keyword_ci95")))}</td>'
                    f'<td class="num">{_e(fmt_pct(a.get("bleu4")))}</td><td class="num">{_e(fmt_pct(a.get("rouge_l")))}</td>'
                    f'<td class="num">{_e(_fmt_int(a.get("n")))}</td></tr>')
    return ("<h2>Long answers (held-out video)</h2>\n<p class=\"meta\">The same rows answered in a sentence: keyword "
            "accuracy (the short answer as a whole phrase, 95% CI), BLEU-4 and ROUGE-L against the reference sentence, "
            "in percent.</p>\n<table><tr><th>System</th><th>Keyword accuracy %</th><th>BLEU-4 %</th><th>ROUGE-L %</th>"
            "<th>Rows</th></tr>\n" + "\n".join(rows) + "\n</table>\n")


def _training(merged: dict) -> str:
    notebooks = merged.get("notebooks") or {}
    parts = []
    for stem in sorted(notebooks):
        if not stem.startswith(TRAINING_PREFIXES) or not isinstance(notebooks[stem], dict):
            continue
        scalars = [(k, v) for k, v in sorted(notebooks[stem].items()) if v is None or isinstance(v, (int, float, str, bool))]
        if not scalars:
            continue
        rows = "".join(
            f'<tr><td>{_e(k)}</td><td class="num">{_e(_fmt_scalar(v))}</td></tr>' for k, v in scalars[:MAX_TRAINING_ROWS]
        )
        more = f'<p class="muted">… {len(scalars) - MAX_TRAINING_ROWS} more in metrics.json</p>' if len(scalars) > MAX_TRAINING_ROWS else ""
        parts.append(f"<h3>{_e(stem)}</h3>\n<table><tr><th>Metric</th><th>Value</th></tr>{rows}</table>{more}\n")
    return "<h2>Training</h2>\n" + "".join(parts) if parts else ""


def default_figures(cfg: Config) -> list[str]:
    if not cfg.paths.figures.is_dir():
        return []
    return sorted(p.name for p in cfg.paths.figures.glob("*.png") if p.name.startswith(FIGURE_PREFIXES))


def _figures(cfg: Config, figures: list[str] | None) -> str:
    names = default_figures(cfg) if figures is None else [n for n in figures if (cfg.paths.figures / n).is_file()]
    if not names:
        return ""
    rel = Path(os.path.relpath(cfg.paths.figures, cfg.paths.reports)).as_posix()
    items = "".join(
        f'<figure><img src="{_e(rel + "/" + quote(n))}" alt="{_e(n)}"><figcaption>{_e(n)}</figcaption></figure>\n' for n in names
    )
    return "<h2>Key figures</h2>\n" + items


def render_index(cfg: Config, merged: dict, figures: list[str] | None = None) -> str:
    body = (
        _header(cfg, merged) + _stale_box(merged) + _notebook_links(cfg, merged) + _headline(merged) + _systems_table(merged)
        + _systems_table(merged, "balanced_accuracy", "balanced_ci95", "Balanced accuracy", "Macro balanced accuracy", speed=False)
        + _asr_table(merged) + _long_answers_table(merged) + _training(merged) + _figures(cfg, figures)
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f"<title>SurgViVQA-Audio — {_e(cfg.profile)} run</title>\n<style>{CSS}</style></head>\n<body>\n{body}</body></html>\n"
    )


def write_index(cfg: Config, merged: dict, figures: list[str] | None = None) -> Path:
    cfg.paths.reports.mkdir(parents=True, exist_ok=True)
    out = cfg.paths.reports / "index.html"
    out.write_text(render_index(cfg, merged, figures), encoding="utf-8")
    return out


def load_timings(cfg: Config) -> list[dict]:
    path = cfg.paths.timings
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    return data if isinstance(data, list) else []


def finish_report(cfg: Config, timings: list[dict] | None = None) -> dict:
    """Merge the metrics, write metrics.json, index.html and RESULTS.md (README's results block too when the run writes
    the repository's own reports/); timings default to the run's pipeline_timings.json."""
    merged = merge_metrics(cfg, load_timings(cfg) if timings is None else timings)
    metrics_json = write_metrics_json(cfg, merged)
    index = write_index(cfg, merged)
    # rendered from the file as written, so README's block is what reports/metrics.json renders to
    results = results_page.write_run_results(json.loads(metrics_json.read_text()), cfg.paths.reports,
                                             readme=results_page.repo_readme(cfg.paths.reports))
    return {"index": index, "metrics_json": metrics_json, "merged": merged, "results": results}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params/default.yaml")
    args = parser.parse_args(argv)
    result = finish_report(Config.from_yaml(args.params))
    stale = result["merged"]["stale"]
    print(f"[report] {result['index']}\n[report] {result['metrics_json']}" + (f"\n[report] STALE: {', '.join(stale)}" if stale else ""))


if __name__ == "__main__":
    main(sys.argv[1:])
