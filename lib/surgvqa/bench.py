"""`make bench`: performance figures measured on this machine, in one run, printed as a table.

    python -m surgvqa.bench --params params/default.yaml
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import numpy as np
import torch

from .config import Config


def graft_benchmark(cfg: Config) -> dict:
    """Audio tokens and forward latency of a 3 s spoken question: this graft's setting vs the upstream repository's."""
    from . import model_checks, models, speech, synthetic

    corpus = models.tokenizer_corpus(cfg.seed)
    seed_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **models.UPSTREAM_AUDIO))
    clip = speech.synthesize("is there blue dye visible in this sequence", speech.VOICES[0])
    clip = np.pad(clip, (0, max(0, 3 * 16000 - len(clip))))[: 3 * 16000]  # exactly 3 s
    frames = synthetic.sample_clip(cfg.seed, cfg.data.num_frames, cfg.data.frame_size)
    results = {}
    for name, c in (("ours", cfg), ("upstream", seed_cfg)):
        torch.manual_seed(cfg.seed)
        model, processor = models.build_graft(c, corpus)
        batch = model_checks.audio_prompt_batch(processor, [clip], frames)
        results[name] = {
            "audio_tokens_3s": processor.audio_token_count(len(clip)),
            "prompt_tokens": int(batch["input_ids"].shape[1]),
            "forward_ms": 1000 * model_checks.forward_latency(model, batch),
        }
    results["forward_speedup"] = results["upstream"]["forward_ms"] / results["ours"]["forward_ms"]
    results["token_ratio"] = results["upstream"]["audio_tokens_3s"] / results["ours"]["audio_tokens_3s"]
    return results


def data_benchmark(cfg: Config) -> dict:
    from . import data_eda, speech

    return {**data_eda.data_benchmark(cfg), **{f"tts_{k}": v for k, v in speech.benchmark_tts().items()}}


def systems_benchmark(cfg: Config) -> dict | None:
    """Samples/s of the fine-tuned graft vs the ASR pipeline vs the upstream-style graft (same rows, same
    batch size, same process), from the trained checkpoints; None before `make report` trained them."""
    from . import evaluate, evaluation_report
    from .datastep import load_run_data

    needed = [cfg.paths.stage(s) / d for s, d in (("stage1", "final"), ("stage2", "merged"), ("stage2_text", "merged"))]
    if not all(p.is_dir() for p in needed):
        return None
    from . import latency

    splits, _ = load_run_data(cfg, build=False)
    models = evaluate.Models.load(cfg, cfg.eval)
    rows = evaluate.evaluation_rows(splits)
    speed = evaluate.speed_test(cfg, models, rows, cfg.eval)
    batched = latency.batched_asr_pipeline(cfg, models, rows)
    speed["asr_pipeline_hf_batched"] = {k: v for k, v in batched.items() if k != "transcripts"}
    ratios = evaluation_report.speed_ratios(speed)
    ratios["graft_vs_asr_pipeline_hf_batched"] = round(speed["audio_finetuned"]["samples_per_s"] / batched["samples_per_s"], 2)
    single = latency.single_stream(cfg, models, rows)
    return {"speed": speed, "ratios": ratios, "batch_size": cfg.eval.batch_size, "single_stream": single}


def step_time_benchmark(cfg: Config, threads: tuple[int, ...] = (1, 2), steps: int = 12) -> list[dict]:
    """Seconds per optimizer step of stage 0 (the embedded default's longest stage) at each torch thread count:
    how training time scales with cores. Each count trains `steps` steps from scratch in a scratch run dir that
    shares this run's data and tower caches; [] at paper scale (no stage 0) or before the data step."""
    import tempfile

    from . import models, stages
    from .datastep import load_run_data
    from .seed_spread import linked_run

    if cfg.model.base_vlm != models.EMBEDDED_VLM or not (cfg.paths.data / "dataset.json").is_file():
        return []
    data = load_run_data(cfg, build=False)
    before, out = torch.get_num_threads(), []
    with tempfile.TemporaryDirectory(prefix="surgvqa-bench-") as scratch:
        for n in threads:
            run = dataclasses.replace(cfg, run_root=f"{scratch}/threads{n}")
            linked_run(cfg, run, (run.paths.data, run.paths.run / "cache"))
            torch.set_num_threads(n)
            try:
                result = stages.train_stage0(run, data, resume=False, stop_after_steps=steps)
            finally:
                torch.set_num_threads(before)
            out.append({"threads": n, "steps": result.global_step, "wall_s": result.wall_time_s,
                        "s_per_step": result.wall_time_s / result.global_step,
                        "batch": cfg.train.stage0["per_device_train_batch_size"]})
    return out


def asr_throughput_benchmark(cfg: Config, files: int = 24) -> dict | None:
    """Seconds per file of the cascade's bulk decoding (each file plain and with the adapted cascade's prompt, as
    notebook 04 does): one every-thread stream decoding each file twice, against `asr.fill_transcript_caches`
    (single-thread workers, one encoder pass per file), and whether their transcripts agree. None before the data step."""
    import tempfile

    from . import asr
    from .caches import TranscriptCache

    audio = sorted((cfg.paths.data / "audio").glob("*.wav"))[:files]
    if not audio:
        return None
    model = asr.asr_model(cfg, cfg.eval)
    prompt = "Is there a polyp in view? Is blue dye visible? Which instrument is in the frame?"
    t0 = time.perf_counter()
    serial = {p: [asr.decode(model, str(a), p) for a in audio] for p in (None, prompt)}
    serial_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="surgvqa-bench-asr-") as scratch:
        caches = {None: TranscriptCache(scratch, "plain"), prompt: TranscriptCache(scratch, "prompted")}
        t0 = time.perf_counter()
        found = asr.fill_transcript_caches(model, [str(a) for a in audio], caches, progress=False)
        workers_s = time.perf_counter() - t0
    same = sum(found[p][str(a)][0] == text for p in serial for a, text in zip(audio, serial[p]))
    return {"files": len(audio), "workers": model.surgvqa_workers.workers,
            "serial_s_per_file": serial_s / len(audio), "workers_s_per_file": workers_s / len(audio),
            "same_transcripts": same, "transcripts": 2 * len(audio)}


PAPER_PROFILES = ("params/qwen2vl7b_whisper_turbo.yaml", "params/qwen2vl2b_8gb.yaml")


def paper_scale_benchmark() -> list[dict]:
    """Shapes and estimated training memory of the hub-sized profiles, built on the meta device."""
    from .paper_scale import paper_scale_report

    return [paper_scale_report(Config.from_yaml(p)) for p in PAPER_PROFILES]


def pipeline_timings(cfg: Config) -> list[dict]:
    path = cfg.paths.timings
    return json.loads(path.read_text()) if path.exists() else []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params/default.yaml")
    args = parser.parse_args(argv)
    cfg = Config.from_yaml(args.params)
    started = time.perf_counter()

    print(f"# surgvqa bench — profile {cfg.profile} ({args.params}), torch threads {torch.get_num_threads()}\n")
    g = graft_benchmark(cfg)
    print("## Graft: one 3 s spoken question + an 8-frame clip, one forward pass (median of 5)")
    print(f"{'setting':<16}{'audio tokens':>14}{'prompt tokens':>15}{'forward ms':>12}")
    for name in ("ours", "upstream"):
        r = g[name]
        print(f"{name:<16}{r['audio_tokens_3s']:>14}{r['prompt_tokens']:>15}{r['forward_ms']:>12.1f}")
    print(f"audio-token ratio {g['token_ratio']:.1f}x, forward speed-up {g['forward_speedup']:.1f}x\n")

    d = data_benchmark(cfg)
    print("## Data")
    for key, value in d.items():
        print(f"{key:<32}{value:>12.2f}")

    sb = systems_benchmark(cfg)
    print("\n## Answering a spoken question: samples/s on the same held-out rows (trained checkpoints)")
    if sb is None:
        print("no trained checkpoints for this profile yet (run `make report` first)")
    else:
        print(f"{'system':<24}{'samples/s':>10}{'p50 ms':>10}{'p95 ms':>10}   (batch {sb['batch_size']}, "
              f"{next(iter(sb['speed'].values()))['speed_rows']} rows)")
        for name in ("audio_finetuned", "asr_pipeline", "asr_pipeline_hf_batched", "audio_upstream", "text_finetuned"):
            r = sb["speed"][name]
            print(f"{name:<24}{r['samples_per_s']:>10.2f}{r['latency_ms_p50']:>10.0f}{r['latency_ms_p95']:>10.0f}")
        print("(asr_pipeline transcribes file by file with faster-whisper; asr_pipeline_hf_batched transcribes each "
              "batch in one transformers generate)")
        for key, value in sb["ratios"].items():
            print(f"{key:<40}{value:>8.2f}x")
        from .latency import format_single_stream

        print("\n## Single stream: one question at a time, systems interleaved per sample (trained checkpoints)")
        print(format_single_stream(sb["single_stream"]))

    print("\n## Paper scale on the meta device (public configs, no weights): shapes and estimated training memory")
    from .paper_scale import SEEDS_REPORTED, format_report

    for report in paper_scale_benchmark():
        print(format_report(report) + "\n")
    print(f"the seeds reported ~{SEEDS_REPORTED['qlora_peak_gb_batch1']:g} GB per GPU ({SEEDS_REPORTED['gpu']}) for the 7B "
          "QLoRA at batch 1 with 1500 audio tokens; no GPU figure here is measured")

    from .training_report import training_budget

    budget = training_budget(cfg)
    print("\n## Training stages (last run of this profile)")
    if len(budget):
        print(budget.to_string())
        print(f"stages 0-2 total: {budget['wall_time_s'].sum():.0f} s")
    else:
        print("no finished training stage yet")

    print("\n## Stage 0 training steps by torch threads (scaling with cores; a fresh model, this run's data)")
    scaling = step_time_benchmark(cfg)
    if scaling:
        print(f"{'threads':>8}{'steps':>7}{'s/step':>9}{'speed-up':>10}   (batch {scaling[0]['batch']} conversations, start-up included)")
        for r in scaling:
            print(f"{r['threads']:>8}{r['steps']:>7}{r['s_per_step']:>9.3f}{scaling[0]['s_per_step'] / r['s_per_step']:>9.2f}x")
    else:
        print("no stage 0 in this profile, or no data step yet (run `make report` first)")

    print("\n## The cascade's bulk decoding: each file plain and prompted (notebook 04's transcript caches)")
    fw = asr_throughput_benchmark(cfg)
    if fw:
        print(f"one {torch.get_num_threads()}-thread stream, each file decoded twice: {fw['serial_s_per_file']:.3f} s/file; "
              f"{fw['workers']} one-thread workers, one encoder pass per file: {fw['workers_s_per_file']:.3f} s/file "
              f"({fw['workers_s_per_file'] / fw['serial_s_per_file']:.2f}x); same transcripts {fw['same_transcripts']}/"
              f"{fw['transcripts']} ({fw['files']} files)")
    else:
        print("no data step yet (run `make report` first)")

    timings = pipeline_timings(cfg)
    print("\n## `make report` stages (last run of this profile)")
    if timings:
        for t in timings:
            print(f"{t['notebook']:<40}{t['seconds']:>10.1f} s")
        print(f"{'total':<40}{sum(t['seconds'] for t in timings):>10.1f} s")
    else:
        print(f"no pipeline run recorded yet for '{cfg.profile}' (run `make report` first)")
    print(f"\nbench finished in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
