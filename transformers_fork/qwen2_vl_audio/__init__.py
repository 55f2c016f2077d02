"""qwen2_vl_audio: Qwen2-VL with a grafted, frozen Whisper encoder (an overlay on stock transformers).

Importing the package registers the classes with the Auto* factories, so a saved graft loads
with `AutoModelForImageTextToText.from_pretrained(dir)` / `AutoProcessor.from_pretrained(dir)`.
"""
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor
from transformers.conversion_mapping import WeightRenaming, register_checkpoint_conversion_mapping

from .configuration_qwen2_vl_audio import Qwen2VLAudioConfig, audio_token_count, encoder_frames
from .grafting import graft
from .modeling_qwen2_vl_audio import (
    Qwen2VLAudioEncoder,
    Qwen2VLAudioForConditionalGeneration,
    Qwen2VLAudioModel,
    Qwen2VLAudioProjector,
)
from .processing_qwen2_vl_audio import AUDIO_END, AUDIO_PAD, AUDIO_START, CHAT_TEMPLATE, Qwen2VLAudioProcessor

AutoConfig.register(Qwen2VLAudioConfig.model_type, Qwen2VLAudioConfig, exist_ok=True)
AutoModel.register(Qwen2VLAudioConfig, Qwen2VLAudioModel, exist_ok=True)
AutoModelForImageTextToText.register(Qwen2VLAudioConfig, Qwen2VLAudioForConditionalGeneration, exist_ok=True)
AutoProcessor.register(Qwen2VLAudioConfig, Qwen2VLAudioProcessor, exist_ok=True)

# Hub Qwen2-VL checkpoints use the legacy names `model.layers.*` / `visual.*`. Transformers only
# renames them for its own classes, so without this a subclass silently keeps a random LM.
register_checkpoint_conversion_mapping(
    "Qwen2VLAudioForConditionalGeneration",
    [
        WeightRenaming(source_patterns=r"^visual", target_patterns="model.visual"),
        WeightRenaming(
            source_patterns=r"^model(?!\.(language_model|visual|audio_tower|audio_projector))",
            target_patterns="model.language_model",
        ),
    ],
    overwrite=True,
)

__all__ = [
    "AUDIO_END",
    "AUDIO_PAD",
    "AUDIO_START",
    "CHAT_TEMPLATE",
    "Qwen2VLAudioConfig",
    "Qwen2VLAudioEncoder",
    "Qwen2VLAudioForConditionalGeneration",
    "Qwen2VLAudioModel",
    "Qwen2VLAudioProcessor",
    "Qwen2VLAudioProjector",
    "audio_token_count",
    "encoder_frames",
    "graft",
]
