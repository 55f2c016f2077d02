"""Ablation: does hearing training audio through random channels (`data.augment_share`) help the graft hear an
engine family it never heard? Val protocol, training engines only (the held-out engine is never touched).

One training engine family (`--dev-engine`, default festival) leaves every stage-1 pool; its recordings of texts the
pool holds from other voices are the dev set (the held-out engine's in-domain transcription test, on training
data). For each share, the data step is rebuilt with that share (the run's audio cache linked in), stage 1 trains
from the run's stage 0 with the reference recipe, and the kept graft transcribes the dev set and stage 1's own val.

    python ablations/stage1_channels.py --params params/default.yaml --shares 0 0.5

Writes reports/ablations/stage1_channels.json (what was run, the command, the commit, the date, each run's WER).
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from surgvqa import datastep, evaluate, metrics, stages
from surgvqa.config import Config
from surgvqa.seed_spread import linked_run

import record  # ablations/record.py, beside this script


def share_config(cfg: Config, share: float, root: Path) -> Config:
    """The run's config with `share`, writing under `root/share<share>`: stage 0 and the audio cache are the run's."""
    out = root / f"share{share:g}"
    shared = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, augment_share=share), run_root=str(out),
                                 reports_dir=None, figures_dir=None)
    for source in (cfg.paths.stage("stage0"), cfg.paths.data / "audio", cfg.paths.run / "cache"):
        if not source.exists():
            raise FileNotFoundError(f"{source}: run the reference pipeline's data step and stage 0 first")
    return linked_run(cfg, shared, (shared.paths.stage("stage0"), shared.paths.data / "audio", shared.paths.run / "cache"))


def run(cfg: Config, shares: list[float], dev_engine: str, root: Path) -> dict:
    engine_of = {v.name: v.engine for v in datastep.run_voices(cfg).all}
    if dev_engine not in cfg.data.voice_engines:
        raise ValueError(f"--dev-engine {dev_engine!r} is not a training engine ({cfg.data.voice_engines})")
    runs = []
    for share in shares:
        shared = share_config(cfg, share, root)
        data = datastep.load_run_data(shared)
        stage = stages.prepare_stage1(shared, data)
        dev_voices = {v for v, e in engine_of.items() if e == dev_engine}
        pool = [ex for ex in stage.train if ex.meta["voice"] not in dev_voices]
        heard = {ex.answer for ex in pool}
        dev = [e for e in data.corpus if e["split"] == "train" and e["voice"] in dev_voices and e["text"] in heard
               and e["kind"] != "narration"]
        dev = [{**e, "audio": e.get("spoken_audio", e["audio"])} for e in dev]  # as spoken: never a channel copy
        graft, result = stages.train_stage1(shared, dataclasses.replace(stage, train=pool))
        wer = {}
        for name, entries in (("dev_engine", dev), ("val", [e for e in data.corpus if e["split"] == "val"])):
            hyps = evaluate.graft_transcribe(graft, stage.processor, entries, shared.paths.data, shared.eval, cfg=shared)
            wer[name] = {**metrics.wer_cer(hyps, [e["text"] for e in entries]), "utterances": len(entries)}
        runs.append({"augment_share": share, "pool": len(pool), "channel_copies": sum("-ch" in ex.audio for ex in pool),
                     "steps": result.global_step, "best_eval_wer": result.best_eval_wer, "wer": wer})
        print(json.dumps(runs[-1]))
    return {"what": f"stage 1 (reference recipe, the run's stage 0) with data.augment_share in {shares}; the "
                    f"{dev_engine} voices leave every stage-1 pool, and their recordings of texts the pool holds from "
                    "other voices are the dev set (as spoken); val = stage 1's own val (unseen texts, a training voice)",
            "dev_engine": dev_engine, "runs": runs}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = record.parser(__doc__, "stage1_channels")
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--dev-engine", default="festival")
    args = parser.parse_args(argv)
    cfg, root = record.setup(args, "stage1_channels")
    record.write("stage1_channels", run(cfg, args.shares, args.dev_engine, root), argv, args.params)


if __name__ == "__main__":
    main()
