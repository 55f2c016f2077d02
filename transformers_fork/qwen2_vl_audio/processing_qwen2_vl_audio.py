"""Processor for the Whisper-grafted Qwen2-VL: text + audio + images + 8-frame video clips.

Call convention as Qwen2-Audio's::

    processor(text=prompts, audio=[16 kHz arrays], videos=[[8 frames]], images=[...],
              return_tensors="pt", padding=True)

A `Qwen2VLProcessor` with audio added: each single `<|audio_pad|>` in a prompt is expanded to
its clip's token count, which follows the clip's real length (`audio_token_count`); clips
longer than 30 s are split into 30 s chunks whose tokens follow each other. Text, images and
token types are Qwen2-VL's own; videos use the pillow image processor (no torchvision) and
enter as ONE clip: 8 frames with temporal patch 2 give grid t = 4.
"""
from __future__ import annotations

import numpy as np
import torch
from transformers import BatchFeature, Qwen2VLProcessor

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

# ChatML as Qwen2-VL uses it, with an `audio` content part added. Transformers ships no Qwen2-VL
# template (it lives in the hub checkpoint, which has no audio part), so the graft brings its own.
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

class Qwen2VLAudioProcessor(Qwen2VLProcessor):
    """Qwen2-VL's processor (tokenizer + pillow image processor) plus a Whisper feature extractor."""

    text_kwargs = {"padding": True, "return_tensors": "pt"}  # call defaults: padded PyTorch batches

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        feature_extractor=None,
        chat_template: str | None = None,
        audio_stack_factor: int = 4,
        audio_length_mode: str = "trimmed",
        **kwargs,
    ):
        # Saved with the processor so it loads alone; `from_config` takes both from the model's config.
        self.audio_stack_factor = audio_stack_factor
        self.audio_length_mode = audio_length_mode
        # Qwen2VLProcessor hands its sub-processors on by position and the mixin names them after
        # this signature, so the third slot holds the feature extractor (no video processor).
        super().__init__(image_processor, tokenizer, feature_extractor, chat_template=chat_template or CHAT_TEMPLATE, **kwargs)

    @classmethod
    def from_config(cls, config, image_processor, tokenizer, feature_extractor, **kwargs) -> "Qwen2VLAudioProcessor":
        """The processor of a graft with this `Qwen2VLAudioConfig`: its audio settings are the model's."""
        return cls(image_processor, tokenizer, feature_extractor, audio_stack_factor=config.projector_stack_factor,
                   audio_length_mode=config.audio_length_mode, **kwargs)

    @property
    def video_processor(self):
        # Qwen2-VL's video processor needs torchvision: the pillow image processor patchifies the
        # frames and `_process_videos` lays them along the temporal axis.
        return self.image_processor

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

    @staticmethod
    def validate_clip(clip, name: str = "audio") -> np.ndarray:
        """One clip as float32, checked as the project's `load_audio` checks files: 1-D, not empty,
        finite; integer PCM is rescaled to [-1, 1) (int16 by 32768), other dtypes are refused."""
        clip = np.asarray(clip)
        if clip.dtype.kind in "iu":
            bits = np.iinfo(clip.dtype).bits
            offset = 2.0 ** (bits - 1) if clip.dtype.kind == "u" else 0.0  # unsigned PCM is centred on its midpoint
            clip = ((clip.astype(np.float64) - offset) / 2.0 ** (bits - 1)).astype(np.float32)
        elif clip.dtype.kind == "f":
            clip = clip.astype(np.float32)
        else:
            raise ValueError(f"{name} must hold float or integer PCM samples, got dtype {clip.dtype}")
        if clip.ndim != 1:
            raise ValueError(f"{name} must be 1-D mono at 16 kHz, got shape {clip.shape} (downmix first)")
        if clip.size == 0:
            raise ValueError(f"{name} is empty (0 samples)")
        if not np.isfinite(clip).all():
            bad = int((~np.isfinite(clip)).sum())
            raise ValueError(f"{name} contains {bad} NaN or infinite samples")
        return clip

    def audio_features(self, audio, sampling_rate: int | None = None) -> tuple[dict, list[int]]:
        """16 kHz mono clips -> the model's audio inputs (`input_features`, `feature_attention_mask`,
        one row per ≤ 30 s chunk) and each clip's `<|audio_pad|>` count. Another `sampling_rate` is
        an error (resample first): token counts and features assume 16 kHz."""
        if sampling_rate is not None and sampling_rate != WHISPER_SAMPLE_RATE:
            raise ValueError(f"sampling_rate={sampling_rate}: audio must be {WHISPER_SAMPLE_RATE} Hz (resample it first)")
        clips = [self.validate_clip(a, f"audio[{i}]") for i, a in enumerate(audio)]
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
    def _process_videos(self, videos, **kwargs) -> tuple[dict, list[str]]:
        """Each video (a list of frames) enters as ONE clip: `temporal_patch_size` consecutive frames per patch."""
        ip = self.image_processor
        tps, ps = ip.temporal_patch_size, ip.patch_size
        patches, grids = [], []
        for frames in videos:
            frames = list(frames)
            if not frames:
                raise ValueError("a video needs at least one frame")
            frames += frames[-1:] * (-len(frames) % tps)  # repeat the last frame to fill the temporal patch
            # The image processor patchifies each frame alone, the frame repeated along the temporal axis.
            per_frame = ip(frames, **kwargs)
            frame_grids = np.asarray(per_frame["image_grid_thw"])
            if (frame_grids != frame_grids[0]).any():
                raise ValueError("the frames of a video must share one size")
            _, grid_h, grid_w = frame_grids[0].tolist()
            grid_t = len(frames) // tps
            # (t, frame in patch, position, channel, repeat, pixel): keep one repeat, move the frames into its place.
            pixels = np.asarray(per_frame["pixel_values"]).reshape(grid_t, tps, grid_h * grid_w, -1, tps, ps * ps)[:, :, :, :, 0]
            patches.append(pixels.transpose(0, 2, 3, 1, 4).reshape(grid_t * grid_h * grid_w, -1))
            grids.append([grid_t, grid_h, grid_w])
        video_inputs = {"pixel_values_videos": np.concatenate(patches), "video_grid_thw": np.array(grids, dtype=np.int64)}
        return video_inputs, [self.replace_video_token(video_inputs, i) for i in range(len(videos))]

    # ---- main entry -------------------------------------------------------------------
    def __call__(self, images=None, text=None, videos=None, audio=None, audio_lengths: list[int] | None = None,
                 sampling_rate: int | None = None, video_grid_thw=None, **kwargs) -> BatchFeature:
        """Qwen2-VL's processing of text, images and videos, with the audio placeholders expanded first.

        Audio is handled here rather than through the mixin's audio hooks: those would tag audio
        tokens as a modality of their own (M-RoPE must see them as text) and refuse placeholders
        without waveforms, which `audio_lengths` needs: 16 kHz samples per clip instead of `audio`,
        for audio already encoded elsewhere (a feature cache); only its placeholders are expanded.
        `sampling_rate`, when given, must be 16000: it is checked, never silently ignored.
        `video_grid_thw`, instead of `videos`, does the same for clips encoded elsewhere (a vision
        cache): each video placeholder is expanded from its clip's (t, h, w) patch grid.
        """
        if text is None:
            raise ValueError("text prompts are required (build them with apply_chat_template)")
        texts = [text] if isinstance(text, str) else list(text)
        audio_inputs, counts = {}, None
        if sampling_rate is not None and sampling_rate != WHISPER_SAMPLE_RATE:
            raise ValueError(f"sampling_rate={sampling_rate}: audio must be {WHISPER_SAMPLE_RATE} Hz (resample it first)")
        if audio is not None:
            audio = [audio] if isinstance(audio, np.ndarray) and audio.ndim == 1 else audio
            audio_inputs, counts = self.audio_features(audio)
        elif audio_lengths is not None:
            counts = [self.audio_token_count(int(n)) for n in audio_lengths]
        if counts is not None:
            texts = self._expand_placeholders(texts, AUDIO_PAD, counts)
        if video_grid_thw is not None:
            if videos is not None:
                raise ValueError("give either videos or video_grid_thw (pre-encoded clips), not both")
            merge = self.video_processor.merge_size ** 2
            texts = self._expand_placeholders(texts, VIDEO_PAD, [int(np.prod(np.asarray(g))) // merge for g in video_grid_thw])
        self._pre_encoded_videos = video_grid_thw is not None
        try:
            inputs = super().__call__(images=images, text=texts, videos=videos, **kwargs)
        finally:
            self._pre_encoded_videos = False
        inputs.update(audio_inputs)
        if video_grid_thw is not None:
            inputs["video_grid_thw"] = torch.as_tensor(np.asarray(video_grid_thw, dtype=np.int64))
        return inputs

    def validate_inputs(self, images=None, text=None, videos=None, audio=None, **kwargs):
        # Placeholders already expanded from pre-encoded clips (`video_grid_thw`) have no `videos`
        # to be counted against; the stock check would refuse them.
        if getattr(self, "_pre_encoded_videos", False):
            text = [t.replace(VIDEO_PAD, "") for t in text]
        return super().validate_inputs(images=images, text=text, videos=videos, audio=audio, **kwargs)

    @staticmethod
    def _expand_placeholders(texts: list[str], pad: str, counts: list[int]) -> list[str]:
        """Repeat each `pad` by its input's token count, inputs taken in prompt order."""
        found = sum(t.count(pad) for t in texts)
        if found != len(counts):
            raise ValueError(f"{found} {pad} placeholders in the prompts but {len(counts)} inputs given")
        remaining = iter(counts)
        pieces_per_text = [t.split(pad) for t in texts]
        return [first + "".join(pad * next(remaining) + piece for piece in rest) for first, *rest in pieces_per_text]

    @property
    def model_input_names(self):
        # Qwen2-VL's, plus the inputs added here: the audio mask and the video clips.
        return super().model_input_names + ["feature_attention_mask", "pixel_values_videos", "video_grid_thw"]


__all__ = ["Qwen2VLAudioProcessor", "CHAT_TEMPLATE", "AUDIO_TOKENS", "AUDIO_PAD", "AUDIO_START", "AUDIO_END"]
