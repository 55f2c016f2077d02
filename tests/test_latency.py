"""Single-stream latency: the per-phase timing of one answer on a tiny graft, the interleaving and
warm-up of the protocol, and its statistics (checked against numpy's percentiles)."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from qwen2_vl_audio import graft
from surgvqa import latency
from surgvqa.audio import write_wav
from surgvqa.collate import Example
from surgvqa.tiny_vlm import build_tiny_qwen2_vl

CORPUS = ["is a tool visible", "yes no absent present", "which tool forceps snare none"] * 10
SIZES = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
             intermediate_size=128, vision_depth=1, vision_embed_dim=32, vision_num_heads=2, vocab_size=400)


@pytest.fixture(scope="module")
def tiny_graft():
    model, tokenizer, image_processor = build_tiny_qwen2_vl(CORPUS, seed=0, **SIZES)
    torch.manual_seed(1)
    whisper = WhisperEncoder(WhisperConfig(d_model=48, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=96,
                                           decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=96)).eval()
    return graft(model, whisper, tokenizer=tokenizer, image_processor=image_processor)


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    rng = np.random.default_rng(0)
    frames = []
    for i in range(8):
        path = root / f"f{i}.png"
        Image.fromarray(rng.integers(0, 255, (56, 56, 3), dtype=np.uint8)).save(path)
        frames.append(str(path))
    audio = write_wav(root / "q.wav", (0.1 * rng.standard_normal(3 * 16000)).astype(np.float32))
    return Example("vqa", "yes", mode="audio", question="is a tool visible", audio=str(audio), frames=tuple(frames))


def test_one_answer_is_timed_by_phase_with_its_token_counts(tiny_graft, example):
    model, processor = tiny_graft
    r = latency.answer_one(model, processor, example, max_new_tokens=5)
    assert r["new_tokens"] == 5  # forced: every system decodes the same number of tokens
    assert r["audio_tokens"] == processor.audio_token_count(3 * 16000) == 38
    grid = 8 // 2 * (56 // 14) ** 2 // 4  # frames of 56 px: 4 x 4 patches, merged 2 x 2, temporal patch 2
    assert r["visual_tokens"] == grid
    assert r["input_tokens"] > r["audio_tokens"] + r["visual_tokens"]
    parts = r["preprocess_ms"] + r["prefill_ms"] + (r["new_tokens"] - 1) * r["decode_ms_per_token"]
    assert 0 < parts <= r["latency_ms"] and min(r["preprocess_ms"], r["prefill_ms"], r["decode_ms_per_token"]) > 0


def test_summary_statistics_are_numpy_percentiles():
    samples = [{"latency_ms": float(v), "prefill_ms": 2.0 * v, "preprocess_ms": 1.0, "decode_ms_per_token": 0.5,
                "input_tokens": 10 + v, "audio_tokens": 38, "visual_tokens": 64, "new_tokens": 8} for v in range(1, 10)]
    s = latency.summarize(samples)
    values = np.arange(1, 10, dtype=float)
    assert s["samples"] == 9
    assert s["latency_ms_p50"] == pytest.approx(np.median(values))
    assert s["latency_ms_iqr"] == pytest.approx([np.percentile(values, 25), np.percentile(values, 75)])
    assert s["latency_ms_p95"] == pytest.approx(np.percentile(values, 95))
    assert s["prefill_ms_p50"] == pytest.approx(2 * np.median(values))
    assert s["transcription_ms_p50"] == 0.0  # systems without a transcription step
    assert s["input_tokens"] == 15


def test_protocol_interleaves_rotates_and_discards_warmup(monkeypatch):
    calls = []

    def fake_one(model, processor, ex, max_new_tokens):
        calls.append((model, ex.meta["id"]))
        ms = {"graft": 100.0, "seed": 300.0}[model]
        return {"latency_ms": ms, "preprocess_ms": 1.0, "prefill_ms": ms - 10, "decode_ms_per_token": 1.0,
                "input_tokens": 50, "audio_tokens": 38, "visual_tokens": 64, "new_tokens": max_new_tokens}

    def fake_asr(models, ex, max_new_tokens):
        calls.append(("asr", ex.meta["id"]))
        return {"latency_ms": 200.0, "transcription_ms": 150.0, "preprocess_ms": 1.0, "prefill_ms": 40.0,
                "decode_ms_per_token": 1.0, "input_tokens": 30, "audio_tokens": 0, "visual_tokens": 64, "new_tokens": 4}

    rows = [{"id": f"r{i}", "split": "val" if i < 2 else "heldout_video"} for i in range(9)]
    monkeypatch.setattr(latency, "answer_one", fake_one)
    monkeypatch.setattr(latency, "answer_asr", fake_asr)
    monkeypatch.setattr(latency, "vqa_examples", lambda ds, mode: [types.SimpleNamespace(meta={"id": r["id"]}) for r in ds.rows])
    models = types.SimpleNamespace(audio_finetuned=type("Model", (str,), {"device": "cpu"})("graft"), processor=None)
    cfg = types.SimpleNamespace(eval=types.SimpleNamespace(speed_rows=5, max_new_tokens=4))
    ds = types.SimpleNamespace(rows=rows, root=None, audio_root=None)
    monkeypatch.setattr(latency, "Dataset", lambda rows, root, audio_root: types.SimpleNamespace(rows=rows))
    out = latency.single_stream(cfg, models, ds, warmup=2, upstream=("seed", None))
    ids = [r["id"] for r in rows if r["split"] != "val"]  # val rows are never timed
    assert [i for _, i in calls] == [i for i in ids for _ in range(3)]  # each sample: all three systems in turn
    firsts = [calls[3 * k][0] for k in range(len(ids))]
    assert firsts[:3] == ["graft", "asr", "seed"]  # the starting system rotates
    assert out["method"]["rows"] == 5 and out["method"]["warmup"] == 2
    assert all(s["samples"] == 5 for s in out["systems"].values())
    assert out["systems"]["asr_pipeline"]["transcription_ms_p50"] == 150.0
    assert out["ratios"]["audio_finetuned_vs_asr_pipeline_p50"] == pytest.approx(0.5)
    assert out["ratios"]["audio_upstream_vs_asr_pipeline_p50"] == pytest.approx(1.5)
    with pytest.raises(ValueError, match="warmup"):
        latency.single_stream(cfg, models, types.SimpleNamespace(rows=rows[:3], root=None, audio_root=None), warmup=2,
                              upstream=("seed", None))


def test_batched_whisper_transcribes_each_clip_as_alone(embedded_whisper_dir, tmp_path):
    """The batched ASR baseline: one generate() over the batch gives each clip's own transcript."""
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    from surgvqa.metrics import wer_cer
    from surgvqa.speech import VOICES, synthesize

    whisper = (WhisperForConditionalGeneration.from_pretrained(embedded_whisper_dir).eval(),
               WhisperFeatureExtractor.from_pretrained(embedded_whisper_dir), WhisperTokenizer.from_pretrained(embedded_whisper_dir))
    texts = ["is there a polyp in this clip", "which tool is visible"]
    paths = [str(write_wav(tmp_path / f"q{i}.wav", synthesize(t, VOICES[i]))) for i, t in enumerate(texts)]
    batched = latency.hf_transcribe(whisper, paths)
    assert batched == [latency.hf_transcribe(whisper, [p])[0] for p in paths]
    assert wer_cer(batched, texts)["wer"] < 0.5, batched
