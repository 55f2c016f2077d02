"""Paper scale on the meta device: the 7B graft's shapes against numbers computed here from the public
configs' dimensions (not from the code under test), and the 8 GB profile's memory estimate."""
from __future__ import annotations

import json
import math

import pytest

from surgvqa import paper_scale
from surgvqa.models import UPSTREAM_AUDIO
from surgvqa.config import Config

PAPER = "params/qwen2vl7b_whisper_turbo.yaml"
PAPER_VLM = "Qwen/Qwen2-VL-7B-Instruct"
LAPTOP = "params/qwen2vl2b_8gb.yaml"


def load_config(name: str) -> dict:
    return json.loads((paper_scale.config_dir(name) / "config.json").read_text())


def qwen2_vl_parameters(c: dict) -> dict[str, int]:
    """Qwen2-VL's parameters from its config: language model (with embeddings), untied lm_head, vision tower."""
    h, inter, vocab, layers = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["num_hidden_layers"]
    kv = c["num_key_value_heads"] * (h // c["num_attention_heads"])
    layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * inter + 2 * h  # q,k,v with bias, o, MLP, 2 RMSNorms
    v = c["vision_config"]
    e, p, t = v["embed_dim"], v["patch_size"], v["temporal_patch_size"]
    m = e * v["mlp_ratio"]
    block = 4 * e + (e * 3 * e + 3 * e) + (e * e + e) + (e * m + m) + (m * e + e)  # 2 LayerNorms, qkv, proj, fc1, fc2
    merged = e * v["spatial_merge_size"] ** 2
    visual = 3 * t * p * p * e + v["depth"] * block + 2 * e + (merged * merged + merged) + (merged * h + h)
    return {"language_model": vocab * h + layers * layer + h, "lm_head": 0 if c["tie_word_embeddings"] else vocab * h,
            "visual": visual}


def whisper_encoder_parameters(c: dict) -> int:
    d, ffn, mels = c["d_model"], c["encoder_ffn_dim"], c["num_mel_bins"]
    layer = 4 * d * d + 3 * d + 4 * d + (d * ffn + ffn) + (ffn * d + d)  # q,k(no bias),v,o; 2 LayerNorms; fc1, fc2
    return mels * d * 3 + d + d * d * 3 + d + c["max_source_positions"] * d + c["encoder_layers"] * layer + 2 * d


def lora_parameters(c: dict, r: int) -> int:
    h, inter = c["hidden_size"], c["intermediate_size"]
    kv = c["num_key_value_heads"] * (h // c["num_attention_heads"])
    per_layer = r * ((h + h) + 2 * (h + kv) + (h + h) + 2 * (h + inter) + (inter + h))
    return c["num_hidden_layers"] * per_layer


@pytest.fixture(scope="module")
def paper():
    cfg = Config.from_yaml(PAPER)
    model, processor = paper_scale.meta_graft(cfg)
    return cfg, model, processor


def test_paper_graft_is_on_meta_with_the_configs_parameter_counts(paper):
    cfg, model, _ = paper
    assert model.device.type == "meta"
    qwen, whisper = load_config(cfg.model.base_vlm), load_config(cfg.model.whisper)
    expected = qwen2_vl_parameters(qwen)
    groups = paper_scale.parameter_groups(model)
    for key in ("language_model", "lm_head", "visual"):
        assert groups[key] == expected[key], key
    assert groups["audio_tower"] == whisper_encoder_parameters(whisper)
    assert groups["total"] == sum(groups[k] for k in ("language_model", "lm_head", "visual", "audio_tower", "audio_projector"))
    assert 8.2e9 < groups["total"] - groups["audio_tower"] - groups["audio_projector"] < 8.4e9  # "7B" is 8.29 B with its tower


def test_projectors_ours_and_the_seeds(paper):
    cfg, model, _ = paper
    d, h = load_config(cfg.model.whisper)["d_model"], load_config(cfg.model.base_vlm)["hidden_size"]
    k = cfg.model.projector_stack_factor
    # ours: RMSNorm(k*d) -> Linear(k*d, 2h) -> SwiGLU -> Linear(h, h), no biases
    assert cfg.model.projector_type == "mlp"
    assert paper_scale.parameter_groups(model)["audio_projector"] == k * d + k * d * 2 * h + h * h
    seeds, _ = paper_scale.meta_graft(cfg, **UPSTREAM_AUDIO)
    seed_params = paper_scale.parameter_groups(seeds)["audio_projector"]
    assert seed_params == 1280 * 3584 == 4_587_520  # the seeds' Linear(1280 -> 3584): 4.59 M


def test_visual_and_audio_tokens_from_the_processor(paper):
    cfg, _, processor = paper
    assert (cfg.data.num_frames, cfg.data.frame_size) == (8, 384)
    side = round(384 / 28) * 28 // 14  # resized to a multiple of patch 14 x merge 2, in patches
    assert paper_scale.visual_tokens(processor, 8, 384) == (8 // 2) * side * side // 4 == 784
    # 3 s = 300 mel frames -> 150 encoder frames -> 4 per token
    assert paper_scale.audio_tokens(processor, 3.0) == math.ceil(150 / cfg.model.projector_stack_factor) == 38
    _, seed_processor = paper_scale.meta_graft(cfg, **UPSTREAM_AUDIO)
    assert paper_scale.audio_tokens(seed_processor, 3.0) == 1500  # every window padded to 30 s


def test_lora_r64_wraps_only_the_language_model(paper):
    cfg, _, _ = paper
    model, _ = paper_scale.meta_graft(cfg)  # a fresh one: LoRA wraps in place
    qwen = load_config(cfg.model.base_vlm)
    projector = paper_scale.parameter_groups(model)["audio_projector"]
    counts = paper_scale.lora_counts(model, cfg)
    assert cfg.lora.r == 64
    assert counts["wrapped_modules"] == qwen["num_hidden_layers"] * 7 == 196
    assert counts["lora_params"] == lora_parameters(qwen, 64) == 161_480_704
    assert counts["trainable_params"] == counts["lora_params"] + projector  # + the projector's trained copy


def test_memory_estimate_weights_follow_the_parameter_counts(paper):
    cfg, model, _ = paper
    groups = paper_scale.parameter_groups(model)
    text = model.config.text_config
    bf16 = paper_scale.memory_estimate(groups, 0, text, 1000, "bf16")
    nf4 = paper_scale.memory_estimate(groups, 0, text, 1000, "nf4")
    assert bf16["weights"] == pytest.approx(2 * groups["total"] / 1e9)
    quantized = 28 * (2 * 3584 * 3584 + 2 * 3584 * 512 + 3 * 3584 * 18944)  # the LM's Linear weights
    assert groups["quantized"] == quantized
    assert nf4["weights"] == pytest.approx((quantized * (4 / 8 + 1 / 64 + 4 / (64 * 256)) + 4 * (groups["total"] - quantized)) / 1e9)
    assert nf4["weights"] < bf16["weights"]
    longer = paper_scale.memory_estimate(groups, 0, text, 2000, "bf16")
    assert longer["logits"] == pytest.approx(2 * bf16["logits"]) and longer["peak"] > bf16["peak"]
    no_ckpt = paper_scale.memory_estimate(groups, 0, text, 1000, "bf16", gradient_checkpointing=False)
    assert no_ckpt["activations"] > 10 * bf16["activations"]
    with pytest.raises(ValueError, match="precision"):
        paper_scale.memory_estimate(groups, 0, text, 1000, "int8")


def test_8gb_profile_validates_and_its_qlora_peak_fits_in_7_gb(paper):
    cfg = Config.from_yaml(LAPTOP)
    m = cfg.model
    assert (m.base_vlm, m.load_in_4bit, m.gradient_checkpointing) == ("Qwen/Qwen2-VL-2B-Instruct", True, True)
    assert load_config(m.whisper)["d_model"] <= 768  # a small Whisper
    assert cfg.data.num_frames == 8
    model, processor = paper_scale.meta_graft(cfg)
    groups = paper_scale.parameter_groups(model)
    qwen = load_config(m.base_vlm)
    assert groups["lm_head"] == 0 and groups["language_model"] == qwen2_vl_parameters(qwen)["language_model"]  # tied
    counts = paper_scale.lora_counts(model, cfg)
    seq = paper_scale.sequence_tokens(paper_scale.visual_tokens(processor, 8, cfg.data.frame_size),
                                      paper_scale.audio_tokens(processor, 3.0), cfg.train.questions_per_clip)
    peak = paper_scale.memory_estimate(groups, counts["trainable_params"], model.config.text_config, seq, "nf4")["peak"]
    assert peak <= 7.0, f"estimated QLoRA peak {peak:.2f} GB"
    # the 7B graft with one question does not fit: the estimate is not trivially small
    _, big, _ = paper
    big_peak = paper_scale.memory_estimate(paper_scale.parameter_groups(big), lora_parameters(load_config(PAPER_VLM), 64),
                                           big.config.text_config, paper_scale.sequence_tokens(784, 38, 1), "nf4")["peak"]
    assert big_peak > 8.0


def test_unknown_hub_id_names_the_stored_configs():
    with pytest.raises(KeyError, match="Qwen/Qwen2-VL-7B-Instruct"):
        paper_scale.config_dir("Qwen/Qwen2-VL-72B-Instruct")
