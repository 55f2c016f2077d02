"""The offline whisper-base: CTranslate2 data -> HF Whisper, checked against ctranslate2 itself."""
import os
import re
import struct
from pathlib import Path

import ctranslate2
import jiwer
import numpy as np
import pytest
import torch
from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperModel, WhisperTokenizer

from surgvqa.audio import SAMPLE_RATE
from surgvqa.speech import VOICES, synthesize
from surgvqa import whisper_conversion as conv
from surgvqa.whisper_conversion import (
    EMBEDDED_WHISPER,
    CT2FormatError,
    embedded_ct2_dir,
    load_whisper,
    load_whisper_feature_extractor,
    read_ct2_model,
    resolve_whisper,
)

CLIPS = [  # (question, voice): ~2.3-2.6 s of speech each
    ("is there blue dye visible in the clip", VOICES[0]),
    ("which tool is being used in this frame", VOICES[1]),
    ("is the scope moving forward or backward", VOICES[2]),
]


def log_mel(hf_dir: Path, audio: np.ndarray) -> np.ndarray:
    """Whisper's native input: 80 x 3000 log-mel frames (the clip zero-padded to 30 s)."""
    return WhisperFeatureExtractor.from_pretrained(hf_dir)(audio, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features


def storage(features: np.ndarray) -> ctranslate2.StorageView:
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(features, dtype=np.float32))


def normalize(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


@pytest.fixture(scope="module")
def ct2_model(ct2_whisper_dir):
    return ctranslate2.models.Whisper(str(ct2_whisper_dir), device="cpu", compute_type="float32", intra_threads=2)


def test_encoder_matches_ctranslate2(embedded_whisper_dir, ct2_model):
    features = log_mel(embedded_whisper_dir, synthesize(*CLIPS[0]))
    assert features.shape == (1, 80, 3000)
    encoder = WhisperModel.from_pretrained(embedded_whisper_dir).encoder.eval()
    with torch.no_grad():
        ours = encoder(torch.from_numpy(features)).last_hidden_state.numpy()
    theirs = np.asarray(ct2_model.encode(storage(features), to_cpu=True))
    diff = float(np.abs(ours - theirs).max())
    print(f"encoder max abs diff vs ctranslate2: {diff:.2e} (activations up to {np.abs(theirs).max():.1f})")
    assert ours.shape == theirs.shape == (1, 1500, 512) and diff < 1e-2


def test_generate_transcribes_like_ctranslate2(embedded_whisper_dir, ct2_model):
    """Greedy decoding of the converted model gives ctranslate2's tokens: the decoder maps right."""
    model = WhisperForConditionalGeneration.from_pretrained(embedded_whisper_dir).eval()
    tokenizer = WhisperTokenizer.from_pretrained(embedded_whisper_dir)
    prompt = tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"])
    refs, hyps = [], []
    for text, voice in CLIPS:
        features = log_mel(embedded_whisper_dir, synthesize(text, voice))
        with torch.no_grad():
            ours = model.generate(torch.from_numpy(features), language="en", task="transcribe")[0].tolist()
        theirs = ct2_model.generate(storage(features), [prompt], beam_size=1)[0].sequences_ids[0]
        ours = [t for t in ours if t < tokenizer.eos_token_id]  # ctranslate2 returns only the text tokens
        assert ours == theirs, (tokenizer.decode(ours), tokenizer.decode(theirs))
        refs.append(normalize(text))
        hyps.append(normalize(tokenizer.decode(ours)))
    wer = jiwer.wer(refs, hyps)
    print(f"HF generate WER over {len(refs)} clips: {wer:.3f}", hyps)
    assert wer < 0.35


def test_config_and_loaders(embedded_whisper_dir, whisper_cache_dir):
    model = load_whisper(EMBEDDED_WHISPER, whisper_cache_dir)
    c = model.config
    assert isinstance(model, WhisperModel)
    assert (c.d_model, c.encoder_layers, c.decoder_layers, c.encoder_attention_heads, c.num_mel_bins, c.vocab_size) == (
        512, 6, 6, 8, 80, 51865)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert load_whisper_feature_extractor(EMBEDDED_WHISPER, whisper_cache_dir).feature_size == 80
    assert (embedded_whisper_dir / "model.safetensors").is_file()
    assert not list(embedded_whisper_dir.glob("*.bin")) and not list(embedded_whisper_dir.glob("*.pt"))


def test_second_resolve_reuses_the_cache(embedded_whisper_dir, whisper_cache_dir, monkeypatch):
    stamp = (embedded_whisper_dir / "model.safetensors").stat().st_mtime_ns
    ct2_stamp = (embedded_ct2_dir(whisper_cache_dir) / "model.bin").stat().st_mtime_ns
    monkeypatch.setattr(conv, "convert_ct2_whisper", lambda *a: pytest.fail("converted again"))
    assert resolve_whisper(EMBEDDED_WHISPER, whisper_cache_dir) == str(embedded_whisper_dir)
    assert (embedded_whisper_dir / "model.safetensors").stat().st_mtime_ns == stamp
    assert (embedded_ct2_dir(whisper_cache_dir) / "model.bin").stat().st_mtime_ns == ct2_stamp


def test_ct2_folders_are_cached_by_content_and_hub_ids_pass_through(tmp_path, ct2_whisper_dir, monkeypatch):
    calls = []

    def fake_convert(source, out_dir):  # the real conversion is covered above; this checks the caching
        calls.append(source)
        Path(out_dir).mkdir(parents=True)

    monkeypatch.setattr(conv, "convert_ct2_whisper", fake_convert)
    first = resolve_whisper(ct2_whisper_dir, tmp_path)
    assert resolve_whisper(str(ct2_whisper_dir), tmp_path) == first and calls == [ct2_whisper_dir]
    assert re.fullmatch(r"hf-ct2-[0-9a-f]{16}", Path(first).name) and Path(first).parent == tmp_path / "whisper"
    assert resolve_whisper("openai/whisper-large-v3-turbo", tmp_path) == "openai/whisper-large-v3-turbo"


def test_env_var_sets_the_cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SURGVQA_CACHE", str(tmp_path))
    assert conv.cache_root() == tmp_path and conv.cache_root(tmp_path / "x") == tmp_path / "x"


def test_truncated_model_bin_is_a_clear_error(tmp_path, ct2_whisper_dir):
    broken = tmp_path / "ct2"
    broken.mkdir()
    for name in ("config.json", "vocabulary.txt"):
        os.symlink(ct2_whisper_dir / name, broken / name)
    with open(ct2_whisper_dir / "model.bin", "rb") as src:
        (broken / "model.bin").write_bytes(src.read(1 << 20))
    with pytest.raises(CT2FormatError, match=r"model\.bin: truncated: reading data of decoder/embeddings/weight"):
        resolve_whisper(broken, tmp_path / "cache")
    assert list((tmp_path / "cache").glob("whisper/*")) == []  # no half-written conversion left behind


def ct2_file(path: Path, version: int = 6, dtype: int = 0, data: bytes = b"\0\0\0\0") -> Path:
    """A one-variable model.bin: a scalar `x` of CTranslate2 dtype id `dtype`."""
    def string(s: str) -> bytes:
        raw = s.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    body = struct.pack("<I", version) + string("WhisperSpec") + struct.pack("<II", 1, 1)
    body += string("x") + struct.pack("<BBI", 0, dtype, len(data)) + data
    path.write_bytes(body + struct.pack("<I", 1) + string("y") + string("x"))
    return path


def test_reader_decodes_dtypes_and_aliases(tmp_path):
    assert read_ct2_model(ct2_file(tmp_path / "a.bin", dtype=0, data=struct.pack("<f", 1.5))) == {"x": 1.5, "y": 1.5}
    assert read_ct2_model(ct2_file(tmp_path / "b.bin", dtype=4, data=np.float16(-2.25).tobytes()))["y"] == -2.25
    bf16 = (np.float32(3.0).view(np.uint32) >> 16).astype("<u2").tobytes()
    value = read_ct2_model(ct2_file(tmp_path / "c.bin", dtype=5, data=bf16))["x"]
    assert value.dtype == np.float32 and value == 3.0


def test_reader_rejects_unknown_version_and_dtype(tmp_path):
    with pytest.raises(CT2FormatError, match="format version 5, only version 6"):
        read_ct2_model(ct2_file(tmp_path / "v5.bin", version=5))
    with pytest.raises(CT2FormatError, match="variable x has unknown CTranslate2 dtype id 9"):
        read_ct2_model(ct2_file(tmp_path / "d9.bin", dtype=9))
