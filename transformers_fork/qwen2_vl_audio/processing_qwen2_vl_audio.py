"""Processor for the Whisper-grafted Qwen2-VL: text + audio + images + 8-frame video clips.

Call convention as Qwen2-Audio's::

    processor(text=prompts, audio=[16 kHz arrays], videos=[[8 frames]], images=[...],
              return_tensors="pt", padding=True)

Each single `<|audio_pad|>` in a prompt is expanded to its clip's token count, which follows
the clip's real length (`audio_token_count`); clips longer than 30 s are split into 30 s
chunks whose tokens follow each other. Videos go through a pillow-only path (no
torchvision) and enter as ONE clip: 8 frames with temporal patch 2 give grid t = 4.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize
from transformers.processing_utils import ProcessorMixin

from .configuration_qwen2_vl_audio import (
    WHISPER_CHUNK_SECONDS,
    WHISPER_HOP_LENGTH,
    WHISPER_SAMPLE_RATE,
    audio_token_count,
)

MIN_CHUNK_SAMPLES = 400  # Whisper's STFT window (n_fft)

# The one place that names the special tokens (the seeds' graft and collators disagreed on them).
AUDIO_START, AUDIO_PAD, AUDIO_END = "<|audio_start|>", "<|audio_pad|>", "<|audio_end|>"
AUDIO_TOKENS = (AUDIO_START, AUDIO_PAD, AUDIO_END)
IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IM_START, IM_END, END_OF_TEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
QWEN2_VL_SPECIAL_TOKENS = (END_OF_TEXT, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)

# ChatML as Qwen2-VL uses it, with an `audio` content part added.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'audio' %}<|audio_start|><|audio_pad|><|audio_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# mm_token_type_ids: M-RoPE gives 3-D positions to image (1) and video (2) tokens; audio stays text (0).
_TOKEN_TYPE_IMAGE, _TOKEN_TYPE_VIDEO = 1, 2


class Qwen2VLAudioProcessor(ProcessorMixin):
    """Tokenizer + pillow Qwen2-VL image processor + Whisper feature extractor."""

    valid_processor_kwargs = ()

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        feature_extractor=None,
        chat_template: str | None = None,
        audio_stack_factor: int = 4,
        audio_length_mode: str = "trimmed",
    ):
        self.audio_stack_factor = audio_stack_factor
        self.audio_length_mode = audio_length_mode
        super().__init__(image_processor, tokenizer, feature_extractor, chat_template=chat_template or CHAT_TEMPLATE)

    # ---- audio ------------------------------------------------------------------------
    @staticmethod
    def split_chunks(clip: np.ndarray) -> list[np.ndarray]:
        """Split a clip into ≤ 30 s chunks; nothing is cut off."""
        size = WHISPER_CHUNK_SECONDS * WHISPER_SAMPLE_RATE
        chunks = [clip[start : start + size] for start in range(0, len(clip), size)]
        # The STFT needs one window of samples: a shorter tail is completed with silence.
        return [np.pad(c, (0, max(0, MIN_CHUNK_SAMPLES - len(c)))) for c in chunks]

    def audio_token_count(self, num_samples: int) -> int:
        """Tokens a clip of `num_samples` 16 kHz samples becomes (all its chunks together)."""
        size = WHISPER_CHUNK_SECONDS * WHISPER_SAMPLE_RATE
        chunk_lengths = [min(size, num_samples - start) for start in range(0, num_samples, size)]
        if self.audio_length_mode == "padded":
            return len(chunk_lengths) * audio_token_count(size // WHISPER_HOP_LENGTH, self.audio_stack_factor)
        return sum(audio_token_count(self._mel_frames(n), self.audio_stack_factor) for n in chunk_lengths)

    @staticmethod
    def _mel_frames(num_samples: int) -> int:
        # WhisperFeatureExtractor drops the last STFT frame: n // hop frames.
        return max(num_samples, MIN_CHUNK_SAMPLES) // WHISPER_HOP_LENGTH

    def audio_features(self, audio) -> tuple[dict, list[int]]:
        """16 kHz mono clips -> the model's audio inputs (`input_features`, `feature_attention_mask`,
        one row per ≤ 30 s chunk) and each clip's `<|audio_pad|>` count."""
        clips = [np.asarray(a, dtype=np.float32) for a in audio]
        for i, clip in enumerate(clips):
            if clip.ndim != 1:
                raise ValueError(f"audio[{i}] must be 1-D mono at 16 kHz, got shape {clip.shape} (downmix first)")
            if clip.size == 0:
                raise ValueError(f"audio[{i}] is empty")
        chunks = [chunk for clip in clips for chunk in self.split_chunks(clip)]
        if self.audio_length_mode == "padded":
            features = self.feature_extractor(
                chunks, sampling_rate=WHISPER_SAMPLE_RATE, padding="max_length", return_attention_mask=True, return_tensors="pt"
            )
            input_features, mask = features["input_features"], features["attention_mask"]
        else:
            # One chunk at a time: the STFT's edge frames then match the clip processed alone
            # (batched extraction would see the other clips' zero padding instead of reflection).
            per_chunk = [
                self.feature_extractor(
                    c, sampling_rate=WHISPER_SAMPLE_RATE, padding="longest", return_tensors="pt"
                )["input_features"][0]
                for c in chunks
            ]
            longest = max(f.shape[-1] for f in per_chunk)
            input_features = torch.zeros(len(per_chunk), per_chunk[0].shape[0], longest)
            mask = torch.zeros(len(per_chunk), longest, dtype=torch.long)
            for i, f in enumerate(per_chunk):
                input_features[i, :, : f.shape[-1]] = f
                mask[i, : f.shape[-1]] = 1
        counts = [self.audio_token_count(len(clip)) for clip in clips]
        return {"input_features": input_features, "feature_attention_mask": mask}, counts

    # ---- vision -----------------------------------------------------------------------
    def _process_video(self, frames) -> tuple[np.ndarray, list[int]]:
        """One clip of frames -> flat patches (grid_t*grid_h*grid_w, C*tps*ps*ps), pillow only."""
        ip = self.image_processor
        ps, tps, merge = ip.patch_size, ip.temporal_patch_size, ip.merge_size
        images = [f if isinstance(f, Image.Image) else Image.fromarray(np.asarray(f)) for f in frames]
        if not images:
            raise ValueError("a video needs at least one frame")
        width, height = images[0].size
        h, w = smart_resize(height, width, factor=ps * merge, min_pixels=ip.size["shortest_edge"], max_pixels=ip.size["longest_edge"])
        mean, std = np.asarray(ip.image_mean, np.float32)[:, None, None], np.asarray(ip.image_std, np.float32)[:, None, None]
        video = np.stack(
            [(np.asarray(im.convert("RGB").resize((w, h), Image.BICUBIC), np.float32).transpose(2, 0, 1) / 255.0 - mean) / std for im in images]
        )
        if pad := -len(video) % tps:  # repeat the last frame to fill the temporal patch
            video = np.concatenate([video, np.repeat(video[-1:], pad, axis=0)])
        grid_t, grid_h, grid_w = len(video) // tps, h // ps, w // ps
        channels = video.shape[1]
        patches = video.reshape(grid_t, tps, channels, grid_h // merge, merge, ps, grid_w // merge, merge, ps)
        patches = patches.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
        return patches.reshape(grid_t * grid_h * grid_w, channels * tps * ps * ps), [grid_t, grid_h, grid_w]

    # ---- main entry -------------------------------------------------------------------
    def __call__(
        self,
        text: str | list[str] | None = None,
        audio=None,
        images=None,
        videos=None,
        return_tensors: str | None = "pt",
        padding: bool | str = True,
        padding_side: str | None = None,
        audio_lengths: list[int] | None = None,
        **tokenizer_kwargs,
    ) -> BatchFeature:
        """`audio_lengths` (16 kHz samples per clip) instead of `audio`: audio already encoded
        elsewhere (a feature cache); only its placeholders are expanded, no features computed."""
        if text is None:
            raise ValueError("text prompts are required (build them with apply_chat_template)")
        texts = [text] if isinstance(text, str) else list(text)
        data: dict = {}
        merge_area = self.image_processor.merge_size**2

        replacements = {}
        if audio is not None:
            audio = [audio] if isinstance(audio, np.ndarray) and audio.ndim == 1 else audio
            audio_inputs, counts = self.audio_features(audio)
            data.update(audio_inputs)
            replacements[AUDIO_PAD] = counts
        elif audio_lengths is not None:
            replacements[AUDIO_PAD] = [self.audio_token_count(int(n)) for n in audio_lengths]
        if images is not None:
            image_inputs = self.image_processor(images=images, return_tensors="pt")
            data.update(image_inputs)
            replacements[IMAGE_PAD] = (image_inputs["image_grid_thw"].prod(-1) // merge_area).tolist()
        if videos is not None:
            patches, grids = zip(*(self._process_video(v) for v in videos))
            data["pixel_values_videos"] = torch.from_numpy(np.concatenate(patches))
            data["video_grid_thw"] = torch.tensor(grids, dtype=torch.long)
            replacements[VIDEO_PAD] = (data["video_grid_thw"].prod(-1) // merge_area).tolist()

        texts = self._expand_placeholders(texts, replacements)
        encoded = self.tokenizer(texts, padding=padding, padding_side=padding_side, return_tensors=return_tensors, **tokenizer_kwargs)
        data.update(encoded)
        if return_tensors == "pt":
            ids = encoded["input_ids"]
            token_types = torch.zeros_like(ids)
            token_types[ids == self.tokenizer.convert_tokens_to_ids(IMAGE_PAD)] = _TOKEN_TYPE_IMAGE
            token_types[ids == self.tokenizer.convert_tokens_to_ids(VIDEO_PAD)] = _TOKEN_TYPE_VIDEO
            data["mm_token_type_ids"] = token_types
        return BatchFeature(data=data, tensor_type=return_tensors if return_tensors != "pt" else None)

    @staticmethod
    def _expand_placeholders(texts: list[str], replacements: dict[str, list[int]]) -> list[str]:
        """Repeat each placeholder by its input's token count, inputs taken in prompt order."""
        for token, counts in replacements.items():
            found = sum(t.count(token) for t in texts)
            if found != len(counts):
                raise ValueError(f"{found} {token} placeholders in the prompts but {len(counts)} inputs given")
            remaining = iter(counts)
            pieces_per_text = [t.split(token) for t in texts]
            texts = [first + "".join(token * next(remaining) + piece for piece in rest) for first, *rest in pieces_per_text]
        return texts

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self):
        return ["input_ids", "attention_mask", "mm_token_type_ids", "input_features", "feature_attention_mask",
                "pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw"]


__all__ = ["Qwen2VLAudioProcessor", "CHAT_TEMPLATE", "AUDIO_TOKENS", "AUDIO_PAD", "AUDIO_START", "AUDIO_END"]
