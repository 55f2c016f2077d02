"""Bad input never gets past the front door (issue 12).

Each case in `CASES` makes one bad input under a temp dir and says which error it must raise and which
words the message must hold: the file, the line and the field or key. Inputs that must be *recovered*
from instead (a damaged cache entry, rows a loader once refused) have their own tests below.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from surgvqa import data, datastep, models, stratify
from surgvqa.audio import AudioError, load_audio, to_mono_16k, write_wav
from surgvqa.config import REPO_ROOT, Config, ConfigError
from surgvqa.data import DataError

SMOKE = REPO_ROOT / "params" / "smoke.yaml"


# ---- helpers ------------------------------------------------------------------------------------


def _row(i: int = 1, video: str = "002-003", start: int = 3806, **over) -> dict:
    """A REAL-Colon-VQA row as published: bare frame ids."""
    nums = [start + 4 * k for k in range(8)]
    row = {"id": f"qa_{i:06d}", "video_id": video, "frames": [f"{video}_{n}" for n in nums], "frame_numbers": nums,
           "question": "Is clean mucosa visible in this sequence?", "question_type": "mucosa_visibility",
           "support_frames": 8, "support_ratio": 1.0, "answer": "No, clean mucosa is not visible.", "short_answer": "no"}
    row.update(over)
    return row


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(path)
    return path


def _folder(root: Path, rows: list[dict], lines: list[str] | None = None) -> Path:
    """frames/<video>/<frame id>.jpg for every row + in_template.jsonl (the rows, or raw `lines`)."""
    root.mkdir(parents=True, exist_ok=True)
    for r in rows:
        for f in r["frames"]:
            if not (root / "frames" / r["video_id"] / f"{f}.jpg").exists():
                _image(root / "frames" / r["video_id"] / f"{f}.jpg")
    text = "".join(line + "\n" for line in lines) if lines is not None else "".join(json.dumps(r) + "\n" for r in rows)
    (root / "in_template.jsonl").write_text(text, encoding="utf-8")
    return root


def _wav(path: Path, seconds: float = 0.5) -> Path:
    t = np.arange(int(seconds * 16000)) / 16000
    return write_wav(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))


def _first_frame(root: Path, row: dict) -> Path:
    return root / "frames" / row["video_id"] / f"{row['frames'][0]}.jpg"


def _where(root: Path, line: int | None, field: str | None) -> list[str]:
    """What a DataError about in_template.jsonl must name."""
    f = root / "in_template.jsonl"
    return [f"{f}:{line}" if line else str(f)] + ([f"field '{field}'"] if field else [])


def _config(overrides: dict) -> Callable:
    return lambda: Config.from_yaml(SMOKE, overrides)


# ---- the cases: name -> (tmp_path -> (call, error type, words the message must hold)) ---------------------

CASES: dict[str, Callable] = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


# settings (item 3); `train.*` types were checked before, their ranges are new
@case
def config_lora_r_negative(tmp):
    return _config({"lora": {"r": -4}}), ConfigError, ["params/smoke.yaml", "lora.r", "-4"]


@case
def config_patience_unknown_stage(tmp):
    return (_config({"train": {"early_stopping_patience": {"stage1": 4, "stage3": 2}}}), ConfigError,
            ["params/smoke.yaml", "train.early_stopping_patience", "stage3"])


@case
def config_patience_not_an_integer(tmp):
    return (_config({"train": {"early_stopping_patience": {"stage1": "four"}}}), ConfigError,
            ["params/smoke.yaml", "train.early_stopping_patience.stage1", "'four'"])


@case
def config_patience_negative(tmp):
    return (_config({"train": {"early_stopping_patience": -1}}), ConfigError,
            ["params/smoke.yaml", "train.early_stopping_patience", "-1"])


@case
def config_removed_option(tmp):
    return (_config({"train": {"stage0_vision_tower": "frozen"}}), ConfigError,
            ["params/smoke.yaml", "train.stage0_vision_tower", "removed", "docs/RECIPE.md"])


@case
def config_stage1_language_model_unknown(tmp):
    return (_config({"train": {"stage1_language_model": "full"}}), ConfigError,
            ["params/smoke.yaml", "train.stage1_language_model", "'full'"])


@case
def config_stage0_refine_unknown_argument(tmp):
    return (_config({"train": {"stage0_refine": {"learning_rat": 3e-4}}}), ConfigError,
            ["params/smoke.yaml", "train.stage0_refine.learning_rat", "learning_rate"])


@case
def config_question_rarity_negative(tmp):
    return _config({"train": {"question_rarity": -1}}), ConfigError, ["params/smoke.yaml", "train.question_rarity", "-1"]


@case
def config_questions_per_clip_zero(tmp):
    return _config({"train": {"questions_per_clip": 0}}), ConfigError, ["params/smoke.yaml", "train.questions_per_clip", "0"]


@case
def config_lora_dropout_above_one(tmp):
    return _config({"lora": {"dropout": 5.0}}), ConfigError, ["params/smoke.yaml", "lora.dropout", "5.0"]


@case
def config_clips_per_video_negative(tmp):
    return _config({"data": {"clips_per_video": -3}}), ConfigError, ["params/smoke.yaml", "data.clips_per_video"]


@case
def config_more_voices_than_exist(tmp):
    cfg = Config.from_yaml(SMOKE, {"data": {"num_voices": 99}})
    return lambda: datastep.run_voices(cfg), ConfigError, ["params/smoke.yaml", "data.num_voices", "99"]


@case
def config_unknown_attention(tmp):
    return _config({"model": {"attn_implementation": "fast"}}), ConfigError, ["model.attn_implementation", "'fast'"]


@case
def config_eval_batch_size_a_word(tmp):
    return _config({"eval": {"batch_size": "sixteen"}}), ConfigError, ["params/smoke.yaml", "eval.batch_size", "sixteen"]


@case
def config_eval_max_rows_zero(tmp):
    return _config({"eval": {"max_rows": 0}}), ConfigError, ["eval.max_rows"]


@case
def config_eval_snr_a_string(tmp):
    return _config({"eval": {"noise_snr_db": "5dB"}}), ConfigError, ["eval.noise_snr_db", "5dB"]


@case
def config_eval_unknown_compute_type(tmp):
    return _config({"eval": {"asr_compute_type": "int4"}}), ConfigError, ["eval.asr_compute_type", "int4"]


@case
def config_learning_rate_as_yaml_string(tmp):  # YAML reads 1e-3 (no dot) as a string
    path = tmp / "p.yaml"
    path.write_text("train:\n  stage2:\n    learning_rate: 1e-3\n")
    return lambda: Config.from_yaml(path), ConfigError, [str(path), "train.stage2.learning_rate", "'1e-3'"]


@case
def config_learning_rate_negative(tmp):
    return _config({"train": {"stage1": {"learning_rate": -0.001}}}), ConfigError, ["train.stage1.learning_rate", "> 0"]


@case
def config_batch_size_a_word(tmp):
    return (_config({"train": {"stage0": {"per_device_train_batch_size": "sixteen"}}}), ConfigError,
            ["train.stage0.per_device_train_batch_size", "sixteen"])


@case
def config_batch_size_zero(tmp):
    return (_config({"train": {"stage0": {"per_device_train_batch_size": 0}}}), ConfigError,
            ["train.stage0.per_device_train_batch_size", ">= 1"])


@case
def config_misspelt_key(tmp):  # worked before; kept so it stays so
    return _config({"model": {"projecter_type": "mlp"}}), ConfigError, ["model.projecter_type", "model.projector_type"]


@case
def config_not_utf8(tmp):
    path = tmp / "latin1.yaml"
    path.write_bytes("profile: caf\u00e9\n".encode("latin-1"))
    return lambda: Config.from_yaml(path), ConfigError, [str(path), "not UTF-8"]


@case
def config_path_is_a_directory(tmp):
    return lambda: Config.from_yaml(tmp), ConfigError, [str(tmp), "directory"]


@case
def config_not_yaml(tmp):
    path = tmp / "bad.yaml"
    path.write_text("model: [unclosed\n")
    return lambda: Config.from_yaml(path), ConfigError, [str(path), "not valid YAML"]


# paths are confined to their root after resolving symlinks (item 1)
@case
def frame_symlink_out_of_the_root(tmp):
    root, r = tmp / "ds", _row()
    _folder(root, [r])
    frame = _first_frame(root, r)
    frame.unlink()
    frame.symlink_to(_image(tmp / "elsewhere" / "secret.jpg"))
    return lambda: data.load_dataset(root), DataError, _where(root, 1, "frames") + ["outside the dataset root"]


@case
def frame_folder_symlinked_out_of_the_root(tmp):
    root, r = tmp / "ds", _row()
    _folder(tmp / "other", [r])
    (root / "frames").mkdir(parents=True)
    (root / "frames" / r["video_id"]).symlink_to(tmp / "other" / "frames" / r["video_id"])
    _folder(root, [r])
    return lambda: data.load_dataset(root), DataError, _where(root, 1, "frames") + ["outside the dataset root"]


@case
def frame_symlink_to_a_non_image(tmp):
    root, r = tmp / "ds", _row()
    _folder(root, [r])
    frame = _first_frame(root, r)
    frame.unlink()
    frame.symlink_to(root / "in_template.jsonl")  # inside the root, but not an image
    return lambda: data.load_dataset(root), DataError, _where(root, 1, "frames") + ["not a readable image"]


@case
def frame_dotdot_escape(tmp):  # worked before
    root = tmp / "ds"
    _folder(root, [_row()])
    bad = _row(frames=["../x.jpg"] * 8)
    (root / "in_template.jsonl").write_text(json.dumps(bad) + "\n")
    return lambda: data.load_dataset(root), DataError, _where(root, 1, "frames") + ["escapes the dataset root"]


@case
def frame_missing(tmp):  # worked before
    root, r = tmp / "ds", _row()
    _folder(root, [r])
    _first_frame(root, r).unlink()
    return lambda: data.load_dataset(root), DataError, _where(root, 1, "frames") + ["not found"]


@case
def audio_symlink_out_of_the_root(tmp):
    root = tmp / "ds"
    _folder(root, [_row(audio="q.wav")])
    (root / "q.wav").symlink_to(_wav(tmp / "elsewhere" / "q.wav"))
    return lambda: data.load_dataset(root), DataError, _where(root, 1, "audio") + ["outside the dataset root"]


@case
def speech_corpus_audio_out_of_the_root(tmp):
    out = tmp / "data"
    out.mkdir()
    entry = {"id": "sc0", "kind": "question", "text": "hi", "voice": "v", "audio": "../x.wav", "duration_s": 1.0,
             "split": "train"}
    data.write_jsonl(out / "speech_corpus.jsonl", [entry])
    return (lambda: datastep._read_corpus(out), DataError,
            [f"{out / 'speech_corpus.jsonl'}:1", "field 'audio'", "escapes the dataset root"])


# one line reader (item 2)
@case
def line_numbers_after_unicode_line_breaks(tmp):
    root = tmp / "ds"
    good = _row(1, question="Is clean\u2028mucosa\x85visible\u2029here?")
    _folder(root, [good], lines=[json.dumps(good, ensure_ascii=False), "{not json"])
    return lambda: data.load_dataset(root), DataError, _where(root, 2, None) + ["malformed JSON"]


@case
def jsonl_not_utf8(tmp):
    root = tmp / "ds"
    _folder(root, [_row()])
    (root / "in_template.jsonl").write_bytes(json.dumps(_row(question="caf\u00e9?"), ensure_ascii=False).encode("latin-1") + b"\n")
    return lambda: data.load_dataset(root), DataError, _where(root, None, None) + ["not UTF-8"]


@case
def jsonl_missing_field(tmp):  # worked before
    root = tmp / "ds"
    r = _row()
    del r["short_answer"]
    _folder(root, [r])
    return lambda: data.load_dataset(root), DataError, _where(root, 1, "short_answer")


# short reads and empty files (item 6)
@case
def jsonl_empty(tmp):
    root = tmp / "ds"
    _folder(root, [])
    return lambda: data.load_dataset(root), DataError, _where(root, None, None) + ["holds no QA rows"]


@case
def jsonl_only_blank_lines(tmp):
    root = tmp / "ds"
    _folder(root, [], lines=["", "  "])
    return lambda: data.load_dataset(root), DataError, _where(root, None, None) + ["no QA rows", "2 blank lines"]


@case
def wav_shorter_than_its_header(tmp):
    path = _wav(tmp / "q.wav", seconds=1.0)
    path.write_bytes(path.read_bytes()[:-8000])
    return lambda: load_audio(path), AudioError, [str(path), "truncated"]


@case
def wav_truncated_in_a_row(tmp):
    root = tmp / "ds"
    _folder(root, [_row(audio="q.wav")])
    path = _wav(root / "q.wav", seconds=1.0)
    path.write_bytes(path.read_bytes()[:-8000])
    return lambda: data.load_dataset(root), DataError, _where(root, 1, "audio") + [str(path), "truncated"]


@case
def wav_with_nan_samples(tmp):
    path = tmp / "nan.wav"
    sf.write(str(path), np.array([0.1, np.nan, 0.2] * 200, np.float32), 16000, subtype="FLOAT")
    return lambda: load_audio(path), AudioError, [str(path), "NaN"]


@case
def dataset_stamp_half_written(tmp):
    (tmp / "dataset.json").write_text('{"source": "synth')
    return lambda: data.read_data_meta(tmp), DataError, [str(tmp / "dataset.json"), "not valid JSON"]


# rows are keyed by (video_id, id) (item 8): the same id in the same video is still a duplicate
@case
def duplicate_id_in_one_video(tmp):
    root = tmp / "ds"
    _folder(root, [_row(1), _row(1, start=5000)])
    return lambda: data.load_dataset(root), DataError, _where(root, 2, "id") + ["'qa_000001'", "'002-003'", "line 1"]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_naming_where(name, tmp_path):
    call, error, words = CASES[name](tmp_path)
    with pytest.raises(error) as info:
        call()
    missing = [w for w in words if w not in str(info.value)]
    assert not missing, f"message {str(info.value)!r} does not name {missing}"


# ---- accepted or recovered --------------------------------------------------------------------------


def test_jsonl_round_trip_keeps_unicode_line_breaks(tmp_path):
    breaks = "\u2028\u2029\x85\x1c\x1d\x1e\x0b\x0c\r"
    rows = [_row(i, question=f"Is{c}it clean?") for i, c in enumerate(breaks)]
    path = data.write_jsonl(tmp_path / "in_template.jsonl", rows)
    assert [obj for _, obj in data.read_jsonl(path)] == rows
    loaded, counts = data.load_jsonl(path, check_files=False)
    assert counts["rows"] == len(rows) and [r["question"] for r in loaded] == [r["question"] for r in rows]


def test_crlf_lines_read_like_lf(tmp_path):
    rows = [_row(1), _row(2)]
    (tmp_path / "crlf.jsonl").write_bytes(b"".join(json.dumps(r).encode() + b"\r\n" for r in rows))
    assert [obj for _, obj in data.read_jsonl(tmp_path / "crlf.jsonl")] == rows


def test_write_jsonl_leaves_no_temp_file_and_keeps_the_old_file_on_failure(tmp_path):
    path = data.write_jsonl(tmp_path / "a.jsonl", [{"x": 1}])

    def rows():
        yield {"x": 2}
        raise KeyboardInterrupt  # a writer interrupted half-way

    with pytest.raises(KeyboardInterrupt):
        data.write_jsonl(path, rows())
    assert path.read_text() == '{"x": 1}\n' and sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl"]


def test_same_id_in_two_videos_loads_and_stays_distinct(tmp_path):
    rows = [_row(1, video="001-001"), _row(1, video="002-003"), _row(2, video="002-003", start=5000)]
    ds = data.load_dataset(_folder(tmp_path, rows))
    assert [data.qa_key(r) for r in ds.rows] == [("001-001", "qa_000001"), ("002-003", "qa_000001"), ("002-003", "qa_000002")]
    assert len({data.row_key(r) for r in ds.rows}) == 3
    split = [dict(r, voice="v", template="in") for r in ds.rows]
    stratify.check_leakage({"train": split[:2], "val": split[2:]}, [], ["in"], ["out"])  # no "duplicate rows"


def test_symlinked_dataset_folder_and_links_inside_it_load(tmp_path):
    """Confinement is to the resolved root: a symlinked root, or a link that stays inside it, is fine."""
    r = _row()
    real = _folder(tmp_path / "real", [r])
    frame = _first_frame(real, r)
    os.replace(frame, real / "kept.jpg")
    frame.symlink_to(real / "kept.jpg")
    (tmp_path / "link").symlink_to(real)
    ds = data.load_dataset(tmp_path / "link")
    assert len(ds) == 1 and ds.frame_paths(ds[0])[0] == (real / "kept.jpg")


def test_integer_pcm_is_rescaled():
    pcm = (np.sin(np.arange(1600) / 5) * 16000).astype(np.int16)
    np.testing.assert_allclose(to_mono_16k(pcm, 16000), pcm / 32768.0, atol=1e-7)


# ---- the model side: processor arrays (item 5), feature cache (item 4), checkpoints (item 9) -------------


@pytest.fixture(scope="module")
def tiny():
    """A tiny grafted model (seconds): enough to process audio, encode it and save/load weights."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from qwen2_vl_audio import graft
    from surgvqa.tiny_vlm import build_tiny_qwen2_vl

    torch.manual_seed(0)
    base, tok, ip = build_tiny_qwen2_vl(["is a tool visible yes no"] * 20, seed=0, hidden_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
                                        vision_depth=1, vision_embed_dim=32, vision_num_heads=2, vocab_size=300)
    tower = WhisperEncoder(WhisperConfig(d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32,
                                         decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32,
                                         num_mel_bins=80)).eval()
    model, processor = graft(base, tower, tokenizer=tok, image_processor=ip)
    return model.eval(), processor


def _prompt(processor) -> list[str]:
    from surgvqa import prompts

    return [prompts.render(processor, prompts.vqa_messages("audio", video=False))]


def _clip(seconds: float = 1.0) -> np.ndarray:
    return (0.3 * np.sin(np.arange(int(seconds * 16000)) / 7)).astype(np.float32)


PROCESSOR_CASES = {
    "nan": (dict(audio=[np.array([0.1, np.nan] * 4000, np.float32)]), ["audio[0]", "NaN"]),
    "inf": (dict(audio=[_clip(), np.array([0.1, np.inf] * 4000, np.float32)]), ["audio[1]", "infinite"]),
    "44k": (dict(audio=[_clip()], sampling_rate=44_100), ["sampling_rate=44100", "16000"]),
    "stereo": (dict(audio=[np.zeros((16000, 2), np.float32)]), ["audio[0]", "1-D"]),
    "empty": (dict(audio=[np.zeros(0, np.float32)]), ["audio[0]", "empty"]),
    "bool": (dict(audio=[np.ones(16000, bool)]), ["audio[0]", "dtype bool"]),
}


@pytest.mark.parametrize("name", list(PROCESSOR_CASES))
def test_processor_refuses_arrays_load_audio_refuses(tiny, name):
    _, processor = tiny
    kwargs, words = PROCESSOR_CASES[name]
    with pytest.raises(ValueError) as info:
        processor(text=_prompt(processor) * len(kwargs["audio"]), **kwargs)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_processor_rescales_int16_like_load_audio(tiny):
    _, processor = tiny
    pcm = (_clip() * 32767).astype(np.int16)
    as_int, counts = processor.audio_features([pcm])
    as_float, _ = processor.audio_features([to_mono_16k(pcm, 16000)])
    torch.testing.assert_close(as_int["input_features"], as_float["input_features"], atol=0, rtol=0)
    assert counts == [processor.audio_token_count(16000)]
    assert processor(text=_prompt(processor), audio=[_clip()], sampling_rate=16000)["input_ids"].shape[0] == 1


def _entry(cache, wav):
    from surgvqa.caches import content_key

    return cache.path(content_key(wav))


def _damage_truncate(path: Path, other: Path):
    path.write_bytes(path.read_bytes()[:-40])


def _damage_flip_bytes(path: Path, other: Path):
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # inside the last tensor: the file still parses
    path.write_bytes(bytes(raw))


def _damage_other_key(path: Path, other: Path):
    path.write_bytes(other.read_bytes())  # a whole, valid entry of another clip


def _damage_no_metadata(path: Path, other: Path):
    from safetensors.torch import load_file, save_file

    save_file(load_file(path), path)  # the old format: tensors only, nothing to verify against


@pytest.mark.parametrize("damage", [_damage_truncate, _damage_flip_bytes, _damage_other_key, _damage_no_metadata],
                         ids=["truncated", "changed_bytes", "another_clips_entry", "no_key_or_checksum"])
def test_damaged_cache_entry_is_recomputed_with_a_warning_naming_it(tiny, tmp_path, damage):
    from surgvqa.caches import FeatureCache

    model, processor = tiny
    cache = FeatureCache(tmp_path / "cache", model, processor)
    wav, other_wav = _wav(tmp_path / "a.wav", 1.0), _wav(tmp_path / "b.wav", 0.6)
    good, n = cache.get(wav)
    cache.get(other_wav)
    damage(_entry(cache, wav), _entry(cache, other_wav))
    with pytest.warns(UserWarning, match=str(_entry(cache, wav).name)) as record:
        again, n_again = cache.get(wav)
    assert "damaged feature cache entry" in str(record[0].message)
    assert n_again == n and all(torch.equal(a, b) for a, b in zip(again, good)) and len(again) == len(good)
    assert (cache.hits, cache.misses, cache.recomputed) == (0, 3, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten entry is whole again: a plain hit
        cache.get(wav)
    assert cache.hits == 1


def test_stale_temp_files_are_removed_live_ones_kept(tiny, tmp_path):
    from surgvqa.caches import FeatureCache

    model, processor = tiny
    cache = FeatureCache(tmp_path, model, processor)
    dead_pid = 2 ** 22 + 12345  # above any pid_max default: no such process
    stale, live = cache.dir / f"abc.{dead_pid}.tmp", cache.dir / f"def.{os.getpid()}.tmp"
    stale.write_bytes(b"half")
    live.write_bytes(b"being written")
    FeatureCache(tmp_path, model, processor)
    assert not stale.exists() and live.exists()


@pytest.fixture()
def saved(tiny, tmp_path):
    model, processor = tiny
    return models.save_graft(model, processor, tmp_path / "graft")


def test_saved_graft_loads_strictly(saved, tiny):
    loaded, _ = models.load_graft(saved)
    for key, value in tiny[0].state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def _drop_projector(path: Path):
    from safetensors.torch import load_file, save_file

    weights = load_file(path / "model.safetensors")
    save_file({k: v for k, v in weights.items() if "audio_projector" not in k}, path / "model.safetensors",
              metadata={"format": "pt"})


def _add_stray_key(path: Path):
    from safetensors.torch import load_file, save_file

    weights = load_file(path / "model.safetensors")
    weights["model.old_adapter.weight"] = torch.zeros(2, 2)
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})


def _pickle_only(path: Path):
    (path / "model.safetensors").unlink()
    (path / "pytorch_model.bin").write_bytes(b"not loaded")  # never unpickled: refused by name


@pytest.mark.parametrize("damage, words", [
    (_drop_projector, ["missing keys", "audio_projector"]),
    (_add_stray_key, ["unexpected keys", "model.old_adapter.weight"]),
    (_pickle_only, ["pytorch_model.bin", "pickle"]),
], ids=["projector_missing", "unexpected_key", "pytorch_model_bin"])
def test_checkpoint_that_would_load_wrong_is_refused(saved, damage, words):
    damage(saved)
    with pytest.raises(models.CheckpointError) as info:
        models.load_graft(saved)
    assert str(saved) in str(info.value) and all(w in str(info.value) for w in words), str(info.value)


# ---- derived artifacts are keyed by what made them (item 7) -------------------------------------------


def test_noisy_copy_is_keyed_by_source_content_snr_and_seed(tmp_path):
    from surgvqa.speech import noisy_copy

    clean = _wav(tmp_path / "q.wav", 0.5)
    out = tmp_path / "eval"
    first = noisy_copy(clean, out, 5.0, seed=0)
    stale = out / "q-snr5.wav"  # what the old code named it: never picked up
    stale.write_bytes(b"left by other code")
    assert noisy_copy(clean, out, 5.0, seed=0) == first != stale
    assert noisy_copy(clean, out, 5.0, seed=1) != first
    assert noisy_copy(clean, out, 10.0, seed=0) != first
    write_wav(clean, load_audio(clean) * 0.5)  # same name, other content
    assert noisy_copy(clean, out, 5.0, seed=0) != first


def test_asr_decoding_is_greedy_only(monkeypatch):
    """faster-whisper's default temperature fallback samples without a seed: transcripts of noisy clips
    changed from run to run. The evaluation decodes at temperature 0 only."""
    from surgvqa import evaluate

    calls = []

    class FakeWhisper:
        def transcribe(self, path, **kwargs):
            calls.append(kwargs)
            return [], None

    evaluate.transcribe_faster_whisper(FakeWhisper(), ["a.wav"], progress=False)
    assert calls and calls[0].get("temperature") in (0, 0.0, [0.0], (0.0,)) and calls[0].get("beam_size") == 1
