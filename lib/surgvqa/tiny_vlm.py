"""The tiny Qwen2-VL of the embedded default: a BPE tokenizer trained on the project's corpus, and a
small stock Qwen2-VL (same architecture, toy sizes) built from a config."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from qwen2_vl_audio.processing_qwen2_vl_audio import (
    AUDIO_TOKENS,
    END_OF_TEXT,
    IM_END,
    IMAGE_PAD,
    QWEN2_VL_SPECIAL_TOKENS,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
)
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

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
