"""Every numbered notebook runs headless (nbmake) under params/smoke.yaml, in order, and writes its metrics.

The whole run (data, checkpoints, reports, figures) goes to a temp run root, never runs/, reports/ or figures/.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from surgvqa.config import REPO_ROOT, Config
from surgvqa.pipeline import numbered_notebooks

SMOKE = REPO_ROOT / "params" / "smoke.yaml"
# What each notebook must report (tests read the numbers back).
EXPECTED_METRICS = {
    "00_graft": {"audio_tokens_3s", "trainable_params", "frozen_params"},
    "01_data_eda_stratification": {"split_rows", "class_balance", "audio_seconds", "leakage_checks"},
    "02_stage1_projector": {"stage0", "stage1", "wer_in_domain", "wer_unseen", "cer_in_domain", "cer_unseen", "trainable_parameters", "frozen_parameters", "wall_time_s",
                            "feature_cache"},
    "03_stage2_qlora": {"audio", "text", "lora_report", "wall_time_s", "samples_per_s", "peak_memory_mb",
                        "final_train_loss", "stages_0_to_2_s"},
    "04_evaluation": {"systems", "asr", "targets", "per_type_accuracy", "speed_ratios"},
    "05_error_analysis": {"audio_swap", "misheard", "per_type_accuracy", "test_accuracy", "consistency"},
    "06_demo": {"examples", "conditions", "graft_latency_ms_p50", "asr_latency_ms_p50"},
}
# Notebooks that write a second metrics file, and what it must hold.
EXTRA_METRICS = {"04_sight": {"per_type", "mean_probe", "constant_types"},
                 "04_latency": {"method", "systems", "ratios"}}
METRICS_FILE = {"00_graft": "00_graft", "01_data_eda_stratification": "01_data", "02_stage1_projector": "02_stage1",
                "03_stage2_qlora": "03_stage2"}
SYSTEMS = {"majority", "text_zeroshot", "text_finetuned", "audio_zeroshot", "audio_finetuned", "asr_pipeline", "asr_prompted",
           "audio_upstream"}


pytestmark = pytest.mark.slow


@pytest.mark.parametrize("notebook", [p.stem for p in numbered_notebooks()])
def test_notebook_runs_under_smoke_params(smoke_run, notebook):
    cfg, timings = smoke_run
    assert notebook + ".ipynb" in [t["notebook"] for t in timings]
    assert (cfg.paths.reports / f"{notebook}.html").stat().st_size > 10_000
    payload = json.loads((cfg.paths.metrics / f"{METRICS_FILE.get(notebook, notebook)}.json").read_text())
    assert payload["params"]["profile"] == "smoke" and payload["params_hash"] == cfg.params_hash()
    missing = EXPECTED_METRICS.get(notebook, set()) - set(payload["metrics"])
    assert not missing, f"{notebook} metrics lack {missing}"


def test_the_training_cli_trains_the_notebooks_models(smoke_run, tmp_path):
    """One seeded path per stage: on the notebook run's data step and stage 0, `python -m surgvqa.train` trains
    stage 1, the graft's stage 2 and the text model to the same step losses as notebooks 02 and 03 (so from the same
    initial weights), in another process, after other work."""
    cfg, _ = smoke_run
    params = {**yaml.safe_load(SMOKE.read_text()), "run_root": str(tmp_path / "runs")}
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    cli = Config.from_yaml(path)
    cli.paths.checkpoints.mkdir(parents=True)
    for shared in ("data", "cache"):  # the data step and the towers' caches (content-keyed) are the notebooks'
        (cli.paths.run / shared).symlink_to(cfg.paths.run / shared)
    shutil.copytree(cfg.paths.stage("stage0"), cli.paths.stage("stage0"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "lib"), str(REPO_ROOT / "transformers_fork")])}
    proc = subprocess.run([sys.executable, "-m", "surgvqa.train", "--params", str(path), "--stage", "stage1", "stage2",
                           "stage2_text"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for stage in ("stage1", "stage2", "stage2_text"):
        notebook, trained = (json.loads((c.paths.stage(stage) / "stage.json").read_text()) for c in (cfg, cli))
        losses = [[(h["step"], h.get("loss"), h.get("eval_loss")) for h in r["log_history"] if "loss" in h or "eval_loss" in h]
                  for r in (notebook, trained)]
        assert losses[0] and losses[0] == losses[1], stage
        for key in ("global_step", "final_train_loss", "best_eval_loss", "best_eval_wer"):
            assert notebook[key] == trained[key], (stage, key)


def test_stage2_adapters_do_not_depend_on_what_ran_before(smoke_trained):
    import torch

    from surgvqa import datastep, stages

    data = datastep.load_run_data(smoke_trained, build=False)

    def adapters(draws_before: int) -> dict[str, torch.Tensor]:
        torch.rand(draws_before)  # e.g. the graft's training, before the text model's adapters in notebook 03
        prepared = stages.prepare_stage2(smoke_trained, data, "text")
        return {n: p.detach().clone() for n, p in prepared.model.named_parameters() if "lora_A" in n}

    first, second = adapters(0), adapters(12345)
    assert first and first.keys() == second.keys()
    assert all(torch.equal(first[n], second[n]) for n in first)


def test_stage2_refuses_a_stage1_graft_made_under_another_stamp(smoke_trained):
    import dataclasses

    from surgvqa import datastep, stages

    data = datastep.load_run_data(smoke_trained, build=False)
    other_seed = dataclasses.replace(smoke_trained, seed=smoke_trained.seed + 1)  # same dirs, another stage-1 stamp
    for mode in ("audio", "text"):
        with pytest.raises(RuntimeError, match="stage1.*stamp"):
            stages.prepare_stage2(other_seed, data, mode)


def test_graft_notebook_numbers(smoke_run):
    cfg, _ = smoke_run
    metrics = json.loads((cfg.paths.metrics / "00_graft.json").read_text())["metrics"]
    assert 0 < metrics["audio_tokens_3s"] <= 40
    assert metrics["frozen_params"] > metrics["trainable_params"] > 0
    assert metrics["max_logit_change_before_audio"] == 0.0 < metrics["min_logit_change_after_audio"]
    assert metrics["max_logit_diff_vs_stock"] == 0.0 and metrics["same_generation_as_stock"]
    graft_dir = cfg.paths.checkpoints / "graft"
    assert (graft_dir / "model.safetensors").exists() and (graft_dir / "processor_config.json").exists()
    assert (cfg.paths.figures / "00_audio_tokens_vs_seconds.png").exists()


def test_training_notebooks_numbers(smoke_run):
    cfg, _ = smoke_run
    stage1 = json.loads((cfg.paths.metrics / "02_stage1.json").read_text())["metrics"]
    assert stage1["stage1"]["trainable_parameters"] < stage1["stage1"]["frozen_parameters"]
    assert stage1["feature_cache"]["files"] > 0 and stage1["feature_cache"]["speedup"] > 0  # speed: make bench
    assert set(stage1["asr"]) == {"whisper_base", "graft"}
    for system in ("whisper_base", "graft"):  # held-out-voice and held-out-engine sentence sets, clean and noisy, with CIs
        assert set(stage1["asr"][system]) == {"in_domain", "unseen", "engine_in_domain", "engine_unseen"}
        for r in stage1["asr"][system].values():
            for key in ("wer", "cer", "wer_noisy", "cer_noisy"):
                assert r[f"{key}_ci95"][0] <= r[key] <= r[f"{key}_ci95"][1], (system, key)
    assert stage1["wer_in_domain"] == stage1["asr"]["graft"]["in_domain"]["wer"]
    stage2 = json.loads((cfg.paths.metrics / "03_stage2.json").read_text())["metrics"]
    assert stage2["lora_report"]["audio tower"]["lora_modules"] == 0 == stage2["lora_report"]["vision tower"]["trainable"]
    for mode in ("audio", "text"):
        assert stage2[mode]["global_step"] > 0 and stage2[mode]["final_train_loss"] is not None
    for sub in ("stage2/adapter", "stage2/merged", "stage2_text/merged", "stage1/final"):
        assert (cfg.paths.checkpoints / sub).is_dir(), sub
    assert (cfg.paths.figures / "02_stage1_loss.png").exists() and (cfg.paths.figures / "03_stage2_loss.png").exists()


def test_sight_check_covers_every_question_type(smoke_run):
    from surgvqa.schema import QUESTION_TYPES

    cfg, _ = smoke_run
    for name, keys in EXTRA_METRICS.items():
        payload = json.loads((cfg.paths.metrics / f"{name}.json").read_text())
        assert keys <= set(payload["metrics"]) and payload["params_hash"] == cfg.params_hash()
    per_type = json.loads((cfg.paths.metrics / "04_sight.json").read_text())["metrics"]["per_type"]
    assert set(per_type) == set(QUESTION_TYPES)
    assert all({"pixels", "random_tower", "model_tower", "constant"} <= set(v) for v in per_type.values())
    assert (cfg.paths.figures / "04_sight_check.png").exists()


def test_evaluation_has_every_system_and_split_and_the_index(smoke_run):
    cfg, _ = smoke_run
    evaluation = json.loads((cfg.paths.metrics / "04_evaluation.json").read_text())["metrics"]
    assert set(evaluation["systems"]) == SYSTEMS
    for system, entry in evaluation["systems"].items():
        assert {"val", "heldout_video", "heldout_voice", "final_test", "overall"} <= set(entry["accuracy"]), system
        assert set(entry["balanced_accuracy"]) == set(entry["accuracy"]) == set(entry["balanced_ci95"]), system
        assert "types_beating_majority" in entry, system
        assert entry["samples_per_s"] > 0 and entry["batch_size"] > 0, system
        if system != "audio_upstream":
            lo, hi = entry["ci95"]["overall"]
            assert lo <= entry["accuracy"]["overall"] <= hi, system
    assert evaluation["rows"]["final_test"] > 0  # smoke scores the final test as the reference run does
    assert {c["split"] for c in evaluation["comparisons"]} >= {"final_test"}
    assert set(evaluation["asr"]) == {"whisper_base", "graft"}
    assert set(evaluation["long_answers"]) == {"text_finetuned", "audio_finetuned", "asr_pipeline"}
    for r in evaluation["long_answers"].values():
        assert 0 <= r["keyword_accuracy"] <= 1 and 0 <= r["bleu4"] <= 1 and 0 <= r["rouge_l"] <= 1 and r["n"] > 0
    for system in ("graft", "whisper_base"):
        for name in ("in_domain", "unseen"):
            assert {"wer", "cer", "wer_noisy", "cer_noisy", "wer_ci95", "n"} <= set(evaluation["asr"][system][name])
    merged = json.loads((cfg.paths.reports / "metrics.json").read_text())
    # metrics.json: the evaluation's systems, each with notebook 04's single-stream latency beside it
    latency = json.loads((cfg.paths.metrics / "04_latency.json").read_text())["metrics"]["systems"]
    assert {k: {f: v for f, v in e.items() if f != "single_stream"} for k, e in merged["systems"].items()} == evaluation["systems"]
    assert latency and all(merged["systems"][s]["single_stream"] == figures for s, figures in latency.items())
    assert merged["params_hash"] == cfg.params_hash()
    assert cfg.paths.reports == cfg.paths.run / "reports"  # the temp run dir, never the committed reports/
    index = (cfg.paths.reports / "index.html").read_text()
    for text in ("04_evaluation.html", "02_stage1_projector.html", evaluation["systems"]["audio_finetuned"]["label"]):
        assert text in index, text


def test_a_rerun_of_the_evaluation_reads_the_saved_one_without_loading_a_model(smoke_run, monkeypatch):
    """Notebook 04 saved its evaluation with a stamp; the same call again reads it back (no model is loaded),
    and the stamp moves with the evaluation options."""
    import dataclasses

    from surgvqa import datastep, evaluate

    cfg, _ = smoke_run
    splits, corpus = datastep.load_run_data(cfg, build=False)
    saved = evaluate.load_predictions(cfg)
    monkeypatch.setattr(evaluate.Models, "load", classmethod(lambda cls, *a: pytest.fail("a model was loaded")))
    again = evaluate.evaluate_systems(cfg, splits, corpus)
    columns = ["system", "split", "id", "video_id", "voice", "prediction", "correct"]
    assert again.predictions[columns].astype(str).values.tolist() == saved[columns].astype(str).values.tolist()
    evaluation = json.loads((cfg.paths.metrics / "04_evaluation.json").read_text())["metrics"]
    assert again.systems["audio_finetuned"]["accuracy"] == evaluation["systems"]["audio_finetuned"]["accuracy"]
    rows = evaluate.evaluation_rows(splits, cfg.eval.max_rows, cfg.seed, final_test=cfg.eval.score_final_test)
    other = dataclasses.replace(cfg.eval, noise_snr_db=cfg.eval.noise_snr_db + 5)
    assert evaluate.evaluation_stamp(cfg, other, rows) != evaluate.evaluation_stamp(cfg, cfg.eval, rows)


def test_the_step_benchmark_trains_in_a_scratch_dir_and_leaves_the_run_alone(smoke_trained):
    from surgvqa import bench

    cfg = smoke_trained
    own = cfg.paths.stage("stage0")
    before = sorted((p.relative_to(own), p.stat().st_mtime_ns) for p in own.rglob("*"))
    rows = bench.step_time_benchmark(cfg, threads=(1,), steps=2)
    assert [(r["threads"], r["steps"]) for r in rows] == [(1, 2)] and rows[0]["s_per_step"] > 0
    assert sorted((p.relative_to(own), p.stat().st_mtime_ns) for p in own.rglob("*")) == before
    assert cfg.paths.data.is_dir() and not cfg.paths.data.is_symlink()  # the shared data dir is still the run's


def test_seed_spread_trains_stage2_again_beside_the_run(smoke_trained):
    from surgvqa import seed_spread

    cfg = smoke_trained
    own = cfg.paths.stage("stage2") / "merged"
    before = {p.name: p.stat().st_mtime_ns for p in own.iterdir()}
    result = seed_spread.run_seed_spread(cfg, [7])
    assert result["seeds"] == [cfg.seed, 7] and set(result["per_seed"]) == {str(cfg.seed), "7"}
    assert {p.name: p.stat().st_mtime_ns for p in own.iterdir()} == before  # the run's stage 2 untouched
    seeded = seed_spread.seed_config(cfg, 7).paths
    assert seeded.run.is_relative_to(cfg.paths.run / "seed_spread")
    assert all((seeded.stage(s) / "merged" / "model.safetensors").is_file() for s in ("stage2", "stage2_text"))
    assert seeded.stage("stage1").is_symlink() and seeded.data.is_symlink()  # stage 2 alone trained
    trained = {p.name: p.stat().st_mtime_ns for p in (seeded.stage("stage2") / "merged").iterdir()}
    again = seed_spread.run_seed_spread(cfg, [7])  # a rerun keeps the seed's finished stage 2 and only scores
    assert again["per_seed"] == result["per_seed"]
    assert {p.name: p.stat().st_mtime_ns for p in (seeded.stage("stage2") / "merged").iterdir()} == trained
    for system in seed_spread.SPREAD_SYSTEMS:
        for split, s in result["spread"][system].items():
            assert s["n"] == 2 and s["min"] <= s["mean"] <= s["max"] and s["sd"] >= 0, (system, split)
    with pytest.raises(ValueError, match="the run's own"):
        seed_spread.run_seed_spread(cfg, [cfg.seed])


def test_a_finished_stage_is_reused_by_its_stamp_and_an_option_it_depends_on_retrains_it(smoke_trained):
    import dataclasses

    from surgvqa import datastep, stages

    cfg = smoke_trained
    saved = {s: {p.name: p.stat().st_mtime_ns for p in (cfg.paths.stage(s) / product).iterdir()}
             for s, product in (("stage1", "final"), ("stage2", "merged"), ("stage2_text", "merged"))}
    results = stages.run_stages(cfg, datastep.load_run_data(cfg, build=False), ["stage1", "stage2", "stage2_text"])
    assert all(r.reused for r in results.values()), results
    for s, product in (("stage1", "final"), ("stage2", "merged"), ("stage2_text", "merged")):
        assert {p.name: p.stat().st_mtime_ns for p in (cfg.paths.stage(s) / product).iterdir()} == saved[s], s
    # an option of stage 1 changes stage 1's and stage 2's stamps; one of stage 2 leaves stage 1 as it is
    stage1_option = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, early_stopping_patience={
        **{s: cfg.train.patience(s) for s in ("stage0", "stage2")}, "stage1": cfg.train.patience("stage1") + 1}))
    assert not stages.finished_run(stage1_option, "stage1", "final")
    assert not stages.finished_run(stage1_option, "stage2", "merged")
    stage2_option = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, graft_read_ratio=0.25))
    assert stages.finished_run(stage2_option, "stage1", "final") and not stages.finished_run(stage2_option, "stage2", "merged")
