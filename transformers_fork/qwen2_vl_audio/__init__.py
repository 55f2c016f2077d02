"""qwen2_vl_audio: Qwen2-VL with a grafted, frozen Whisper encoder (an overlay on stock transformers).

Importing the package registers the classes with the Auto* factories, so a saved graft loads
with `AutoModelForImageTextToText.from_pretrained(dir)` / `AutoProcessor.from_pretrained(dir)`.
A key another package already holds is left to it (with a warning), never overwritten.
"""
import warnings

from transformers.conversion_mapping import (
    WeightRenaming,
    get_checkpoint_conversion_mapping,
    register_checkpoint_conversion_mapping,
)
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING, MODEL_MAPPING
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

from .configuration_qwen2_vl_audio import Qwen2VLAudioConfig, audio_token_count, encoder_frames
from .grafting import graft
from .modeling_qwen2_vl_audio import (
    Qwen2VLAudioEncoder,
    Qwen2VLAudioForConditionalGeneration,
    Qwen2VLAudioModel,
    Qwen2VLAudioProjector,
)
from .processing_qwen2_vl_audio import AUDIO_END, AUDIO_PAD, AUDIO_START, CHAT_TEMPLATE, Qwen2VLAudioProcessor

# Hub Qwen2-VL checkpoints use the legacy names `model.layers.*` / `visual.*`. Transformers only
# renames them for its own classes, so without this a subclass silently keeps a random LM.
CHECKPOINT_RENAMING = [
    WeightRenaming(source_patterns=r"^visual", target_patterns="model.visual"),
    WeightRenaming(
        source_patterns=r"^model(?!\.(language_model|visual|audio_tower|audio_projector))",
        target_patterns="model.language_model",
    ),
]


def _is_ours(holder, ours) -> bool:
    # The same class, or this package's class from an earlier import of it (e.g. a reload).
    return holder is ours or (holder.__module__, holder.__qualname__) == (ours.__module__, ours.__qualname__)


def _renamings(mapping) -> list:
    return [(type(t).__name__, t.source_patterns, t.target_patterns) for t in mapping]


def _leave(registry: str, key, holder) -> None:
    warnings.warn(
        f"qwen2_vl_audio: {registry}[{getattr(key, '__name__', key)!r}] already belongs to {holder!r}; "
        "left as it is, so that lookup will not find this package's class",
        stacklevel=3,
    )


def _register() -> None:
    """Claim each key that is free or already ours; leave one another package holds."""
    for registry, mapping, key, ours in (
        ("AutoConfig", CONFIG_MAPPING, Qwen2VLAudioConfig.model_type, Qwen2VLAudioConfig),
        ("AutoModel", MODEL_MAPPING, Qwen2VLAudioConfig, Qwen2VLAudioModel),
        ("AutoModelForImageTextToText", MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING, Qwen2VLAudioConfig,
         Qwen2VLAudioForConditionalGeneration),
        ("AutoProcessor", PROCESSOR_MAPPING, Qwen2VLAudioConfig, Qwen2VLAudioProcessor),
    ):
        holder = mapping[key] if key in mapping else None
        if holder is None or _is_ours(holder, ours):
            mapping.register(key, ours, exist_ok=True)
        else:
            _leave(registry, key, holder)

    key = Qwen2VLAudioForConditionalGeneration.__name__
    holder = get_checkpoint_conversion_mapping(key)
    if holder is None or _renamings(holder) == _renamings(CHECKPOINT_RENAMING):
        register_checkpoint_conversion_mapping(key, CHECKPOINT_RENAMING, overwrite=True)
    else:
        _leave("checkpoint conversion mapping", key, holder)


_register()

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
