"""Builders: graft Whisper onto a Qwen2-VL, and the tiny Qwen2-VL of the embedded default."""
from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoTokenizer,
    PreTrainedTokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    WhisperFeatureExtractor,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.whisper.modeling_whisper import WhisperEncoder, WhisperForConditionalGeneration, WhisperModel

from .configuration_qwen2_vl_audio import Qwen2VLAudioConfig
from .modeling_qwen2_vl_audio import Qwen2VLAudioForConditionalGeneration
from .processing_qwen2_vl_audio import (
    AUDIO_END,
    AUDIO_PAD,
    AUDIO_START,
    AUDIO_TOKENS,
    END_OF_TEXT,
    IM_END,
    IMAGE_PAD,
    QWEN2_VL_SPECIAL_TOKENS,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
    Qwen2VLAudioProcessor,
)

# Frames of the embedded default are small: let the image processor keep them at their size.
TINY_MIN_PIXELS = 28 * 28
TINY_MAX_PIXELS = 384 * 384


def train_tokenizer(corpus: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `corpus`, with Qwen2-VL's special tokens and the audio tokens."""
    special = [*QWEN2_VL_SPECIAL_TOKENS, *AUDIO_TOKENS]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=IM_END, pad_token=END_OF_TEXT, additional_special_tokens=special[1:]
    )
    if len(tokenizer) > vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, more than vocab_size={vocab_size}")
    return tokenizer


def _mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies over (t, h, w) in Qwen2-VL's 16:24:24 proportion."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def tiny_qwen2_vl_config(tokenizer, *, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=768, vision_depth=2, vision_embed_dim=96,
                         vision_num_heads=4, vocab_size=2048) -> Qwen2VLConfig:
    """Config of a small Qwen2-VL (same architecture, toy sizes) for the offline default."""
    head_dim = hidden_size // num_attention_heads
    ids = tokenizer.convert_tokens_to_ids
    return Qwen2VLConfig(
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads,
            num_key_value_heads=num_key_value_heads,
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": _mrope_section(head_dim)},
            bos_token_id=ids(END_OF_TEXT),
            eos_token_id=ids(IM_END),
            pad_token_id=ids(END_OF_TEXT),
        ),
        vision_config=dict(
            depth=vision_depth, embed_dim=vision_embed_dim, num_heads=vision_num_heads, hidden_size=hidden_size
        ),
        image_token_id=ids(IMAGE_PAD),
        video_token_id=ids(VIDEO_PAD),
        vision_start_token_id=ids(VISION_START),
        vision_end_token_id=ids(VISION_END),
        tie_word_embeddings=True,
    )


def build_tiny_qwen2_vl(corpus: Iterable[str], seed: int = 0, **sizes) -> tuple[Qwen2VLForConditionalGeneration, PreTrainedTokenizerFast, Qwen2VLImageProcessorPil]:
    """A randomly initialised tiny stock Qwen2-VL, its tokenizer (trained on `corpus`) and image processor."""
    tokenizer = train_tokenizer(corpus, sizes.get("vocab_size", 2048))
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(tiny_qwen2_vl_config(tokenizer, **sizes))
    image_processor = Qwen2VLImageProcessorPil(min_pixels=TINY_MIN_PIXELS, max_pixels=TINY_MAX_PIXELS)
    return model.eval(), tokenizer, image_processor


def _whisper_encoder_and_features(whisper, feature_extractor):
    if isinstance(whisper, (str, os.PathLike)):
        encoder = WhisperModel.from_pretrained(whisper).get_encoder()
        return encoder, feature_extractor or WhisperFeatureExtractor.from_pretrained(whisper)
    if isinstance(whisper, (WhisperModel, WhisperForConditionalGeneration)):
        encoder = whisper.get_encoder()
    elif isinstance(whisper, WhisperEncoder):
        encoder = whisper
    else:
        raise TypeError(f"whisper must be a hub id, a directory or a Whisper model, got {type(whisper).__name__}")
    return encoder, feature_extractor or WhisperFeatureExtractor(feature_size=encoder.config.num_mel_bins)


def graft(
    base_vlm: str | Qwen2VLForConditionalGeneration,
    whisper: str | os.PathLike | WhisperModel | WhisperForConditionalGeneration | WhisperEncoder,
    *,
    tokenizer=None,
    image_processor=None,
    feature_extractor=None,
    projector_type: str = "mlp",
    projector_stack_factor: int = 4,
    projector_hidden_size: int | None = None,
    audio_length_mode: str = "trimmed",
    **from_pretrained_kwargs: Any,
) -> tuple[Qwen2VLAudioForConditionalGeneration, Qwen2VLAudioProcessor]:
    """Graft a frozen Whisper encoder + a new projector onto a Qwen2-VL.

    `base_vlm`: a hub id / local dir of a Qwen2-VL checkpoint (loaded with `from_pretrained_kwargs`,
    e.g. `quantization_config`, `dtype`), or an in-memory `Qwen2VLForConditionalGeneration`
    (then pass its `tokenizer` and `image_processor`).
    `whisper`: a hub id or local dir of a HF Whisper checkpoint, or an in-memory model.
    Returns the grafted model (tower frozen) and its processor.
    """
    encoder, feature_extractor = _whisper_encoder_and_features(whisper, feature_extractor)
    if isinstance(base_vlm, str):
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(base_vlm)
        image_processor = image_processor or Qwen2VLImageProcessorPil.from_pretrained(base_vlm)
        base_config = Qwen2VLConfig.from_pretrained(base_vlm)
    elif isinstance(base_vlm, Qwen2VLForConditionalGeneration):
        if tokenizer is None or image_processor is None:
            raise ValueError("an in-memory base_vlm needs its `tokenizer` and `image_processor`")
        base_config = base_vlm.config
    else:
        raise TypeError(f"base_vlm must be a hub id, a directory or a Qwen2VLForConditionalGeneration, got {type(base_vlm).__name__}")

    # Add the audio tokens once; Qwen2-VL's embedding has spare rows, so their ids usually fit without resizing.
    missing = [t for t in AUDIO_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    ids = tokenizer.convert_tokens_to_ids

    config_dict = base_config.to_dict()
    for key in ("model_type", "architectures", "transformers_version"):
        config_dict.pop(key, None)
    config = Qwen2VLAudioConfig(
        **config_dict,
        audio_config=encoder.config.to_dict(),
        audio_token_id=ids(AUDIO_PAD),
        audio_start_token_id=ids(AUDIO_START),
        audio_end_token_id=ids(AUDIO_END),
        projector_type=projector_type,
        projector_stack_factor=projector_stack_factor,
        projector_hidden_size=projector_hidden_size,
        audio_length_mode=audio_length_mode,
    )

    if isinstance(base_vlm, str):
        # The registered conversion mapping renames hub-style keys (model.layers.*, visual.*), so no LM weight is left random.
        model = Qwen2VLAudioForConditionalGeneration.from_pretrained(base_vlm, config=config, **from_pretrained_kwargs)
    else:
        model = Qwen2VLAudioForConditionalGeneration(config).to(base_vlm.dtype)
        result = model.load_state_dict(base_vlm.state_dict(), strict=False)
        not_audio = [k for k in result.missing_keys if not k.startswith(("model.audio_tower.", "model.audio_projector."))]
        if not_audio or result.unexpected_keys:
            raise RuntimeError(f"base weights did not fit the graft: missing {not_audio}, unexpected {result.unexpected_keys}")

    if len(tokenizer) > model.config.text_config.vocab_size:
        model.resize_token_embeddings(len(tokenizer))
    model.model.audio_tower.load_state_dict(encoder.state_dict())
    model.model.audio_tower.to(model.get_input_embeddings().weight.dtype)
    model.freeze_audio_tower()

    processor = Qwen2VLAudioProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        feature_extractor=feature_extractor,
        audio_stack_factor=projector_stack_factor,
        audio_length_mode=audio_length_mode,
    )
    return model.eval(), processor


__all__ = ["graft", "build_tiny_qwen2_vl", "tiny_qwen2_vl_config", "train_tokenizer"]
