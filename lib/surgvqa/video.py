"""A clip as the model sees it (T frames, (T, H, W, 3) uint8) from a video file, a folder of images or a list of them.

Video files (mp4, avi, mov, mkv, webm) are decoded with PyAV, which ships its own FFmpeg libraries (no
system ffmpeg). T frames are sampled evenly over the whole video, or over `span` seconds around `at`.
Every problem raises `VideoError` naming the file or folder and the reason.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class VideoError(ValueError):
    """Frames that cannot be used; the message names the file or folder and the reason."""


def evenly(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n) (first and last included)."""
    return [int(round(i)) for i in np.linspace(0, n - 1, k)]


def _frame_times(path: Path) -> list[float]:
    """Presentation time (s) of every frame, from the packets alone (no decoding)."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoError(f"{path}: no video stream")
        stream = container.streams.video[0]
        base = float(stream.time_base) if stream.time_base else 0.0
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        times = []
        for i, packet in enumerate(p for p in container.demux(stream) if p.size):
            times.append(packet.pts * base if packet.pts is not None and base else i / rate)
    return sorted(times)


def sample_indices(times: list[float], num_frames: int, at: float | None = None, span: float = 2.0) -> list[int]:
    """Which frames to keep: evenly over the video, or over `span` seconds centred on `at` (widened to
    the `num_frames` frames nearest `at` when the window holds fewer)."""
    n = len(times)
    if at is None:
        return evenly(n, num_frames)
    if not times[0] - span <= at <= times[-1] + span:
        raise ValueError(f"at={at:g} s is outside the video (0..{times[-1]:.2f} s)")
    window = [i for i, t in enumerate(times) if abs(t - at) <= span / 2]
    if len(window) < num_frames:
        nearest = sorted(range(n), key=lambda i: (abs(times[i] - at), i))[:num_frames]
        window = sorted(nearest)
    return [window[i] for i in evenly(len(window), num_frames)]


def read_video(path: str | Path, num_frames: int = 8, at: float | None = None, span: float = 2.0,
               size: int | None = None) -> np.ndarray:
    """`num_frames` RGB frames of a video file as (T, H, W, 3) uint8 (square `size` x `size` if given)."""
    import av

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: video file not found")
    try:
        times = _frame_times(path)
        if len(times) < num_frames:
            raise VideoError(f"{path}: the video has {len(times)} frame(s); the model needs at least {num_frames}")
        try:
            keep = sample_indices(times, num_frames, at, span)
        except ValueError as e:
            raise VideoError(f"{path}: {e}") from None
        wanted = {}
        for i in keep:
            wanted[i] = wanted.get(i, 0) + 1  # a short window may repeat a frame
        frames = []
        with av.open(str(path)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i in wanted:
                    frames += [_to_array(frame.to_image(), size)] * wanted[i]
                if i >= keep[-1]:
                    break
    except VideoError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:  # PyAV's errors for files that are not (whole) videos
        raise VideoError(f"{path}: cannot decode the video ({e})") from None
    if len(frames) < num_frames:
        raise VideoError(f"{path}: only {len(frames)} of the video's frames could be decoded; the model needs {num_frames}")
    return np.stack(frames)


def _to_array(image, size: int | None) -> np.ndarray:
    from PIL import Image

    image = image.convert("RGB")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def image_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise VideoError(f"{folder}: folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise VideoError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files


def read_images(paths: Iterable[str | Path], num_frames: int = 8, size: int | None = None) -> np.ndarray:
    """A clip from image files in order: all of them when there are `num_frames`, else sampled evenly."""
    from PIL import Image, UnidentifiedImageError

    paths = [Path(p) for p in paths]
    if len(paths) < num_frames:
        where = paths[0].parent if paths else "the list"
        raise VideoError(f"{where}: {len(paths)} image(s) given; the model needs at least {num_frames} frames")
    frames = []
    for p in (paths[i] for i in evenly(len(paths), num_frames)):
        try:
            with Image.open(p) as im:
                frames.append(_to_array(im, size))
        except FileNotFoundError:
            raise VideoError(f"{p}: image file not found") from None
        except (UnidentifiedImageError, OSError) as e:
            raise VideoError(f"{p}: not a readable image ({e})") from None
    return np.stack(frames)


def read_clip(frames, num_frames: int = 8, at: float | None = None, span: float = 2.0, size: int | None = None) -> np.ndarray:
    """A video file, a folder of images, or a list of image paths -> (T, H, W, 3) uint8."""
    if isinstance(frames, (str, Path)):
        path = Path(frames)
        if path.is_dir():
            return read_images(image_files(path), num_frames, size)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise VideoError(f"{path}: one image is not a clip; give a folder or list of {num_frames}+ images, or a video")
        return read_video(path, num_frames, at, span, size)
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) != num_frames:
            raise VideoError(f"<array>: expected ({num_frames}, H, W, 3) frames, got shape {frames.shape}")
        return np.stack([_to_array(_image(f), size) for f in frames])
    return read_images(list(frames), num_frames, size)


def _image(frame: np.ndarray):
    from PIL import Image

    return Image.fromarray(np.asarray(frame, dtype=np.uint8))


def write_video(path: str | Path, frames: np.ndarray, fps: int = 4, lossless: bool = False) -> Path:
    """Frames (T, H, W, 3) uint8 -> a video file (examples, tests): mpeg4 (in every FFmpeg build), or
    lossless FFV1 RGB (.mkv / .avi) that decodes back to exactly these frames."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(frames, dtype=np.uint8)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("ffv1" if lossless else "mpeg4", rate=fps)
        stream.height, stream.width = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
        stream.pix_fmt = "bgr0" if lossless else "yuv420p"
        for f in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[: stream.height, : stream.width]), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path
