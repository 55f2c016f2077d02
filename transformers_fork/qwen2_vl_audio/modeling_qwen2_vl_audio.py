"""Qwen2-VL that hears: a frozen Whisper encoder + a trainable projector, grafted by subclassing.

Only what differs from stock Qwen2-VL is written here:
- `Qwen2VLAudioEncoder` encodes clips of their real length (Whisper itself insists on 30 s);
- `Qwen2VLAudioProjector` stacks encoder frames and maps them into the LLM embedding space;
- `Qwen2VLAudioModel.forward` scatters the projected audio into `<|audio_pad|>` positions and
  hands `input_ids` + `inputs_embeds` to the stock forward, so images, videos and M-RoPE are
  untouched (audio placeholders are ordinary text positions for M-RoPE);
- `Qwen2VLAudioForConditionalGeneration` names the audio inputs in `forward` (generate()
  validates kwargs against that signature) and keeps the tower frozen after loading.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import ModelOutput
from transformers.models.qwen2_vl.modeling_qwen2_vl import (
    Qwen2VLRMSNorm,
    Qwen2VLForConditionalGeneration,
    Qwen2VLModel,
    Qwen2VLPreTrainedModel,
)
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from .configuration_qwen2_vl_audio import Qwen2VLAudioConfig, stacked_token_count


@dataclass
class AudioEncoderOutput(ModelOutput):
    """Frozen-tower output of audio chunks: frames (C, T', d) and which of them are real (C, T').

    Also the form of pre-encoded audio (a feature cache) passed as `mm_encoder_outputs["audio"]`.
    """

    last_hidden_state: torch.Tensor | None = None
    frame_mask: torch.Tensor | None = None


class Qwen2VLAudioEncoder(WhisperEncoder):
    """Whisper's encoder, also for inputs shorter than 30 s.

    Same operations as `WhisperEncoder.forward`, but with positions `[:T']` and a padding mask,
    so a clip is encoded at its real length and a padded batch equals each clip alone.
    Padded frames are zeroed after each conv so they cannot leak into the last real frame.
    """

    def forward(self, input_features: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> BaseModelOutput:
        max_frames = self.max_source_positions * self.conv1.stride[0] * self.conv2.stride[0]
        if input_features.shape[-1] > max_frames:
            raise ValueError(
                f"audio chunk has {input_features.shape[-1]} mel frames; Whisper takes at most {max_frames} (30 s). "
                "The processor splits longer audio into 30 s chunks."
            )
        mask = None if attention_mask is None else attention_mask.to(input_features.dtype)[:, None, :]
        hidden = input_features if mask is None else input_features * mask
        hidden = nn.functional.gelu(self.conv1(hidden))
        if mask is not None:
            hidden = hidden * mask
        hidden = nn.functional.gelu(self.conv2(hidden)).permute(0, 2, 1)
        hidden = hidden + self.embed_positions.weight[: hidden.shape[1]]
        hidden = nn.functional.dropout(hidden, p=self.dropout, training=self.training)

        frame_mask = None if attention_mask is None else attention_mask[:, ::2].bool()
        attn_mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=frame_mask)
        for layer in self.layers:
            hidden = layer(hidden, attn_mask, **kwargs)
        return BaseModelOutput(last_hidden_state=self.layer_norm(hidden))


class Qwen2VLAudioProjector(nn.Module):
    """Stack `k` consecutive encoder frames, then map them to the LLM width.

    linear: one Linear without bias (the seeds' 1280 -> 3584 layer when k = 1).
    mlp:    RMSNorm -> Linear -> SwiGLU -> Linear, the stacked projector design used by Ultravox.
    """

    def __init__(self, config: Qwen2VLAudioConfig):
        super().__init__()
        self.stack_factor = config.projector_stack_factor
        in_dim = config.audio_config.d_model * self.stack_factor
        out_dim = config.text_config.hidden_size
        self.projector_type = config.projector_type
        if self.projector_type == "linear":
            self.linear = nn.Linear(in_dim, out_dim, bias=False)
        else:
            inner = config.projector_hidden_size
            self.norm = Qwen2VLRMSNorm(in_dim, eps=config.text_config.rms_norm_eps)
            self.gate_up = nn.Linear(in_dim, 2 * inner, bias=False)
            self.down = nn.Linear(inner, out_dim, bias=False)

    def stack(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, ceil(T/k), k*D); zero frames pad the last group."""
        batch, length, dim = frames.shape
        pad = -length % self.stack_factor
        frames = nn.functional.pad(frames, (0, 0, 0, pad))
        return frames.reshape(batch, (length + pad) // self.stack_factor, dim * self.stack_factor)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        stacked = self.stack(frames)
        if self.projector_type == "linear":
            return self.linear(stacked)
        gate, up = self.gate_up(self.norm(stacked)).chunk(2, dim=-1)
        return self.down(nn.functional.silu(gate) * up)


class Qwen2VLAudioModel(Qwen2VLModel):
    config_class = Qwen2VLAudioConfig

    def __init__(self, config: Qwen2VLAudioConfig):
        super().__init__(config)
        self.audio_tower = Qwen2VLAudioEncoder._from_config(config.audio_config)
        self.audio_projector = Qwen2VLAudioProjector(config)
        self.audio_tower.requires_grad_(False)
        self.post_init()  # initialises only the modules added above

    def encode_audio(
        self, input_features: torch.Tensor, feature_attention_mask: torch.Tensor | None = None
    ) -> AudioEncoderOutput:
        """Run the frozen tower on audio chunks (C, n_mels, T): frames (C, T', d) and their mask (C, T')."""
        input_features = input_features.to(self.audio_tower.dtype)
        if self.config.audio_length_mode == "padded" or feature_attention_mask is None:
            # The seeds' setting: every chunk is a full 30 s window, all 1500 frames become tokens.
            frames = self.audio_tower(input_features).last_hidden_state
            frame_mask = torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
        else:
            frames = self.audio_tower(input_features, attention_mask=feature_attention_mask).last_hidden_state
            frame_mask = feature_attention_mask[:, ::2].bool()
        return AudioEncoderOutput(last_hidden_state=frames, frame_mask=frame_mask)

    def project_audio(self, encoded: AudioEncoderOutput) -> torch.Tensor:
        """Projected audio tokens of every chunk, chunk after chunk: (N, hidden)."""
        weight = next(self.audio_projector.parameters())
        frames = encoded.last_hidden_state.to(weight.device, weight.dtype)  # cached frames may come from the CPU
        frame_mask = encoded.frame_mask.to(weight.device)
        # Zero the padded frames: a chunk's last stacked group then sees the same zeros as it would alone.
        frames = frames * frame_mask[..., None].to(frames.dtype)
        tokens = self.audio_projector(frames)
        token_counts = stacked_token_count(frame_mask.sum(-1), self.config.projector_stack_factor)
        keep = torch.arange(tokens.shape[1], device=tokens.device)[None, :] < token_counts[:, None]
        return tokens[keep]

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        feature_attention_mask: torch.Tensor | None = None,
        mm_encoder_outputs: dict | None = None,
        **kwargs,
    ):
        # Pre-encoded audio (a feature cache) arrives as mm_encoder_outputs["audio"]; generate()
        # drops mm_encoder_outputs and input_features after prefill, but keeps the mask, so
        # audio is only scattered when one of them is given.
        mm_encoder_outputs = dict(mm_encoder_outputs or {})
        encoded_audio = mm_encoder_outputs.pop("audio", None)
        if input_features is not None and encoded_audio is not None:
            raise ValueError("give either input_features or mm_encoder_outputs['audio'], not both")
        if input_features is not None or encoded_audio is not None:
            if input_ids is None:
                raise ValueError("audio needs `input_ids` to locate its <|audio_pad|> placeholders")
            if inputs_embeds is None:
                inputs_embeds = self.get_input_embeddings()(input_ids)
            if encoded_audio is None:
                encoded_audio = self.encode_audio(input_features, feature_attention_mask)
            audio_embeds = self.project_audio(encoded_audio)
            audio_mask = input_ids == self.config.audio_token_id
            n_placeholders = int(audio_mask.sum())
            if n_placeholders != audio_embeds.shape[0]:
                raise ValueError(
                    f"audio features and <|audio_pad|> tokens do not match: {audio_embeds.shape[0]} audio tokens "
                    f"for {n_placeholders} placeholders (expand placeholders with the processor)"
                )
            audio_embeds = audio_embeds.to(inputs_embeds.device, inputs_embeds.dtype)
            inputs_embeds = inputs_embeds.masked_scatter(audio_mask[..., None], audio_embeds)
        return super().forward(input_ids=input_ids, inputs_embeds=inputs_embeds,
                               mm_encoder_outputs=mm_encoder_outputs or None, **kwargs)


class Qwen2VLAudioForConditionalGeneration(Qwen2VLForConditionalGeneration):
    config_class = Qwen2VLAudioConfig

    def __init__(self, config: Qwen2VLAudioConfig):
        # Skip Qwen2VLForConditionalGeneration.__init__ so the stock Qwen2VLModel is not built and thrown away.
        Qwen2VLPreTrainedModel.__init__(self, config)
        self.model = Qwen2VLAudioModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        model.freeze_audio_tower()  # loading re-creates parameters with requires_grad=True
        return loaded

    def freeze_audio_tower(self) -> None:
        self.model.audio_tower.requires_grad_(False)

    @property
    def audio_tower(self) -> Qwen2VLAudioEncoder:
        return self.model.audio_tower

    @property
    def audio_projector(self) -> Qwen2VLAudioProjector:
        return self.model.audio_projector

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        mm_token_type_ids: torch.IntTensor | None = None,
        input_features: torch.Tensor | None = None,
        feature_attention_mask: torch.Tensor | None = None,
        mm_encoder_outputs: dict | None = None,
        **kwargs,
    ):
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            pixel_values=pixel_values,
            pixel_values_videos=pixel_values_videos,
            image_grid_thw=image_grid_thw,
            video_grid_thw=video_grid_thw,
            mm_token_type_ids=mm_token_type_ids,
            input_features=input_features,
            feature_attention_mask=feature_attention_mask,
            mm_encoder_outputs=mm_encoder_outputs,
            **kwargs,
        )


__all__ = [
    "AudioEncoderOutput",
    "Qwen2VLAudioEncoder",
    "Qwen2VLAudioProjector",
    "Qwen2VLAudioModel",
    "Qwen2VLAudioForConditionalGeneration",
]
