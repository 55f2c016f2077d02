"""RESULTS.md and README's results block are rendered from metrics.json, never typed: no model runs here."""
from __future__ import annotations

import copy
import json
import re

import pytest

from surgvqa import report, results_page
from surgvqa.config import REPO_ROOT, Config
from surgvqa.results_page import BEGIN, END, MarkersMissing, MissingMetric

METRICS_JSON = REPO_ROOT / "reports" / "metrics.json"
README = REPO_ROOT / "README.md"


def _system(label, bal, bal_ci, acc, noisy=None, speed=10.0):
    """One system's entry as notebook 04 writes it; `noisy` = (balanced, ci, exact) on the noisy split."""
    s = {"label": label, "balanced_accuracy": dict(bal), "balanced_ci95": dict(bal_ci), "accuracy": dict(acc),
         "ci95": {k: [v - 0.02, v + 0.02] for k, v in acc.items()}, "samples_per_s": speed, "batch_size": 4,
         "speed_rows": 12, "latency_ms_p50": 100.0, "latency_ms_p95": 120.0}
    if noisy:
        s["balanced_accuracy"]["heldout_voice_noisy"], s["balanced_ci95"]["heldout_voice_noisy"] = noisy[0], noisy[1]
        s["accuracy"]["heldout_voice_noisy"] = noisy[2]
    return s


def _single(p50, audio_tokens):
    return {"latency_ms_p50": p50, "latency_ms_iqr": [p50 - 3.25, p50 + 4.5], "latency_ms_p95": p50 + 17.0,
            "transcription_ms_p50": 0.0, "prefill_ms_p50": p50 / 2, "decode_ms_per_token_p50": 3.21,
            "input_tokens": 101.0, "audio_tokens": audio_tokens}


def _stage(epochs, steps, examples, loss, wall, wer=None, reused=False):
    return {"epochs": epochs, "global_step": steps, "train_examples": examples, "best_eval_loss": loss,
            "best_eval_wer": wer, "wall_time_s": wall, "reused": reused}


def notebooks_metrics() -> dict:
    """Every notebook's metrics a complete small run writes (odd digits, so a wrong column shows)."""
    systems = {
        "majority": _system("majority <baseline>", {"heldout_video": 0.4117, "heldout_voice": 0.4021},
                            {"heldout_video": [0.3861, 0.4352], "heldout_voice": [0.3733, 0.4298]},
                            {"heldout_video": 0.7349, "heldout_voice": 0.7218},
                            noisy=(0.4021, [0.3733, 0.4298], 0.7218), speed=9999.0),
        "text_finetuned": _system("text model", {"heldout_video": 0.6243, "heldout_voice": 0.6187},
                                  {"heldout_video": [0.5912, 0.6577], "heldout_voice": [0.5846, 0.6468]},
                                  {"heldout_video": 0.8114, "heldout_voice": 0.8067}, speed=55.5),
        "audio_finetuned": _system("graft, stage 2", {"heldout_video": 0.6371, "heldout_voice": 0.5959},
                                   {"heldout_video": [0.6052, 0.6694], "heldout_voice": [0.5611, 0.6302]},
                                   {"heldout_video": 0.8026, "heldout_voice": 0.7741},
                                   noisy=(0.5483, [0.5117, 0.5839], 0.7302), speed=8.25),
        "asr_pipeline": _system("ASR pipeline", {"heldout_video": 0.4786, "heldout_voice": 0.4652},
                                {"heldout_video": [0.4431, 0.5129], "heldout_voice": [0.4274, 0.4993]},
                                {"heldout_video": 0.6937, "heldout_voice": 0.6814},
                                noisy=(0.3719, [0.3365, 0.4047], 0.5588), speed=0.77),
        "audio_upstream": {**_system("upstream-style graft", {}, {}, {}, speed=1.05),
                           "balanced_accuracy": {"heldout_video": None, "heldout_voice": None},
                           "accuracy": {"heldout_video": None, "heldout_voice": None}},
    }
    transcript = lambda w, c: {"n": 42, "wer": w, "wer_ci95": [w - 0.04, w + 0.05], "cer": c,  # noqa: E731
                               "wer_noisy": w + 0.1, "wer_noisy_ci95": [w + 0.05, w + 0.16], "cer_noisy": c + 0.1}
    asr = {"whisper_base": {"in_domain": transcript(0.3117, 0.1533), "unseen": transcript(0.3661, 0.1754)},
           "graft": {"in_domain": transcript(0.1052, 0.0975), "unseen": transcript(0.3212, 0.2732)}}
    long = {sid: {"n": 50, "keyword_accuracy": k, "keyword_ci95": [k - 0.06, k + 0.06], "bleu4": 0.1234, "rouge_l": 0.4321}
            for sid, k in (("text_finetuned", 0.68), ("audio_finetuned", 0.66), ("asr_pipeline", 0.58))}
    return {
        "02_stage1": {"stage0": _stage(8.0, 1048, 900, 0.2139, 537.4, reused=True),
                      "stage1": _stage(20.0, 1180, 930, 1.4552, 628.85, wer=0.2384)},
        "03_stage2": {"audio": _stage(4.0, 1012, 2020, 0.1680, 1661.33), "text": _stage(4.0, 524, 1047, 0.1684, 539.74)},
        "04_evaluation": {"systems": systems, "asr": asr, "long_answers": long,
                          "rows": {"val": 300, "heldout_video": 321, "heldout_voice": 322},
                          "options": {"noise_snr_db": 5.0},
                          "speed_ratios": {"graft_vs_asr_pipeline": 10.71, "graft_vs_audio_upstream": 7.86},
                          "targets": {"graft_within_3_points_of_text_balanced_heldout_video": True,
                                      "text_macro_balanced_at_least_0.80_heldout_video": False,
                                      "graft_vs_whisper_in_domain_wer": [0.1052, 0.3117], "types_where_audio_beats_majority": "9/20"}},
        "04_latency": {"method": {"batch_size": 1, "rows": 16, "warmup": 1, "max_new_tokens": 8, "device": "cpu",
                                  "torch_threads": 2},
                       "systems": {"audio_finetuned": _single(176.19, 41.0), "asr_pipeline": _single(1487.86, 0.0)}},
        "05_error_analysis": {"audio_swap": {
            "rows": 2000, "changed": 0.6055, "swapped_in_donor_vocab": 0.403,
            "true_audio": {"accuracy": 0.806}, "swapped_audio": {"accuracy": 0.363},
            "balanced": {"chance": 0.41, "swapped_audio": 0.2259, "true_audio": 0.6531},
            "swapped_balanced_within_0.10_of_chance": False,
            "same_vocabulary": {"rows": 1411, "balanced": {"chance": 0.5, "swapped_audio": 0.5016, "true_audio": 0.7787},
                                "swapped_balanced_within_0.10_of_chance": True}}},
    }


TIMINGS = [{"notebook": "00_graft.ipynb", "seconds": 19.19}, {"notebook": "04_evaluation.ipynb", "seconds": 625.59}]


@pytest.fixture
def metrics() -> dict:
    """A complete metrics.json as report.merge_metrics assembles it."""
    notebooks = notebooks_metrics()
    evaluation = notebooks["04_evaluation"]
    systems = copy.deepcopy(evaluation["systems"])
    for sid, single in notebooks["04_latency"]["systems"].items():
        systems[sid]["single_stream"] = single
    return {"params": {"profile": "unit"}, "params_hash": "abc123def456", "params_source": "params/unit.yaml",
            "notebooks": notebooks, "stale": [], "timings": copy.deepcopy(TIMINGS), "systems": systems,
            "asr": evaluation["asr"], "long_answers": evaluation["long_answers"]}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def headline_rows(page: str) -> dict[str, list[str]]:
    """The headline table of a rendered page (or of README's block): label -> cells."""
    section = page[page.index("## Headline"):] if "## Headline" in page else page
    section = section[: section.index("\n## ")] if "\n## " in section else section
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| system")]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in r.strip("|").split("|")] for r in rows)}


# ---- the committed files ---------------------------------------------------------------------------
def test_readme_block_is_the_rendering_of_the_committed_metrics():
    metrics = json.loads(METRICS_JSON.read_text())
    block = results_page.read_block(README.read_text())
    assert block == results_page.render_headline(metrics), (
        "README.md's results block differs from reports/metrics.json: run `python -m surgvqa.results_page`, never edit it")
    assert _pct(metrics["systems"]["audio_finetuned"]["balanced_accuracy"]["heldout_video"]) in block  # really read


def test_committed_results_md_is_the_rendering_of_the_committed_metrics():
    metrics = json.loads(METRICS_JSON.read_text())
    assert (REPO_ROOT / "reports" / "RESULTS.md").read_text() == results_page.render_results(metrics)


def test_the_hook_updates_readme_only_for_the_repositorys_reports(tmp_path):
    assert results_page.repo_readme(REPO_ROOT / "reports") == README
    assert results_page.repo_readme(tmp_path / "reports") is None
    assert results_page.repo_readme(REPO_ROOT / "runs" / "smoke" / "reports") is None


# ---- rendering -------------------------------------------------------------------------------------
def test_headline_numbers_come_from_the_dict(metrics):
    page = results_page.render_results(metrics)
    assert page.index("## Headline") < page.index("## Transcription")  # the first table is the headline
    rows = headline_rows(page)
    scored = ["majority", "text_finetuned", "audio_finetuned", "asr_pipeline"]  # systems.SYSTEMS order
    assert list(rows) == [metrics["systems"][s]["label"] for s in scored]
    for sid in scored:
        s = metrics["systems"][sid]
        expected = [f"{_pct(s['balanced_accuracy'][k])} [{_pct(s['balanced_ci95'][k][0])}, {_pct(s['balanced_ci95'][k][1])}]"
                    for k in ("heldout_video", "heldout_voice")]
        expected += [_pct(s["accuracy"][k]) for k in ("heldout_video", "heldout_voice")]
        assert rows[s["label"]] == expected, sid
    # the speed-only system is named, not left as a row of blanks
    assert "upstream-style graft" not in rows
    assert "Timed for speed only (no accuracy recorded): upstream-style graft." in page
    assert "abc123def456" in page and "params/unit.yaml" in page and "321" in page


def test_changing_a_number_changes_the_headline(metrics):
    before = results_page.render_headline(metrics)
    metrics["systems"]["text_finetuned"]["accuracy"]["heldout_voice"] = 0.9066
    after = results_page.render_headline(metrics)
    assert after != before and headline_rows(after)["text model"][3] == "90.7"


def test_later_sections_come_from_the_dict(metrics):
    page = results_page.render_results(metrics)
    for title in ("## Held-out voices with operating-room noise", "## Transcription", "## Audio swap", "## Long answers",
                  "## Speed and latency", "## Training", "## Targets"):
        assert title in page
    assert "| graft | in-domain sentences | 42 | 10.5 [6.5, 15.5] | 9.8 | 20.5 [15.5, 26.5] | 19.8 |" in page
    assert "| graft, stage 2 | 54.8 [51.2, 58.4] | 73.0 |" in page
    assert "| another yes/no type's question | 1,411 | 77.9 | 50.2 | 50.0 | yes |" in page
    assert "| ASR pipeline | 50 | 58.0 [52.0, 64.0] | 0.123 | 0.432 |" in page
    assert "| graft, stage 2 | 176.2 | 172.9–180.7 | 193.2 | 0.0 | 88.1 | 3.21 | 101 | 41 |" in page
    assert "| stage 0: base VLM | reused | 8 | 1,048 | 900 | 0.2139 | 537.4 |" in page
    assert "| `graft_vs_whisper_in_domain_wer` | 0.1052 / 0.3117 |" in page and "| `types_where_audio_beats_majority` | 9/20 |" in page
    assert "0.2384" in page and "`graft_vs_asr_pipeline` 10.71x" in page and "10.7 min in all" in page


def test_a_stage_recorded_as_not_run_says_so(metrics):
    metrics["notebooks"]["02_stage1"]["stage0"] = None  # a hub profile: no stage 0
    assert "| stage 0: base VLM | not run |" in results_page.render_results(metrics)


def test_stale_metrics_are_flagged_in_the_headline(metrics):
    metrics["stale"] = ["03_stage2"]
    assert "**Stale:** metrics of 03_stage2" in results_page.render_headline(metrics)


# ---- missing keys ----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [
    ("params_hash",),
    ("params_source",),
    ("systems", "audio_finetuned", "balanced_ci95", "heldout_voice"),
    ("systems", "text_finetuned", "accuracy", "heldout_video"),
    ("systems", "asr_pipeline", "label"),
    ("notebooks", "04_evaluation", "rows"),
    ("asr", "graft", "unseen", "wer_noisy_ci95"),
    ("long_answers", "audio_finetuned", "rouge_l"),
    ("notebooks", "05_error_analysis", "audio_swap", "same_vocabulary"),
    ("notebooks", "04_latency", "systems", "asr_pipeline", "prefill_ms_p50"),
    ("notebooks", "03_stage2", "text", "global_step"),
    ("notebooks", "02_stage1", "stage1", "best_eval_wer"),
    ("notebooks", "04_evaluation", "targets"),
    ("timings",),
])
def test_a_missing_key_raises_naming_it(metrics, path):
    node = metrics
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    with pytest.raises(MissingMetric, match=re.escape(".".join(path))):
        results_page.render_results(metrics)


def test_a_null_number_raises_naming_it(metrics):
    metrics["systems"]["text_finetuned"]["balanced_accuracy"]["heldout_voice"] = None  # one null among numbers
    with pytest.raises(MissingMetric, match=re.escape("systems.text_finetuned.balanced_accuracy.heldout_voice")):
        results_page.render_headline(metrics)
    metrics["systems"]["text_finetuned"]["balanced_accuracy"]["heldout_voice"] = 0.5
    metrics["asr"]["graft"]["in_domain"]["wer_ci95"] = [0.1, None]
    with pytest.raises(MissingMetric, match=re.escape("asr.graft.in_domain.wer_ci95")):
        results_page.render_results(metrics)


def test_nothing_is_written_when_a_key_is_missing(metrics, tmp_path):
    del metrics["long_answers"]
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nold\n{END}\n")
    with pytest.raises(MissingMetric, match="long_answers"):
        results_page.write_results(metrics, tmp_path / "reports", readme)
    assert not (tmp_path / "reports" / "RESULTS.md").exists() and "old" in readme.read_text()


# ---- writing and the README markers ----------------------------------------------------------------
def test_write_results_replaces_only_the_block(metrics, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n\n{BEGIN}\n| stale | 99.9 |\n{END}\n\nafter\n")
    out = results_page.write_results(metrics, tmp_path / "reports", readme)
    assert out == tmp_path / "reports" / "RESULTS.md" and out.read_text() == results_page.render_results(metrics)
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n\n" + BEGIN + "\n") and text.endswith(END + "\n\nafter\n")
    assert "99.9" not in text and results_page.read_block(text) == results_page.render_headline(metrics)
    results_page.write_results(metrics, tmp_path / "reports", readme)  # a second run changes nothing
    assert readme.read_text() == text


@pytest.mark.parametrize("text", ["# no markers at all\n", f"only the start {BEGIN}\n", f"{END}\nreversed\n{BEGIN}\n"])
def test_readme_without_markers_is_an_error(metrics, tmp_path, text):
    readme = tmp_path / "README.md"
    readme.write_text(text)
    with pytest.raises(MarkersMissing, match="results:begin"):
        results_page.write_results(metrics, tmp_path / "reports", readme)
    assert readme.read_text() == text
    with pytest.raises(MarkersMissing):
        results_page.read_block(text)


def test_without_readme_only_results_md_is_written(metrics, tmp_path):
    out = results_page.write_results(metrics, tmp_path)
    assert out.read_text().startswith("# Results: `unit` run `abc123def456`") and sorted(tmp_path.iterdir()) == [out]


# ---- the hook at the run's end -------------------------------------------------------------------
@pytest.fixture
def cfg(tmp_path):
    return Config.from_params({"profile": "unit", "seed": 3, "run_root": str(tmp_path / "runs")}, source="params/unit.yaml")


def test_finish_report_writes_results_md_from_metrics_json(cfg):
    for stem, payload in notebooks_metrics().items():
        cfg.write_metrics(stem, payload)
    readme_before = README.read_text()
    out = report.finish_report(cfg, TIMINGS)
    assert out["results"] == cfg.paths.reports / "RESULTS.md"
    page = out["results"].read_text()
    assert page == results_page.render_results(json.loads(out["metrics_json"].read_text()))
    assert cfg.params_hash() in page and "graft, stage 2" in headline_rows(page)
    assert README.read_text() == readme_before  # a run outside the repository's reports/ leaves README alone


def test_finish_report_of_an_incomplete_run_says_what_is_missing(cfg, tmp_path):
    cfg.write_metrics("00_graft", {"video_tokens": 64})
    out = report.finish_report(cfg, TIMINGS)
    page = out["results"].read_text()
    assert page.startswith("# Results: incomplete run") and "'systems' is empty or not a mapping" in page
    readme = tmp_path / "README.md"
    readme.write_text(f"{BEGIN}\nold\n{END}\n")
    results_page.write_run_results(json.loads(out["metrics_json"].read_text()), cfg.paths.reports, readme)
    assert readme.read_text() == f"{BEGIN}\nold\n{END}\n"


def test_paired_claims_are_listed_with_their_verdict():
    from surgvqa.results_page import comparisons_section

    assert "recorded no paired comparisons" in comparisons_section({})
    page = comparisons_section({"comparisons": [{"a": "audio_finetuned", "b": "text_finetuned", "split": "heldout_video",
                                                "metric": "macro_balanced_accuracy", "diff": -0.012, "ci95": [-0.041, 0.02], "margin": -0.03, "shown": False}]})
    assert "| audio_finetuned − text_finetuned | heldout_video | macro balanced | -1.2 | [-4.1, 2.0] | -3.0 | not shown |" in page


def test_the_seed_spread_is_shown_beside_the_headline_only_for_its_own_run():
    from surgvqa.results_page import seed_spread_line

    spread = {sid: {split: {"mean": 0.6, "sd": 0.012, "min": 0.588, "max": 0.61, "n": 3}
                    for split in ("val", "heldout_video", "heldout_voice")} for sid in ("audio_finetuned", "text_finetuned")}
    metrics = {"params_hash": "abc", "notebook_params_hash": {"seed_spread": "abc"},
               "systems": {"audio_finetuned": {"label": "graft"}, "text_finetuned": {"label": "text"}},
               "notebooks": {"seed_spread": {"seeds": [0, 1, 2], "spread": spread}}}
    line = seed_spread_line(metrics)
    assert "seeds 0, 1, 2" in line and "graft: held-out video 60.0 ± 1.2 [58.8, 61.0]" in line
    assert "not measured" in seed_spread_line({**metrics, "notebook_params_hash": {"seed_spread": "other"}})
    assert "not measured" in seed_spread_line({"params_hash": "abc"})


def test_which_system_to_use_follows_the_paired_claims_on_the_held_out_engine(metrics):
    assert results_page.which_system_line(metrics) is None  # a run without the held-out engine: no line
    for sid, quiet, noisy in (("audio_finetuned", 0.6111, 0.5333), ("asr_pipeline", 0.6555, 0.4111),
                              ("asr_prompted", 0.6777, 0.4222)):
        metrics["systems"].setdefault(sid, {**copy.deepcopy(metrics["systems"]["asr_pipeline"]), "label": f"label of {sid}"})
        metrics["systems"][sid]["balanced_accuracy"].update({"heldout_engine": quiet, "heldout_engine_noisy": noisy})
    claim = lambda b, split, diff, lo, hi: {"a": "audio_finetuned", "b": b, "split": split,  # noqa: E731
                                            "metric": "macro_balanced_accuracy", "diff": diff, "ci95": [lo, hi],
                                            "margin": 0.0, "shown": lo > 0}
    metrics["comparisons"] = [claim("asr_pipeline", "heldout_engine", -0.0444, -0.09, 0.002),
                              claim("asr_prompted", "heldout_engine", -0.0666, -0.11, -0.021),
                              claim("asr_pipeline", "heldout_engine_noisy", 0.1222, 0.071, 0.17),
                              claim("asr_prompted", "heldout_engine_noisy", 0.1111, 0.062, 0.16)]
    line = results_page.which_system_line(metrics)
    # quiet: the prompted cascade is the stronger one there, and its interval is below zero
    assert "quiet, the cascade (label of asr_prompted): graft − cascade -6.7 points [-11.0, -2.1]" in line
    # noisy: the prompted cascade is stronger again (0.4222), and the graft beats it
    assert "with operating-room noise, the graft: graft − cascade 11.1 points [6.2, 16.0]" in line
    assert "176.2 ms" in line and "Which system to use" in results_page.render_headline(metrics)
    metrics["comparisons"][1].update(ci95=[-0.11, 0.01])
    assert "quiet, either (no difference shown against label of asr_prompted)" in results_page.which_system_line(metrics)


def test_new_wordings_get_their_section_only_when_scored(metrics):
    assert "## New wordings" not in results_page.render_results(metrics)
    for sid, (voice, worded, share) in {"text_finetuned": (0.6187, 0.5123, 0.0456), "audio_finetuned": (0.5959, 0.4012, 0.1789)}.items():
        s = metrics["systems"][sid]
        s["balanced_accuracy"]["heldout_wording"], s["balanced_ci95"]["heldout_wording"] = worded, [worded - 0.03, worded + 0.04]
        s["another_type_answers"] = {"heldout_voice": 0.0123, "heldout_wording": share}
    page = results_page.render_results(metrics)
    section = page[page.index("## New wordings"):].split("\n## ")[0]
    assert "| graft, stage 2 | 59.6 [56.1, 63.0] | 40.1 [37.1, 44.1] | 1.2 | 17.9 |" in section
    assert "| text model | 61.9 [58.5, 64.7] | 51.2 [48.2, 55.2] | 1.2 | 4.6 |" in section


def test_a_run_from_before_a_test_split_says_so_in_the_headline(metrics):
    rows = metrics["notebooks"]["04_evaluation"]["rows"]
    assert "heldout_engine" not in rows  # the fixture's run predates the held-out engine and wordings
    assert "**not scored by this run:** held-out engine, held-out wording" in results_page.render_headline(metrics)
    for split in ("heldout_engine", "heldout_wording"):
        rows[split] = 100
        for system in metrics["systems"].values():  # as notebook 04 writes them: null for a speed-only system
            scored = system["balanced_accuracy"].get("heldout_video") is not None
            for key in ("balanced_accuracy", "accuracy"):
                system[key][split] = 0.5 if scored else None
            system["balanced_ci95"][split] = [0.4, 0.6] if scored else None
    assert "not scored by this run" not in results_page.render_headline(metrics)
