"""Builder: graft a frozen Whisper encoder onto a Qwen2-VL."""
from __future__ import annotations

import os
from typing import Any

from transformers import AutoTokenizer, Qwen2VLConfig, Qwen2VLForConditionalGeneration, WhisperFeatureExtractor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.whisper.modeling_whisper import WhisperEncoder, WhisperForConditionalGeneration, WhisperModel

from .configuration_qwen2_vl_audio import Qwen2VLAudioConfig
from .modeling_qwen2_vl_audio import Qwen2VLAudioForConditionalGeneration
from .processing_qwen2_vl_audio import AUDIO_END, AUDIO_PAD, AUDIO_START, AUDIO_TOKENS, Qwen2VLAudioProcessor


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

    processor = Qwen2VLAudioProcessor.from_config(model.config, image_processor, tokenizer, feature_extractor)
    return model.eval(), processor


__all__ = ["graft"]
