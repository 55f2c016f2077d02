"""The data step: build (synthetic) or load (a REAL-Colon-VQA folder) the run's dataset, once, and
read it back: `load_run_data(cfg)` returns the splits and the stage-1 speech corpus through one reader.

    rows (synthetic.generate or data.load_dataset) -> splits (stratify) -> voices -> spoken
    questions (speech) -> the stage-1 speech corpus -> validated files under runs/<profile>/data/:

    dataset.json            roots, voices, held-out videos, summary (what was built)
    in_template.jsonl       every QA row (template wording) with its voice and audio
    out_template.jsonl      every QA row (natural paraphrase) with its voice and audio
    frames/<video>/<video>_<frame:06d>.png                   (synthetic source only)
    audio/<voice>-<hash>.wav  spoken questions and corpus sentences (cache by text + voice)
    splits/train.jsonl, splits/val.jsonl, splits/test.jsonl  full rows + `split`, `group`
    speech_corpus.jsonl     stage-1 speech -> transcript pairs (+ `split`)
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data import (DataError, DataSummary, Dataset, RunData, load_dataset, load_jsonl, read_data_meta, read_jsonl,
                   resolve_under, write_jsonl)
from . import channel, speech, stratify, synthetic
from .config import REPO_ROOT, Config, ConfigError
from .wording import narration_sentences, speakable


@dataclass
class BuildResult:
    """What `build_dataset` wrote and measured (paths are absolute)."""

    data_dir: Path
    frames_root: Path
    audio_root: Path
    files: dict[str, Path]
    summary: DataSummary
    split_sizes: dict[str, int]
    group_sizes: dict[str, int]
    corpus_sizes: dict[str, int]
    audio_seconds: dict[str, float]
    heldout_videos: list[str]
    train_voices: list[str]
    heldout_voices: list[str]
    timings: dict[str, float] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)
    # base rows in no split: their clip's split does not use their template (e.g. `out` rows of
    # training clips, `in` rows of held-out clips); counted so nothing disappears unnoticed
    unused_rows: int = 0
    # wordings the dataset uses in both template files and what `data.shared_wordings` did with their test rows
    # ({"rule", "held_out_wording", "wordings": {wording: {"in": rows, "out": rows}}, "test_rows_seen_wording",
    # "test_rows_excluded"}); also in dataset.json
    shared_wordings: dict = field(default_factory=dict)
    final_test_videos: list[str] = field(default_factory=list)
    reused: bool = False  # read back from the build's record (`data_step`): its timings are that build's

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["summary"] = self.summary.to_dict()
        return json.loads(json.dumps(d, default=str))

    @classmethod
    def load(cls, path: Path) -> "BuildResult":
        """The record `build_dataset` wrote beside its files (`BUILD_RECORD`), marked reused."""
        d = json.loads(Path(path).read_text())
        d["summary"] = DataSummary(**d["summary"])
        d["files"] = {name: Path(p) for name, p in d["files"].items()}
        return cls(**{**d, **{k: Path(d[k]) for k in ("data_dir", "frames_root", "audio_root")}, "reused": True})


BUILD_RECORD = "build.json"  # the BuildResult of the files beside it, written just before `dataset.json`


@dataclass(frozen=True)
class VoicePlan:
    """Who speaks: training voices, held-out voices of the training engines, and the held-out engine's voices."""

    train: tuple[speech.Voice, ...]
    heldout: tuple[speech.Voice, ...]
    engine: tuple[speech.Voice, ...] = ()

    @property
    def all(self) -> tuple[speech.Voice, ...]:
        return self.train + self.heldout + self.engine

    def manifest(self) -> list[dict]:
        """Every voice with its engine, family, settings and role (dataset.json's `voices`)."""
        roles = [("train", self.train), ("heldout", self.heldout), ("heldout_engine", self.engine)]
        return [{**asdict(v), "family": v.family, "role": role} for role, group in roles for v in group]


def run_voices(cfg) -> VoicePlan:
    """The run's voices (`data.voice_engines`, `data.num_voices` of espeak, `data.heldout_voices` per engine,
    `data.heldout_engine`); what speech cannot give is a params error (config cannot see speech)."""
    d = cfg.data
    if not 1 <= d.num_voices <= len(speech.VOICES):
        raise ConfigError(f"{cfg.params_source}: data.num_voices must be in 1..{len(speech.VOICES)} "
                          f"(the voices in speech.VOICES), got {d.num_voices}")
    unknown = [e for e in [*d.voice_engines, d.heldout_engine] if e is not None and e not in speech.ENGINES]
    if unknown:
        raise ConfigError(f"{cfg.params_source}: unknown speech engine(s) {unknown} in data.voice_engines / "
                          f"data.heldout_engine (engines: {', '.join(speech.ENGINES)})")

    def of(engine: str) -> tuple[speech.Voice, ...]:
        return speech.voices(d.num_voices) if engine == "espeak" else tuple(v for v in speech.ENGINE_VOICES if v.engine == engine)

    train: list[speech.Voice] = []
    heldout: list[speech.Voice] = []
    for engine in d.voice_engines:
        group = of(engine)
        k = d.heldout_voices if len(group) >= 2 * d.heldout_voices else 0
        train += group[: len(group) - k]
        heldout += group[len(group) - k:]
    if d.heldout_voices and not heldout:
        raise ConfigError(f"{cfg.params_source}: data.heldout_voices={d.heldout_voices} holds out no voice of "
                          f"{d.voice_engines}: no engine has twice as many voices")
    return VoicePlan(tuple(train), tuple(heldout), of(d.heldout_engine) if d.heldout_engine else ())


# What build_speech_corpus writes: 2 added the in-domain transcription test set (split test_in_domain); 3 draws
# the unseen texts from texts no training pool uses; 4 adds the held-out engine's test sets.
CORPUS_VERSION = 4


REGIONS_FILE = "regions.safetensors"


def data_stamp(cfg) -> str:

    payload = {"data": asdict(cfg.data), "seed": cfg.seed, "version": synthetic.GENERATOR_VERSION, "corpus": CORPUS_VERSION,
               "voices": repr(run_voices(cfg))}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _source_dir(source: str) -> Path:

    p = Path(source).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def _audio_for(text: str, voice, audio_dir: Path, noise_snr_db: float | None, seed: int, cache: dict) -> tuple[str, float]:
    """Spoken `text` (cached by text + voice, and by SNR when noisy): (path relative to the data dir, seconds)."""
    import soundfile as sf


    key = (text, voice.name, noise_snr_db)
    if key in cache:
        return cache[key]
    path = speech.synthesize_to_file(text, voice, cache_dir=audio_dir)
    if noise_snr_db is not None:
        path = speech.noisy_copy(path, audio_dir, noise_snr_db, seed)
    info = sf.info(str(path))
    result = (path.relative_to(audio_dir.parent).as_posix(), round(info.frames / info.samplerate, 3))
    cache[key] = result
    return result


def heard_through_channels(rows: list[dict], audio_key: str, seconds_key: str, out: Path, share: float,
                           seed: int) -> None:
    """Replace the audio of the `share` of `rows` that `channel.chosen` picks by its channel copy, recording the
    channel's parameters (`channel`) and the recording it came from (`spoken_audio`)."""
    import soundfile as sf

    for r in rows:
        src = out / r[audio_key]
        if not channel.chosen(seed, src.name, share):
            continue
        path, params = channel.channel_copy(src, out / "audio_channel", seed)
        info = sf.info(str(path))
        r["spoken_audio"], r["channel"] = r[audio_key], params
        r[audio_key], r[seconds_key] = path.relative_to(out).as_posix(), round(info.frames / info.samplerate, 3)


def _link_source_audio(src: Path, rel: str, out: Path) -> tuple[str, float]:
    """Make a real dataset's audio file reachable under the data dir (hard link, else copy).

    Never a symlink: the loader refuses paths that resolve outside their root.
    """
    import soundfile as sf

    target = out / "source_audio" / rel
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        source = resolve_under(src, rel, src, None, "audio")
        tmp = target.with_name(f".tmp{os.getpid()}-{target.name}")
        try:
            os.link(source, tmp)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(source, tmp)
        tmp.replace(target)
    info = sf.info(str(target))
    return f"source_audio/{rel}", round(info.frames / info.samplerate, 3)


def build_speech_corpus(question_texts: list[str], answers: list[str], narration: list[str], train_voices: list,
                        heldout_voices: list, audio_dir: Path, seed: int, unseen_texts: int, trained: set[str],
                        voices_per_text: int, noise_snr_db: float | None, cache: dict,
                        engine_voices: list = ()) -> list[dict]:
    """Stage-1 speech -> transcript pairs.

    Unseen texts: `unseen_texts` texts (a seeded draw) from those no training pool of any stage uses (`trained`:
    the questions, short and long answers of the training rows; compared as spoken); each is spoken once by a
    training voice (split `val`: the stage-1 val, which picks the checkpoint) and by every held-out voice (split
    `test`: the unseen transcription test). Every other text is a training text (`train`), spoken by
    `voices_per_text` training voices. test_in_domain = as many training texts (the domain's questions and
    answers, heard in training from other voices only), spoken by every held-out voice. The held-out engine's
    voices (`engine_voices`) speak both test sets too (splits `engine_test`, `engine_test_in_domain`).
    """
    rng = np.random.default_rng([seed, 0xC0DE])
    entries: list[dict] = []
    texts = [("question", t) for t in question_texts] + [("answer", t) for t in answers] + [("narration", t) for t in narration]
    trained_spoken = {speakable(t) for t in trained}
    eligible = [i for i, (_, t) in enumerate(texts) if speakable(t) not in trained_spoken]
    unseen = {eligible[int(i)] for i in np.random.default_rng([seed, 0x0E5EE]).permutation(len(eligible))[:unseen_texts]}
    k = 0
    for i, (kind, text) in enumerate(texts):
        spoken = speakable(text)
        if i in unseen:
            speakers = ([("val", train_voices[int(rng.integers(len(train_voices)))])] + [("test", v) for v in heldout_voices]
                        + [("engine_test", v) for v in engine_voices])
        else:
            picks = rng.permutation(len(train_voices))[:max(1, min(voices_per_text, len(train_voices)))]
            speakers = [("train", train_voices[int(j)]) for j in sorted(picks)]
        for split, voice in speakers:
            audio, secs = _audio_for(spoken, voice, audio_dir, noise_snr_db, seed, cache)
            entries.append({"id": f"sc{k:05d}", "kind": kind, "text": spoken, "voice": voice.name,
                            "audio": audio, "duration_s": secs, "split": split})
            k += 1
    # drawn after, from their own stream, so the entries above stay what they were
    domain = sorted({(e["kind"], e["text"]) for e in entries if e["split"] == "train" and e["kind"] != "narration"})
    pick = np.random.default_rng([seed, 0x1D0]).permutation(len(domain))[:len(unseen)]
    for kind, spoken in (domain[int(i)] for i in sorted(pick)):
        for split, voice in [("test_in_domain", v) for v in heldout_voices] + [("engine_test_in_domain", v) for v in engine_voices]:
            audio, secs = _audio_for(spoken, voice, audio_dir, noise_snr_db, seed, cache)
            entries.append({"id": f"sc{k:05d}", "kind": kind, "text": spoken, "voice": voice.name,
                            "audio": audio, "duration_s": secs, "split": split})
            k += 1
    return entries


def trained_texts(train_rows: list[dict]) -> set[str]:
    """Every text a stage trains on from the training rows: questions (read and heard), short and long answers."""
    return {r[k] for r in train_rows for k in ("question", "short_answer", "answer") if r.get(k)}


def _clean_outputs(out: Path) -> None:
    """Remove what a build writes. `dataset.json` goes first and is written last, so a build killed
    half-way leaves no stamp, and the next `ensure_dataset` rebuilds instead of trusting its files."""
    (out / "dataset.json").unlink(missing_ok=True)
    (out / BUILD_RECORD).unlink(missing_ok=True)
    for name in ("frames", "splits", "source_audio"):
        if (out / name).exists():
            shutil.rmtree(out / name)
    for name in ("in_template.jsonl", "out_template.jsonl", "speech_corpus.jsonl", REGIONS_FILE):
        (out / name).unlink(missing_ok=True)
    # temp files of a killed writer (finished ones are renamed): JSONL and stamp here, wavs in the audio cache
    for tmp in [*out.glob(".*.tmp"), *(out / "audio").glob(".tmp*"), *(out / "audio_channel").glob(".tmp*")]:
        tmp.unlink()


def build_dataset(cfg, out_dir: str | Path | None = None, verbose: bool = False) -> BuildResult:
    """The data step: rows (synthetic or a real folder) -> splits -> spoken questions -> files.

    Always rebuilds (deterministically); the audio cache under `audio/` is reused.
    Leakage checks run before anything is returned and raise `stratify.LeakageError`.
    """

    d = cfg.data
    out = Path(out_dir) if out_dir is not None else cfg.paths.data
    out.mkdir(parents=True, exist_ok=True)
    _clean_outputs(out)
    audio_dir = out / "audio"
    audio_dir.mkdir(exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    # 1. rows + frames
    if d.source == "synthetic":
        # where each thing is seen, per patch (vision pretraining's targets), when the frames tile into merged tokens
        regions = {} if d.frame_size % (2 * synthetic.REGION_PATCH) == 0 else None
        by_template, scenes = synthetic.generate(cfg.seed, d.num_videos, d.clips_per_video, d.num_frames, d.frame_size,
                                                 d.priors, out_dir=out, out_wordings=d.out_wordings, regions=regions)
        frames_root = out
        base_rows = by_template["in"] + by_template["out"]
        timings["render_s"] = time.perf_counter() - t0
        num_clips = len(scenes)
    else:
        src = _source_dir(d.source)
        real = load_dataset(src, num_frames=d.num_frames)
        frames_root = src
        base_rows = real.rows
        for r in base_rows:  # recorded questions that come with the data are kept (linked in)
            if r.get("audio"):
                r["audio"], r["audio_s"] = _link_source_audio(src, r["audio"], out)
                r.setdefault("voice", "source")
        timings["load_s"] = time.perf_counter() - t0
        num_clips = real.summary.clips
    # 2. splits and voices
    t1 = time.perf_counter()
    speakers = run_voices(cfg)
    all_voices = list(speakers.all)
    train_voices, heldout_voices, engine_voices = list(speakers.train), list(speakers.heldout), list(speakers.engine)
    plan = stratify.plan_splits(base_rows, d, cfg.seed)
    stratify.assign_voices(base_rows, [v.name for v in train_voices], cfg.seed)
    # 3. spoken questions (base rows first; the held-out-voice copies reuse the text cache)
    cache: dict = {}
    by_name = {v.name: v for v in all_voices}
    for r in base_rows:
        if not r.get("audio"):
            r["audio"], r["audio_s"] = _audio_for(r["question"], by_name[r["voice"]], audio_dir, d.noise_snr_db, cfg.seed, cache)
    splits = stratify.materialize_splits(base_rows, plan, d, [v.name for v in heldout_voices], cfg.seed,
                                         [v.name for v in engine_voices], [v.name for v in train_voices])
    shared = stratify.shared_wordings(base_rows)  # the dataset's own: never a leak, set apart by data.shared_wordings
    test_base = sum(1 for r in splits["test"] if r["group"] not in stratify.RESPOKEN)  # one row per QA row
    shared_info = {"rule": d.shared_wordings,
                   "held_out_wording": stratify.held_out_wording(d.train_templates, d.test_templates),
                   "wordings": shared,
                   **stratify.apply_shared_wordings(splits, shared, d.shared_wordings, d.train_templates, d.test_templates)}
    excluded_base = test_base - sum(1 for r in splits["test"] if r["group"] not in stratify.RESPOKEN)
    for rows in splits.values():
        for r in rows:
            if not r.get("audio"):
                r["audio"], r["audio_s"] = _audio_for(r["question"], by_name[r["voice"]], audio_dir, d.noise_snr_db, cfg.seed, cache)
            r["engine"] = by_name[r["voice"]].engine if r["voice"] in by_name else "recorded"
    heard_through_channels(splits["train"], "audio", "audio_s", out, d.augment_share, cfg.seed)
    timings["splits_and_speech_s"] = time.perf_counter() - t1
    # 4. stage-1 speech corpus (texts of the training templates only)
    t2 = time.perf_counter()
    q_texts = sorted({r["question"] for r in base_rows if r["template"] in d.train_templates})
    answers = sorted({r["answer"] for r in base_rows})
    corpus = build_speech_corpus(q_texts, answers, narration_sentences(cfg.seed, d.narration_sentences),
                                 train_voices, heldout_voices, audio_dir, cfg.seed, d.unseen_texts,
                                 trained_texts(splits["train"]), d.corpus_voices_per_text, d.noise_snr_db, cache,
                                 engine_voices=engine_voices)
    heard_through_channels([e for e in corpus if e["split"] == "train"], "audio", "duration_s", out, d.augment_share,
                           cfg.seed)
    timings["speech_corpus_s"] = time.perf_counter() - t2
    # 5. leakage checks, then write
    stratify.check_leakage(splits, heldout_voices=[v.name for v in heldout_voices + engine_voices], train_templates=d.train_templates,
                           test_templates=d.test_templates, corpus=corpus, shared=shared, rule=d.shared_wordings)
    t3 = time.perf_counter()
    files: dict[str, Path] = {}
    # every QA row with its voice and audio (for a real source: frame paths relative to that folder)
    files["in_template"] = write_jsonl(out / "in_template.jsonl", [r for r in base_rows if r["template"] == "in"])
    files["out_template"] = write_jsonl(out / "out_template.jsonl", [r for r in base_rows if r["template"] == "out"])
    for name, rows in splits.items():
        files[name] = write_jsonl(out / "splits" / f"{name}.jsonl", rows)
    files["speech_corpus"] = write_jsonl(out / "speech_corpus.jsonl", corpus)
    if d.source == "synthetic" and regions:
        from safetensors.numpy import save_file

        files["regions"] = out / REGIONS_FILE
        save_file(regions, str(files["regions"]))
    # 6. read everything back through the validating loader (what later notebooks will see)
    rel_frames = "." if frames_root == out else str(frames_root)
    caches: dict = {}
    for name in splits:
        load_jsonl(files[name], frames_root, num_frames=d.num_frames, audio_root=out, allow_empty=name != "train",
                   _caches=caches)
    summary = load_dataset(out, num_frames=d.num_frames, audio_root=out, frames_root=frames_root,
                             _caches=caches).summary
    timings["write_and_validate_s"] = time.perf_counter() - t3
    timings["total_s"] = time.perf_counter() - t0
    audio_seconds = {name: round(sum(r["audio_s"] for r in rows), 2) for name, rows in splits.items()}
    audio_seconds["speech_corpus"] = round(sum(e["duration_s"] for e in corpus), 2)
    meta = {
        "source": d.source,
        "frames_root": rel_frames,
        "audio_root": ".",
        "stamp": data_stamp(cfg),
        "generator_version": synthetic.GENERATOR_VERSION,
        "heldout_videos": plan.heldout_videos,
        "final_test_videos": plan.final_test_videos,
        "train_voices": [v.name for v in train_voices],
        "heldout_voices": [v.name for v in heldout_voices],
        "train_engines": list(d.voice_engines),
        "heldout_engine": d.heldout_engine,
        "heldout_engine_voices": [v.name for v in engine_voices],
        "voices": speakers.manifest(),
        # per clip, the share of each 14-px patch where each thing is seen (synthetic data whose frames tile into
        # Qwen2-VL's merged tokens; `data.read_regions`); None: no such ground truth
        "regions": ({"file": REGIONS_FILE, "masks": list(synthetic.MASKS), "patch": synthetic.REGION_PATCH}
                    if "regions" in files else None),
        "train_templates": list(d.train_templates),
        "test_templates": list(d.test_templates),
        "split_sizes": {k: len(v) for k, v in splits.items()},
        "unused_rows": len(base_rows) - excluded_base - sum(1 for rows in splits.values() for r in rows
                                                            if r["group"] not in stratify.RESPOKEN),
        "shared_wordings": shared_info,
        "summary": summary.to_dict(),
    }
    meta["summary"]["root"] = rel_frames
    files["dataset"] = out / "dataset.json"
    groups: dict[str, int] = {}
    for rows in splits.values():
        for r in rows:
            groups[r["group"]] = groups.get(r["group"], 0) + 1
    corpus_sizes: dict[str, int] = {}
    for e in corpus:
        corpus_sizes[e["split"]] = corpus_sizes.get(e["split"], 0) + 1
    rates = {"clips_per_s": num_clips / max(timings.get("render_s", timings.get("load_s", 0.0)), 1e-9),
             "qa_rows_per_s": len(base_rows) / max(timings.get("render_s", timings.get("load_s", 0.0)), 1e-9)}
    used = sum(1 for rows in splits.values() for r in rows if r["group"] not in stratify.RESPOKEN)
    result = BuildResult(out, frames_root, out, files, summary, {k: len(v) for k, v in splits.items()}, groups,
                         corpus_sizes, audio_seconds, plan.heldout_videos, [v.name for v in train_voices],
                         [v.name for v in heldout_voices], {k: round(v, 3) for k, v in timings.items()}, rates,
                         unused_rows=len(base_rows) - used - excluded_base, shared_wordings=shared_info,
                         final_test_videos=plan.final_test_videos)
    (out / BUILD_RECORD).write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    tmp = out / f".dataset.json.{os.getpid()}.tmp"  # the stamp a rerun trusts: whole or absent, and written last
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(files["dataset"])
    if verbose:
        print(summary)
        print(f"splits {result.split_sizes}  groups {groups}  corpus {corpus_sizes}  in {timings['total_s']:.1f}s")
        if shared:
            print(f"wordings in both template files: {len(shared)}; test rows seen_wording "
                  f"{shared_info['test_rows_seen_wording']}, excluded {shared_info['test_rows_excluded']}")
    return result


def built_with(cfg, out: Path) -> bool:
    """Whether `out` holds a finished data step made with these params (`dataset.json`'s stamp)."""
    meta = out / "dataset.json"
    try:
        return meta.is_file() and json.loads(meta.read_text()).get("stamp") == data_stamp(cfg)
    except json.JSONDecodeError:
        return False


def ensure_dataset(cfg, data_dir: str | Path | None = None) -> BuildResult | None:
    """Build the data step unless `dataset.json` already matches these params; None if reused."""
    out = Path(data_dir) if data_dir is not None else cfg.paths.data
    return None if built_with(cfg, out) else build_dataset(cfg, out_dir=out)


def data_step(cfg, data_dir: str | Path | None = None) -> BuildResult:
    """Notebook 01's data step: the record of the build on disk when it was made with these params (`reused`), else
    a new build. A rerun after a change elsewhere (a stage's options, an evaluation) rebuilds nothing."""
    out = Path(data_dir) if data_dir is not None else cfg.paths.data
    if built_with(cfg, out) and (out / BUILD_RECORD).is_file():
        return BuildResult.load(out / BUILD_RECORD)
    return build_dataset(cfg, out_dir=out)


CORPUS_FIELDS = ("id", "kind", "text", "voice", "audio", "duration_s", "split")  # what build_speech_corpus writes


def load_run_data(cfg: Config, data_dir: str | Path | None = None, build: bool = True) -> RunData:
    """The run's splits and speech corpus, validated and leakage-checked.

    Builds the data step first if its files are missing or were made with other params; `build=False`
    (multi-process runs) requires them on disk, so that processes never race to write them.
    """
    data_dir = Path(data_dir) if data_dir is not None else cfg.paths.data
    if build:
        ensure_dataset(cfg, data_dir)
    meta = read_data_meta(data_dir)
    frames_root, audio_root = _frames_root(data_dir, meta), data_dir / meta["audio_root"]
    caches: dict = {}
    splits: dict[str, Dataset] = {}
    for s in stratify.SPLIT_NAMES:
        path = data_dir / "splits" / f"{s}.jsonl"
        rows, counts = load_jsonl(path, frames_root, num_frames=cfg.data.num_frames, audio_root=audio_root,
                                  allow_empty=s != "train", _caches=caches)  # params may leave val/test empty
        splits[s] = Dataset(rows, frames_root.resolve(), audio_root.resolve(),
                              DataSummary.of(rows, frames_root, {path.name: len(rows)}, counts["blank_lines"]))
    corpus = _read_corpus(data_dir)
    shared = meta.get("shared_wordings", {})  # absent in a data step built before it: nothing shared, the strict check
    stratify.check_leakage({s: d.rows for s, d in splits.items()}, meta["heldout_voices"], meta["train_templates"],
                           meta["test_templates"], corpus, shared=shared.get("wordings", {}),
                           rule=shared.get("rule", "score_apart"))
    return RunData(splits, corpus)


def load_base(cfg: Config, data_dir: str | Path | None = None) -> Dataset:
    """Every QA row of the run (both templates, before splitting) as a validated `Dataset`."""
    out = Path(data_dir) if data_dir is not None else cfg.paths.data
    ensure_dataset(cfg, out)
    return load_dataset(out, num_frames=cfg.data.num_frames, audio_root=out, frames_root=_frames_root(out, read_data_meta(out)))


def _frames_root(data_dir: Path, meta: dict) -> Path:
    root = Path(meta["frames_root"])
    return root if root.is_absolute() else data_dir / root


def _read_corpus(data_dir: Path) -> list[dict]:
    """The one reader of `speech_corpus.jsonl` (entries must name their audio, which must stay in the data dir)."""
    path = data_dir / "speech_corpus.jsonl"
    corpus = []
    for lineno, entry in read_jsonl(path):
        if entry is None:
            continue
        if not isinstance(entry, dict):
            raise DataError(path, lineno, None, f"expected a JSON object, got {type(entry).__name__}")
        for name in CORPUS_FIELDS:
            if name not in entry:
                raise DataError(path, lineno, name, "missing required field")
        resolve_under(data_dir, entry["audio"], path, lineno, "audio")
        corpus.append(entry)
    if not corpus:
        raise DataError(path, None, None, "holds no speech corpus entries")
    return corpus
