"""Configuration of the Whisper-grafted Qwen2-VL: a Qwen2-VL config plus audio settings."""
from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig, WhisperConfig
from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLConfig

PROJECTOR_TYPES = ("linear", "mlp")
AUDIO_LENGTH_MODES = ("trimmed", "padded")
# Whisper's fixed input window: 30 s of 16 kHz audio = 3000 log-mel frames = 1500 encoder frames.
WHISPER_CHUNK_SECONDS = 30
WHISPER_SAMPLE_RATE = 16_000
WHISPER_HOP_LENGTH = 160


def encoder_frames(num_mel_frames: int) -> int:
    """Whisper encoder output length for `num_mel_frames` input frames (conv2 has stride 2, padding 1)."""
    return (num_mel_frames - 1) // 2 + 1


def stacked_token_count(num_encoder_frames, stack_factor: int):
    """Tokens `num_encoder_frames` encoder frames become, `stack_factor` frames per token (ints or tensors)."""
    return (num_encoder_frames + stack_factor - 1) // stack_factor


def audio_token_count(num_mel_frames: int, stack_factor: int) -> int:
    """Number of `<|audio_pad|>` tokens one (≤ 30 s) chunk of `num_mel_frames` frames becomes.

    The single source of this formula: the processor expands placeholders with it and the
    model keeps that many projected tokens per chunk (`stacked_token_count` of its frames).
    """
    return stacked_token_count(encoder_frames(num_mel_frames), stack_factor)


@strict
class Qwen2VLAudioConfig(Qwen2VLConfig):
    r"""A `Qwen2VLConfig` with a Whisper encoder (`audio_config`) and an audio projector.

    audio_token_id: id of `<|audio_pad|>`; each is replaced by one projected audio frame.
    audio_start_token_id / audio_end_token_id: ids of `<|audio_start|>` / `<|audio_end|>`.
    projector_type: `linear` (the seeds' single Linear) or `mlp` (RMSNorm → Linear → SwiGLU → Linear).
    projector_stack_factor: consecutive encoder frames concatenated into one audio token
        (1 = the seeds' 1500 tokens per 30 s; 4 = 12.5 tokens per second).
    projector_hidden_size: inner width of the `mlp` projector (default: the LLM hidden size).
    audio_length_mode: `trimmed` encodes only the real clip length (masked attention);
        `padded` pads every chunk to Whisper's native 30 s, as the seeds did.
    """

    model_type = "qwen2_vl_audio"
    sub_configs_defaults = {**Qwen2VLConfig.sub_configs_defaults, "audio_config": WhisperConfig}

    audio_config: dict | PreTrainedConfig | None = None
    audio_token_id: int | None = None
    audio_start_token_id: int | None = None
    audio_end_token_id: int | None = None
    projector_type: str = "mlp"
    projector_stack_factor: int = 4
    projector_hidden_size: int | None = None
    audio_length_mode: str = "trimmed"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.projector_type not in PROJECTOR_TYPES:
            raise ValueError(f"projector_type must be one of {PROJECTOR_TYPES}, got {self.projector_type!r}")
        if self.audio_length_mode not in AUDIO_LENGTH_MODES:
            raise ValueError(f"audio_length_mode must be one of {AUDIO_LENGTH_MODES}, got {self.audio_length_mode!r}")
        if self.projector_stack_factor < 1:
            raise ValueError(f"projector_stack_factor must be >= 1, got {self.projector_stack_factor}")
        if self.projector_hidden_size is None:
            self.projector_hidden_size = self.text_config.hidden_size


__all__ = ["Qwen2VLAudioConfig", "audio_token_count", "encoder_frames", "stacked_token_count"]
