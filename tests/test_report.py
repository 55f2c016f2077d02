"""Report: merged metrics.json and index.html from fake metrics files (no model, all under tmp_path)."""
from __future__ import annotations

import html
import json

import pytest

from surgvqa import report
from surgvqa.systems import SYSTEMS
from surgvqa.config import Config

FAKE_SYSTEMS = {
    "majority": {
        "label": "Majority answer",
        "accuracy": {"val": 0.5, "heldout_video": 0.48, "heldout_voice": 0.51, "overall": 0.492},
        "ci95": {"val": [0.4, 0.6], "heldout_video": [0.41, 0.55], "heldout_voice": [0.44, 0.58], "overall": [0.441, 0.543]},
        "samples_per_s": None, "latency_ms_p50": None, "latency_ms_p95": None, "batch_size": None,
    },
    "audio_finetuned": {
        "label": "Audio graft <script>alert(1)</script> fine-tuned",
        "accuracy": {"val": 0.7213, "heldout_video": 0.6644, "heldout_voice": 0.7031, "overall": 0.7128},
        "ci95": {"val": [0.6601, 0.7755], "heldout_video": [0.601, 0.72], "heldout_voice": [0.64, 0.76], "overall": [0.6604, 0.7612]},
        "samples_per_s": 42.37, "latency_ms_p50": 21.4, "latency_ms_p95": 33.9, "batch_size": 8,
    },
    "text_finetuned": {
        "label": "Text fine-tuned",
        "accuracy": {"val": 0.75, "heldout_video": 0.61, "heldout_voice": 0.69, "overall": 0.70},
        "ci95": {"val": [0.7, 0.8], "heldout_video": [0.55, 0.67], "heldout_voice": [0.63, 0.75], "overall": [0.65, 0.75]},
        "samples_per_s": 55.0, "latency_ms_p50": 15.0, "latency_ms_p95": 20.0, "batch_size": 8,
    },
    "audio_upstream": {
        "label": "Audio upstream-style (30 s padding)",
        "accuracy": {"val": None, "heldout_video": None, "heldout_voice": None, "overall": None},
        "ci95": {}, "samples_per_s": 3.2, "latency_ms_p50": 310.0, "latency_ms_p95": 402.5, "batch_size": 1,
    },
}
ASR = {
    "whisper_base": {"in_domain": {"n": 40, "wer": 0.081, "wer_ci95": [0.05, 0.11], "cer": 0.032, "wer_noisy": 0.214, "cer_noisy": 0.119},
                     "unseen": {"n": 30, "wer": 0.091, "cer": 0.042, "wer_noisy": 0.254, "cer_noisy": 0.139}},
    "graft": {"in_domain": {"n": 40, "wer": 0.153, "cer": 0.071, "wer_noisy": 0.302, "cer_noisy": 0.188},
              "unseen": {"n": 30, "wer": 0.553, "cer": 0.371, "wer_noisy": 0.702, "cer_noisy": 0.488}},
}

LONG = {"audio_finetuned": {"keyword_accuracy": 0.612, "keyword_ci95": [0.55, 0.67], "bleu4": 0.311, "rouge_l": 0.644, "n": 200},
        "text_finetuned": {"keyword_accuracy": 0.655, "keyword_ci95": [0.59, 0.71], "bleu4": 0.342, "rouge_l": 0.671, "n": 200}}


@pytest.fixture
def cfg(tmp_path):
    return Config.from_params({"profile": "unit", "seed": 3, "run_root": str(tmp_path / "runs")}, source="params/unit.yaml")


def _png(path):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), (200, 40, 40)).save(path)


def _populate(cfg, with_eval=True):
    cfg.write_metrics("00_graft", {"video_tokens": 64, "same_generation_as_stock": True})
    cfg.write_metrics("02_stage1", {"wall_time_s": 12.5, "final_train_loss": 1.234567, "wer": 0.2, "nested": {"x": 1}})
    if with_eval:
        cfg.write_metrics("04_evaluation", {"systems": FAKE_SYSTEMS, "asr": ASR, "n_test": 120, "long_answers": LONG})
    cfg.paths.reports.mkdir(parents=True, exist_ok=True)
    (cfg.paths.reports / "00_graft.html").write_text("<html>graft</html>")
    _png(cfg.paths.figures / "04_systems.png")
    _png(cfg.paths.figures / "01_not_key.png")


def _pct(x):
    return f"{100 * x:.1f}"


def test_paths_are_isolated(cfg, tmp_path):
    assert tmp_path in cfg.paths.metrics.parents and tmp_path in cfg.paths.reports.parents
    assert cfg.params_hash() == Config.from_params({"profile": "unit", "seed": 3}).params_hash()


def test_finish_report_writes_metrics_json(cfg):
    _populate(cfg)
    timings = [{"notebook": "00_graft.ipynb", "seconds": 7.94}]
    out = report.finish_report(cfg, timings)
    assert out["metrics_json"] == cfg.paths.reports / "metrics.json"
    data = json.loads(out["metrics_json"].read_text())
    assert data["systems"] == FAKE_SYSTEMS
    assert data["asr"] == ASR
    assert set(data["notebooks"]) == {"00_graft", "02_stage1", "04_evaluation"}
    assert data["notebooks"]["02_stage1"]["final_train_loss"] == 1.234567
    assert data["params_hash"] == cfg.params_hash()
    assert data["params"] == cfg.to_dict()
    assert data["params_source"] == "params/unit.yaml"
    assert data["notebook_params_hash"] == {s: cfg.params_hash() for s in data["notebooks"]}
    assert data["stale"] == []
    assert data["timings"] == timings


def test_index_html_content(cfg):
    _populate(cfg)
    out = report.finish_report(cfg, [{"notebook": "00_graft.ipynb", "seconds": 7.94}])
    page = out["index"].read_text()
    assert out["index"] == cfg.paths.reports / "index.html"
    assert "SurgViVQA-Audio — unit run" in page
    assert cfg.params_hash() in page and "params/unit.yaml" in page and "<details>" in page
    for s in FAKE_SYSTEMS.values():
        assert html.escape(s["label"]) in page
    # injected markup is escaped, never live
    assert "<script>" not in page and "&lt;script&gt;" in page
    # accuracy with CI, formatted from the input
    a = FAKE_SYSTEMS["audio_finetuned"]
    expected = f"{_pct(a['accuracy']['overall'])} [{_pct(a['ci95']['overall'][0])}, {_pct(a['ci95']['overall'][1])}]"
    assert expected in page
    # best per column is bold: audio_finetuned overall, text_finetuned val
    assert f"<strong>{expected}</strong>" in page
    t = FAKE_SYSTEMS["text_finetuned"]
    assert f"<strong>{_pct(t['accuracy']['val'])} [{_pct(t['ci95']['val'][0])}, {_pct(t['ci95']['val'][1])}]</strong>" in page
    # rows follow the canonical system order
    order = [page.index(html.escape(FAKE_SYSTEMS[i]["label"])) for i in SYSTEMS if i in FAKE_SYSTEMS]
    assert order == sorted(order)
    # ASR in percent
    assert _pct(ASR["graft"]["unseen"]["wer_noisy"]) in page and _pct(ASR["whisper_base"]["in_domain"]["cer"]) in page
    wb = ASR["whisper_base"]["in_domain"]  # with its CI where there is one, and both sentence sets named
    assert f"{_pct(wb['wer'])} [{_pct(wb['wer_ci95'][0])}, {_pct(wb['wer_ci95'][1])}]" in page
    assert "in-domain sentences (n=40)" in page and "unseen sentences (n=30)" in page
    # long answers: keyword accuracy with CI, BLEU-4 and ROUGE-L, rows in system order
    g = LONG["audio_finetuned"]
    assert f"{_pct(g['keyword_accuracy'])} [{_pct(g['keyword_ci95'][0])}, {_pct(g['keyword_ci95'][1])}]" in page
    assert _pct(g["bleu4"]) in page and _pct(LONG["text_finetuned"]["rouge_l"]) in page
    assert page.index("Long answers") < page.index(_pct(LONG["text_finetuned"]["rouge_l"])) < page.index(_pct(g["rouge_l"]))
    # notebook link with its wall time; figure of a key notebook only
    assert '<a href="00_graft.html">00_graft.html</a>' in page and "7.9 s" in page
    assert '<img src="../figures/04_systems.png"' in page
    assert "01_not_key.png" not in page
    # training section: scalars only
    assert "final_train_loss" in page and "1.235" in page and "nested" not in page
    # self-contained
    assert "<script" not in page.lower().replace("&lt;script", "") and "http://" not in page and "https://" not in page


def test_explicit_figures_list_skips_missing(cfg):
    _populate(cfg)
    merged = report.merge_metrics(cfg)
    page = report.write_index(cfg, merged, figures=["01_not_key.png", "missing.png"]).read_text()
    assert '<img src="../figures/01_not_key.png"' in page
    assert "missing.png" not in page and "04_systems.png" not in page


def test_stale_metrics_flagged(cfg):
    _populate(cfg)
    path = cfg.paths.metrics / "00_graft.json"
    payload = json.loads(path.read_text())
    payload["params_hash"] = "deadbeef0000"
    path.write_text(json.dumps(payload))
    out = report.finish_report(cfg)
    assert out["merged"]["stale"] == ["00_graft"]
    assert "00_graft" in out["merged"]["notebooks"]  # flagged, not dropped
    page = out["index"].read_text()
    assert 'class="warning"' in page and "Stale metrics" in page and "deadbeef0000" in page


def test_no_stale_box_when_fresh(cfg):
    _populate(cfg)
    assert 'class="warning"' not in report.finish_report(cfg)["index"].read_text()


def test_invalid_json_raises_with_file_name(cfg):
    _populate(cfg)
    (cfg.paths.metrics / "03_stage2.json").write_text("{not json")
    with pytest.raises(ValueError, match="03_stage2.json"):
        report.merge_metrics(cfg)


def test_missing_evaluation_still_renders(cfg):
    _populate(cfg, with_eval=False)
    out = report.finish_report(cfg)
    assert out["merged"]["systems"] == {} and out["merged"]["asr"] == {}
    page = out["index"].read_text()
    assert "SurgViVQA-Audio — unit run" in page and "No evaluation metrics" in page


def test_empty_run_renders(cfg):
    out = report.finish_report(cfg)
    assert out["merged"]["notebooks"] == {} and out["merged"]["timings"] == []
    assert out["index"].exists() and out["metrics_json"].exists()


def test_timings_default_to_pipeline_file(cfg):
    _populate(cfg)
    cfg.paths.run.mkdir(parents=True, exist_ok=True)
    cfg.paths.timings.write_text(json.dumps([{"notebook": "00_graft.ipynb", "seconds": 3.21}]))
    out = report.finish_report(cfg)
    assert out["merged"]["timings"] == [{"notebook": "00_graft.ipynb", "seconds": 3.21}]
    assert "3.2 s" in out["index"].read_text()


def test_formatting_helpers():
    assert report.fmt_acc_ci(0.713, [0.66, 0.761]) == "71.3 [66.0, 76.1]"
    assert report.fmt_acc_ci(None, [0.1, 0.2]) == "—"
    assert report.fmt_acc_ci(0.5, None) == "50.0"
    assert report.fmt_pct(float("nan")) == "—"


def test_index_leads_with_the_balanced_headline(cfg):
    systems = {k: dict(v) for k, v in FAKE_SYSTEMS.items()}
    systems["text_finetuned"].update(balanced_accuracy={"heldout_video": 0.8123, "heldout_voice": 0.79},
                                     balanced_ci95={"heldout_video": [0.75, 0.86], "heldout_voice": [0.72, 0.85]},
                                     types_beating_majority=15)
    cfg.write_metrics("04_evaluation", {"systems": systems, "asr": ASR})
    page = report.finish_report(cfg)["index"].read_text()
    headline = page[page.index("Headline: macro balanced accuracy"):page.index("<h2>Systems")]
    assert "81.2 [75.0, 86.0]" in headline and "79.0 [72.0, 85.0]" in headline and ">15<" in headline
    assert "Majority answer" not in headline  # only systems with balanced numbers are listed
    assert "<h2>Balanced accuracy</h2>" in page


def test_single_stream_latency_sits_beside_each_systems_batched_figures(cfg):
    _populate(cfg)
    single = {"latency_ms_p50": 137.0, "latency_ms_p95": 170.0, "prefill_ms_p50": 80.0}
    cfg.write_metrics("04_latency", {"systems": {"audio_finetuned": single, "not_a_system": single}, "ratios": {}})
    merged = report.finish_report(cfg)["merged"]
    assert merged["systems"]["audio_finetuned"]["single_stream"] == single
    assert "single_stream" not in merged["systems"]["text_finetuned"] and "not_a_system" not in merged["systems"]
    assert "single_stream" not in FAKE_SYSTEMS["audio_finetuned"]  # the evaluation's own entry is not changed
    page = report.finish_report(cfg)["index"].read_text()
    assert "137.0 / 170.0" in page and "Single-question latency" in page  # index.html shows one question at a time
