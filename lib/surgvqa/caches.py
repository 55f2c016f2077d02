"""On-disk cache of the frozen Whisper encoder's outputs, one safetensors file per audio.

The tower never trains, so its output for a clip is a pure function of (audio content,
encoder weights, audio-length mode). Caching it means every epoch and every stage runs the
encoder once per file instead of once per step. The key covers all three: a changed file,
a different encoder or the other length mode is a miss, never a stale hit.

An entry carries its key and a checksum of its tensors (safetensors metadata) and is verified on
every read: a truncated, altered or misplaced entry is recomputed (with a warning naming the
file), never served. Temp files of killed writers are removed when a cache opens.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .audio import load_audio


def encoder_fingerprint(tower: torch.nn.Module) -> str:
    """Identity of an encoder: a hash of its config and every weight (not its name or path)."""
    h = hashlib.sha256(json.dumps(tower.config.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(tower.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def content_key(audio: str | Path | np.ndarray) -> str:
    """Hash of an audio file's bytes, or of a waveform's float32 samples."""
    if isinstance(audio, np.ndarray):
        data = np.ascontiguousarray(audio, dtype=np.float32).tobytes()
    else:
        data = Path(audio).read_bytes()
    return hashlib.sha256(data).hexdigest()[:32]


def tensors_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """Hash of names, dtypes, shapes and bytes of every tensor (what an entry's metadata records)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


class DamagedEntry(Exception):
    """A cache file that must not be served (the reason is the message)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def remove_stale_temp_files(folder: Path) -> None:
    """Delete `<key>.<pid>.tmp` files of writers that died before their rename (live DDP writers keep theirs)."""
    for tmp in folder.glob("*.tmp"):
        pid = tmp.suffixes[-2][1:] if len(tmp.suffixes) >= 2 else ""
        if not (pid.isdigit() and _pid_alive(int(pid))):
            tmp.unlink(missing_ok=True)


class FeatureCache:
    """Encoder frames per audio clip: `get(audio)` -> (frames per chunk [(T'_i, d)], num_samples).

    Files live in `root/<encoder fingerprint>-<length mode>/<content hash>.safetensors`.
    `hits` / `misses` count lookups since construction; `recomputed` counts damaged entries
    that were rebuilt (each also a miss).
    """

    def __init__(self, root: str | Path, model, processor):
        self.model = model.model if hasattr(model, "model") and hasattr(model.model, "audio_tower") else model
        self.processor = processor
        self.mode = self.model.config.audio_length_mode
        self.encoder_id = encoder_fingerprint(self.model.audio_tower)
        self.dir = Path(root) / f"{self.encoder_id}-{self.mode}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = self.recomputed = 0
        remove_stale_temp_files(self.dir)

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.safetensors"

    def get(self, audio: str | Path | np.ndarray) -> tuple[list[torch.Tensor], int]:
        key = content_key(audio)
        path = self.path(key)
        if path.is_file():
            try:
                chunks, num_samples = self._read(path, key)
                self.hits += 1
                return chunks, num_samples
            except DamagedEntry as e:
                warnings.warn(f"{path}: damaged feature cache entry ({e}); recomputing it", stacklevel=2)
                self.recomputed += 1
        self.misses += 1
        clip = load_audio(audio) if not isinstance(audio, np.ndarray) else audio
        chunks = self.encode(clip)
        tensors = {f"chunk_{i}": c.contiguous() for i, c in enumerate(chunks)}
        tensors["num_samples"] = torch.tensor(len(clip))
        write_entry(path, tensors, {"key": key, "encoder": self.encoder_id, "mode": self.mode})
        return chunks, len(clip)

    def _read(self, path: Path, key: str) -> tuple[list[torch.Tensor], int]:
        """An entry's tensors, after checking that it is whole, is this key's and matches its checksum."""
        tensors = read_entry(path, {"key": key, "encoder": self.encoder_id, "mode": self.mode})
        n = len(tensors) - 1
        if "num_samples" not in tensors or sorted(tensors) != sorted([f"chunk_{i}" for i in range(n)] + ["num_samples"]):
            raise DamagedEntry(f"unexpected tensors {sorted(tensors)}")
        return [tensors[f"chunk_{i}"] for i in range(n)], int(tensors["num_samples"])

    @torch.no_grad()
    def encode(self, clip: np.ndarray) -> list[torch.Tensor]:
        """The tower's real (unpadded) frames for each ≤ 30 s chunk of one clip."""
        inputs, _ = self.processor.audio_features([clip])
        device = self.model.audio_tower.device
        out = self.model.encode_audio(inputs["input_features"].to(device), inputs["feature_attention_mask"].to(device))
        return [frames[mask].float().cpu() for frames, mask in zip(out.last_hidden_state, out.frame_mask)]

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "recomputed": self.recomputed,
                "files": sum(1 for _ in self.dir.glob("*.safetensors"))}


# The smallest text the processor accepts with one clip (it returns the clip's patches and grid).
VIDEO_PROMPT = "<|vision_start|><|video_pad|><|vision_end|>"


def clip_key(frame_paths, frame_size: int | None) -> str:
    """Hash of a clip's frame bytes, in order, and the size they are resized to."""
    h = hashlib.sha256(f"size={frame_size};".encode())
    for path in frame_paths:
        h.update(Path(path).read_bytes())
    return h.hexdigest()[:32]


class VisionCache:
    """The frozen vision tower's output tokens per clip: `get(clips)` -> [(tokens (n, hidden))], [grid (t, h, w)].

    The tower never trains after stage 0, so its output for a clip is a pure function of (frame
    bytes, frame size, tower weights): files live in `root/<tower fingerprint>/<clip hash>.safetensors`
    and carry their key + checksum like `FeatureCache` entries (verified on read, recomputed with
    a warning when damaged). Entries are also kept in memory: a clip is asked ~20 times (its questions).
    """

    def __init__(self, root: str | Path, model, processor, load_frames, frame_size: int | None = None):
        inner = model
        while not hasattr(inner, "visual") and hasattr(inner, "model"):
            inner = inner.model
        self.visual = inner.visual
        self.processor = processor
        self.load_frames = load_frames  # frame paths -> (T, H, W, 3) uint8
        self.frame_size = frame_size
        self.tower_id = encoder_fingerprint(self.visual)
        self.dir = Path(root) / self.tower_id
        self.dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(self.dir)
        self.memory: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.hits = self.misses = self.recomputed = 0

    def _lookup(self, key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        if key in self.memory:
            self.hits += 1
            return self.memory[key]
        path = self.dir / f"{key}.safetensors"
        if not path.is_file():
            return None
        try:
            tensors = read_entry(path, {"key": key, "tower": self.tower_id})
            entry = (tensors["tokens"], tensors["grid"])
        except DamagedEntry as e:
            warnings.warn(f"{path}: damaged vision cache entry ({e}); recomputing it", stacklevel=3)
            self.recomputed += 1
            return None
        self.hits += 1
        self.memory[key] = entry
        return entry

    def get(self, clips: list[tuple[str, ...]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        keys = [clip_key(c, self.frame_size) for c in clips]
        found = {k: self._lookup(k) for k in dict.fromkeys(keys)}
        missing = [k for k, v in found.items() if v is None]
        if missing:
            first = {k: c for k, c in zip(reversed(keys), reversed(clips))}
            for k, entry in zip(missing, self.encode([first[k] for k in missing])):
                self.misses += 1
                tensors = {"tokens": entry[0], "grid": entry[1]}
                write_entry(self.dir / f"{k}.safetensors", tensors, {"key": k, "tower": self.tower_id})
                self.memory[k] = found[k] = entry
        return [found[k][0] for k in keys], [found[k][1] for k in keys]

    @torch.no_grad()
    def encode(self, clips: list[tuple[str, ...]], batch: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for start in range(0, len(clips), batch):
            videos = [list(self.load_frames(c, self.frame_size)) for c in clips[start : start + batch]]
            processed = self.processor(text=[VIDEO_PROMPT] * len(videos), videos=videos)
            pixels, grids = processed["pixel_values_videos"], processed["video_grid_thw"]
            feats = self.visual(pixels.to(self.visual.dtype), grid_thw=grids)
            feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
            sizes = (grids.prod(-1) // self.visual.spatial_merge_size**2).tolist()
            out += [(f.float().cpu().contiguous(), g.clone()) for f, g in zip(torch.split(feats, sizes), grids)]
        return out

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "recomputed": self.recomputed,
                "files": sum(1 for _ in self.dir.glob("*.safetensors"))}


class TranscriptCache:
    """An ASR system's transcript per audio file: `root/<asr identity>/<content hash>.safetensors`.

    At temperature 0 faster-whisper is deterministic (docs/RECIPE.md), so a transcript is a pure function of (audio bytes, ASR model and settings): notebooks 02
    and 04 and every rerun share one decode per file. Entries hold the text (UTF-8 bytes) and the
    seconds the first decode took, and are verified on read like every other entry here. Timed runs
    (the speed test) do not use it.
    """

    def __init__(self, root: str | Path, asr_id: str):
        self.asr_id = asr_id
        self.dir = Path(root) / asr_id
        self.dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(self.dir)
        self.hits = self.misses = self.recomputed = 0

    def lookup(self, path: str | Path) -> tuple[str, float] | None:
        key = content_key(path)
        entry = self.dir / f"{key}.safetensors"
        if not entry.is_file():
            return None
        try:
            tensors = read_entry(entry, {"key": key, "asr": self.asr_id})
            text = bytes(tensors["text"].tolist()).decode("utf-8")
        except (DamagedEntry, KeyError, UnicodeDecodeError) as e:
            warnings.warn(f"{entry}: damaged transcript cache entry ({e}); decoding the audio again", stacklevel=2)
            self.recomputed += 1
            return None
        self.hits += 1
        return text, float(tensors["seconds"])

    def store(self, path: str | Path, text: str, seconds: float) -> None:
        key = content_key(path)
        self.misses += 1
        tensors = {"text": torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8),
                   "seconds": torch.tensor(float(seconds))}
        write_entry(self.dir / f"{key}.safetensors", tensors, {"key": key, "asr": self.asr_id})

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "recomputed": self.recomputed,
                "files": sum(1 for _ in self.dir.glob("*.safetensors"))}


def write_entry(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Save a cache entry atomically, with its metadata and a checksum of its tensors."""
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # processes of a DDP run may write the same key
    save_file(tensors, tmp, metadata={**metadata, "sha256": tensors_checksum(tensors)})
    tmp.replace(path)


def read_entry(path: Path, expected: dict[str, str]) -> dict[str, torch.Tensor]:
    """A cache entry's tensors, after checking it is whole, carries `expected` metadata and matches its checksum."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as e:  # SafetensorError, OSError, ...: a truncated or overwritten file
        raise DamagedEntry(f"unreadable: {e}") from None
    for name, value in expected.items():
        if meta.get(name) != value:
            raise DamagedEntry(f"metadata {name}={meta.get(name)!r}, expected {value!r}")
    if meta.get("sha256") != tensors_checksum(tensors):
        raise DamagedEntry("checksum mismatch: the stored tensors changed")
    return tensors


def pad_chunks(chunks: list[torch.Tensor]):
    """Chunks of different lengths -> the model's pre-encoded audio input (frames + mask)."""
    from qwen2_vl_audio.modeling_qwen2_vl_audio import AudioEncoderOutput

    longest = max(c.shape[0] for c in chunks)
    frames = torch.zeros(len(chunks), longest, chunks[0].shape[-1])
    mask = torch.zeros(len(chunks), longest, dtype=torch.bool)
    for i, c in enumerate(chunks):
        frames[i, : c.shape[0]] = c
        mask[i, : c.shape[0]] = True
    return AudioEncoderOutput(last_hidden_state=frames, frame_mask=mask)
