"""The grafted model: loss masking, generation, batching, audio sensitivity, vision parity, save/load."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageTextToText, AutoProcessor, WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

import qwen2_vl_audio
from qwen2_vl_audio import Qwen2VLAudioForConditionalGeneration, graft
from surgvqa import prompts
from surgvqa.tiny_vlm import build_tiny_qwen2_vl

CORPUS = [
    "is there blue dye visible in the clip",
    "is a tool visible",
    "which tool is visible forceps catheter snare none",
    "is the scope moving forward backward or static",
    "yes no absent present partial complete",
    "the lighting is white light or narrow band imaging",
] * 20
SIZES = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
             intermediate_size=128, vision_depth=1, vision_embed_dim=32, vision_num_heads=2, vocab_size=600)


def tiny_whisper() -> WhisperEncoder:
    torch.manual_seed(1)
    config = WhisperConfig(d_model=48, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=96,
                           decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=96, num_mel_bins=80)
    return WhisperEncoder(config).eval()


@pytest.fixture(scope="module")
def base():
    return build_tiny_qwen2_vl(CORPUS, seed=0, **SIZES)


@pytest.fixture(scope="module")
def grafted(base):
    model, tokenizer, image_processor = base
    torch.manual_seed(2)
    return graft(model, tiny_whisper(), tokenizer=tokenizer, image_processor=image_processor)


def speech_like(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def frames(seed: int, n: int = 8, size: int = 56) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def audio_batch(processor, clips, answer=None, padding_side="right", video=False):
    messages = prompts.vqa_messages("audio", video=video, answer=answer)
    text = [prompts.render(processor, messages)] * len(clips)
    videos = [frames(i) for i in range(len(clips))] if video else None
    return processor(text=text, audio=clips, videos=videos, padding_side=padding_side)


# ---- loss and gradients ---------------------------------------------------------------------
def test_loss_is_cross_entropy_over_answer_tokens_only(grafted):
    model, processor = grafted
    batch = audio_batch(processor, [speech_like(2.0, 0)], answer="yes", video=True)
    labels = prompts.assistant_labels(batch["input_ids"], processor.tokenizer)
    answer_ids = processor.tokenizer("yes", add_special_tokens=False)["input_ids"]
    trained = labels[labels != -100].tolist()
    assert trained == answer_ids + [processor.tokenizer.convert_tokens_to_ids("<|im_end|>")]

    model.train()
    out = model(**batch, labels=labels)
    logits = out.logits[0, :-1]
    target = labels[0, 1:]
    keep = target != -100
    expected = torch.nn.functional.cross_entropy(logits[keep], target[keep])
    torch.testing.assert_close(out.loss, expected)

    model.zero_grad()
    out.loss.backward()
    assert model.model.audio_projector.gate_up.weight.grad.abs().sum() > 0
    assert model.model.language_model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in model.model.audio_tower.parameters())
    model.zero_grad()
    model.eval()


def test_audio_mode_prompt_never_holds_the_question(grafted):
    _, processor = grafted
    with pytest.raises(prompts.PromptLeakError):
        prompts.vqa_messages("audio", question="is there blue dye")
    text = prompts.render(processor, prompts.vqa_messages("audio"))
    prompts.assert_no_question_text(text, "is there blue dye")
    with pytest.raises(prompts.PromptLeakError):
        prompts.assert_no_question_text(prompts.render(processor, prompts.vqa_messages("text", "is there blue dye")), "is there blue dye")


# ---- generation -----------------------------------------------------------------------------
def test_generate_with_cache_equals_without_and_encodes_audio_once(grafted):
    model, processor = grafted
    batch = audio_batch(processor, [speech_like(1.5, 3)], padding_side="left", video=True)
    calls = []
    hook = model.model.audio_tower.register_forward_hook(lambda *a: calls.append(1))
    try:
        cached = model.generate(**batch, max_new_tokens=6, do_sample=False, use_cache=True)
        assert len(calls) == 1, "audio must be encoded once per generate call"
        uncached = model.generate(**batch, max_new_tokens=6, do_sample=False, use_cache=False)
    finally:
        hook.remove()
    assert torch.equal(cached, uncached)


def test_batch_of_mixed_audio_lengths_equals_each_alone(grafted):
    model, processor = grafted
    clips = [speech_like(2.7, 4), speech_like(1.1, 5)]
    both = audio_batch(processor, clips, answer="no", padding_side="right")
    with torch.no_grad():
        logits_both = model(**both).logits
        for i, clip in enumerate(clips):
            alone = audio_batch(processor, [clip], answer="no")
            n = alone["input_ids"].shape[1]
            assert torch.equal(both["input_ids"][i, :n], alone["input_ids"][0])
            torch.testing.assert_close(logits_both[i, :n], model(**alone).logits[0], atol=1e-5, rtol=0)

    left = audio_batch(processor, clips, padding_side="left")
    generated = model.generate(**left, max_new_tokens=5, do_sample=False)[:, left["input_ids"].shape[1]:]
    for i, clip in enumerate(clips):
        alone = audio_batch(processor, [clip], padding_side="left")
        single = model.generate(**alone, max_new_tokens=5, do_sample=False)[:, alone["input_ids"].shape[1]:]
        assert torch.equal(generated[i], single[0])


def test_changing_audio_changes_only_positions_after_it(grafted):
    model, processor = grafted
    a = audio_batch(processor, [speech_like(2.0, 6)], video=True)
    b = audio_batch(processor, [speech_like(2.0, 7)], video=True)
    assert torch.equal(a["input_ids"], b["input_ids"])
    audio_positions = (a["input_ids"][0] == model.config.audio_token_id).nonzero().flatten()
    first = int(audio_positions[0])
    with torch.no_grad():
        la, lb = model(**a).logits[0], model(**b).logits[0]
    torch.testing.assert_close(la[:first], lb[:first], atol=0, rtol=0)
    assert (la[first:] - lb[first:]).abs().amax(-1).min() > 0, "every position from the audio on must hear it"


# ---- vision path ----------------------------------------------------------------------------
def test_vision_path_matches_stock_qwen2_vl(base, grafted):
    stock, tokenizer, _ = base
    model, processor = grafted
    stock.load_state_dict({k: v for k, v in model.state_dict().items() if "audio_" not in k})
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (56, 84, 3), dtype=np.uint8)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "is a tool visible"}]}]
    text = prompts.render(processor, messages)
    batch = processor(text=[text], images=[image], videos=[frames(1)])
    assert batch["video_grid_thw"].tolist() == [[4, 4, 4]], "8 frames enter as one clip with grid t = 4"
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, stock(**batch).logits, atol=0, rtol=0)
    ours = model.generate(**batch, max_new_tokens=6, do_sample=False)
    theirs = stock.generate(**batch, max_new_tokens=6, do_sample=False)
    assert torch.equal(ours, theirs)


def pillow_clip_patches(image_processor, frames) -> tuple[np.ndarray, list[int]]:
    """The processor's video path before it reused Qwen2-VL's image processor (the reference, verbatim)."""
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    ip = image_processor
    ps, tps, merge = ip.patch_size, ip.temporal_patch_size, ip.merge_size
    images = [f if isinstance(f, Image.Image) else Image.fromarray(np.asarray(f)) for f in frames]
    width, height = images[0].size
    h, w = smart_resize(height, width, factor=ps * merge, min_pixels=ip.size["shortest_edge"], max_pixels=ip.size["longest_edge"])
    mean, std = np.asarray(ip.image_mean, np.float32)[:, None, None], np.asarray(ip.image_std, np.float32)[:, None, None]
    video = np.stack(
        [(np.asarray(im.convert("RGB").resize((w, h), Image.BICUBIC), np.float32).transpose(2, 0, 1) / 255.0 - mean) / std for im in images]
    )
    if pad := -len(video) % tps:
        video = np.concatenate([video, np.repeat(video[-1:], pad, axis=0)])
    grid_t, grid_h, grid_w = len(video) // tps, h // ps, w // ps
    channels = video.shape[1]
    patches = video.reshape(grid_t, tps, channels, grid_h // merge, merge, ps, grid_w // merge, merge, ps)
    patches = patches.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return patches.reshape(grid_t * grid_h * grid_w, channels * tps * ps * ps), [grid_t, grid_h, grid_w]


def test_video_clips_are_patched_exactly_as_before(grafted):
    from PIL import Image

    _, processor = grafted
    clips = [frames(1), frames(3, size=112), frames(4, n=7, size=112),
             [Image.fromarray(f).resize((160, 120)) for f in frames(5, size=160)]]
    text = prompts.render(processor, prompts.vqa_messages("text", question="is a tool visible"))
    batch = processor(text=[text] * len(clips), videos=clips)
    expected = [pillow_clip_patches(processor.image_processor, clip) for clip in clips]
    assert batch["video_grid_thw"].tolist() == [grid for _, grid in expected]
    assert batch["pixel_values_videos"].dtype == torch.float32
    np.testing.assert_array_equal(batch["pixel_values_videos"].numpy(), np.concatenate([p for p, _ in expected]))


# ---- save / load ----------------------------------------------------------------------------
def test_save_pretrained_round_trip(grafted, tmp_path):
    model, processor = grafted
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    loaded_processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is Qwen2VLAudioForConditionalGeneration
    assert type(loaded_processor) is type(processor)
    assert loaded_processor.audio_stack_factor == processor.audio_stack_factor
    assert not any(p.requires_grad for p in loaded.model.audio_tower.parameters())
    batch = audio_batch(loaded_processor, [speech_like(1.7, 8)], video=True)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, atol=0, rtol=0)


def test_hub_named_checkpoint_loads_with_no_language_model_key_missing(grafted, tmp_path):
    """Hub Qwen2-VL files use `model.layers.*` / `visual.*`; all of them must land in the LM and vision tower."""
    model, _ = grafted
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    renamed = {}
    for key, value in weights.items():
        if key.startswith("model.language_model."):
            key = "model." + key[len("model.language_model."):]
        elif key.startswith("model.visual."):
            key = key[len("model."):]
        renamed[key] = value
    assert any(k.startswith("model.layers.") for k in renamed) and any(k.startswith("visual.") for k in renamed)
    save_file(renamed, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded, info = Qwen2VLAudioForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == set() or not info["missing_keys"], info["missing_keys"]
    reference = model.state_dict()
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, reference[key], atol=0, rtol=0, msg=key)


def test_lora_rule_wraps_only_language_model_modules(grafted):
    from peft import get_peft_model

    from surgvqa.config import LoraConfig
    from surgvqa.lora import peft_lora_config

    model, _ = grafted
    peft_model = get_peft_model(model, peft_lora_config(LoraConfig(r=2, alpha=4)))
    try:
        wrapped = [name for name, module in peft_model.named_modules() if hasattr(module, "lora_A") and "lora_A" not in name.split(".")[-1]]
        wrapped = [n for n in wrapped if not n.endswith(("lora_A", "lora_B"))]
        assert wrapped and all(".language_model.layers." in n for n in wrapped)
        assert not any("audio_tower" in n or "visual" in n for n in wrapped)
        trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
        assert any("audio_projector" in n for n in trainable)
        assert all("lora_" in n or "audio_projector" in n for n in trainable)
    finally:
        peft_model.unload()


def test_config_json_records_graft_settings(grafted, tmp_path):
    model, _ = grafted
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "qwen2_vl_audio"
    assert saved["projector_type"] == "mlp" and saved["projector_stack_factor"] == 4
    assert saved["audio_config"]["model_type"] == "whisper"
    assert qwen2_vl_audio.Qwen2VLAudioConfig.from_pretrained(tmp_path).audio_token_id == model.config.audio_token_id


# ---- audio length: tokens follow the clip, long clips are chunked, bad audio is named ---------
def test_three_second_question_is_at_most_40_tokens_with_default_params(grafted):
    from surgvqa.config import Config

    defaults = Config.from_yaml("params/default.yaml").model
    _, processor = grafted
    assert (processor.audio_stack_factor, processor.audio_length_mode) == (defaults.projector_stack_factor, defaults.audio_length_mode)
    batch = audio_batch(processor, [speech_like(3.0, 9)])
    n_tokens = int((batch["input_ids"] == processor.tokenizer.convert_tokens_to_ids(qwen2_vl_audio.AUDIO_PAD)).sum())
    assert n_tokens == processor.audio_token_count(3 * 16000) <= 40


def test_45_second_clip_is_chunked_not_truncated(grafted):
    model, processor = grafted
    clip = speech_like(45.0, 10)
    batch = audio_batch(processor, [clip])
    assert batch["input_features"].shape[0] == 2, "45 s = one 30 s chunk + one 15 s chunk"
    assert batch["feature_attention_mask"].sum(-1).tolist() == [3000, 1500]
    expected = qwen2_vl_audio.audio_token_count(3000, 4) + qwen2_vl_audio.audio_token_count(1500, 4)
    assert processor.audio_token_count(len(clip)) == expected
    # The last seconds are heard: changing only them changes the logits after the audio.
    changed = clip.copy()
    changed[-16000:] = speech_like(1.0, 11)
    with torch.no_grad():
        la = model(**batch).logits[0, -1]
        lb = model(**audio_batch(processor, [changed])).logits[0, -1]
    assert (la - lb).abs().max() > 0


def test_upstream_setting_gives_1500_tokens_per_30_s_window(grafted):
    _, processor = grafted
    seed_config = qwen2_vl_audio.Qwen2VLAudioConfig(projector_type="linear", projector_stack_factor=1, audio_length_mode="padded")
    seeds = qwen2_vl_audio.Qwen2VLAudioProcessor.from_config(
        seed_config, processor.image_processor, processor.tokenizer, processor.feature_extractor)
    assert seeds.audio_token_count(3 * 16000) == 1500
    assert seeds.audio_token_count(45 * 16000) == 3000
    batch = seeds(text=[prompts.render(seeds, prompts.vqa_messages("audio", video=False))], audio=[speech_like(3.0, 12)])
    assert batch["input_features"].shape[-1] == 3000


def test_processor_takes_its_audio_settings_from_the_model_config(base):
    model, tokenizer, image_processor = base
    grafted, processor = graft(model, tiny_whisper(), tokenizer=tokenizer, image_processor=image_processor,
                               projector_stack_factor=2, audio_length_mode="padded")
    assert (processor.audio_stack_factor, processor.audio_length_mode) == (2, "padded")
    assert (grafted.config.projector_stack_factor, grafted.config.audio_length_mode) == (2, "padded")


def test_processor_rejects_multichannel_and_empty_arrays(grafted):
    _, processor = grafted
    text = [prompts.render(processor, prompts.vqa_messages("audio", video=False))]
    with pytest.raises(ValueError, match="1-D mono"):
        processor(text=text, audio=[np.zeros((16000, 2), np.float32)])
    with pytest.raises(ValueError, match="empty"):
        processor(text=text, audio=[np.zeros(0, np.float32)])
    with pytest.raises(ValueError, match="placeholders"):
        processor(text=text, audio=[speech_like(1.0, 0), speech_like(1.0, 1)])


# ---- registration -----------------------------------------------------------------------------
def test_import_never_takes_a_registration_another_package_holds(monkeypatch):
    import importlib
    import warnings

    from transformers import conversion_mapping
    from transformers.conversion_mapping import WeightRenaming
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    config = qwen2_vl_audio.Qwen2VLAudioConfig
    with warnings.catch_warnings():  # free keys and our own are (re)claimed silently
        warnings.simplefilter("error")
        importlib.reload(qwen2_vl_audio)
    assert CONFIG_MAPPING["qwen2_vl_audio"] is config and MODEL_MAPPING[config] is qwen2_vl_audio.Qwen2VLAudioModel

    class Foreign:  # another package's classes and renaming under our keys
        pass

    renaming = [WeightRenaming(source_patterns=r"^x", target_patterns="y")]
    monkeypatch.setitem(CONFIG_MAPPING._extra_content, "qwen2_vl_audio", Foreign)
    monkeypatch.setitem(MODEL_MAPPING._extra_content, config, Foreign)
    monkeypatch.setitem(conversion_mapping._checkpoint_conversion_mapping_cache, "Qwen2VLAudioForConditionalGeneration", renaming)
    with pytest.warns(UserWarning, match="already belongs to") as record:
        importlib.reload(qwen2_vl_audio)
    assert len(record) == 3
    assert CONFIG_MAPPING["qwen2_vl_audio"] is Foreign and MODEL_MAPPING[config] is Foreign
    assert conversion_mapping.get_checkpoint_conversion_mapping("Qwen2VLAudioForConditionalGeneration")[0].source_patterns == ["^x"]
