"""Clips and audio as things a reader can see and hear: frame strips, GIF flipbooks, audio players.

HTML snippets survive nbconvert's export, so the rendered reports keep them.
"""
from __future__ import annotations

import base64
import io

import numpy as np


def frame_strip(frames: np.ndarray, gap: int = 2) -> np.ndarray:
    """The T frames of a clip side by side as one (H, T*W + gaps, 3) image."""
    t, h, w, _ = frames.shape
    strip = np.zeros((h, t * w + (t - 1) * gap, 3), dtype=np.uint8)
    for i in range(t):
        strip[:, i * (w + gap): i * (w + gap) + w] = frames[i]
    return strip


def flipbook_gif(frames: np.ndarray, size: int | None = None, ms_per_frame: int = 250) -> bytes:
    """Animated GIF bytes of a clip (loops forever)."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    if size is not None:
        images = [im.resize((size, size), Image.NEAREST) for im in images]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)
    return buf.getvalue()


def flipbook_html(frames: np.ndarray, caption: str = "", size: int = 160, ms_per_frame: int = 250) -> str:
    """An <figure> with the animated clip and its frame strip, embedded as data URIs."""
    from PIL import Image

    gif = base64.b64encode(flipbook_gif(frames, size=size, ms_per_frame=ms_per_frame)).decode()
    buf = io.BytesIO()
    Image.fromarray(frame_strip(frames)).save(buf, format="PNG")
    strip = base64.b64encode(buf.getvalue()).decode()
    import html

    return (f'<figure style="display:inline-block;margin:4px;vertical-align:top;max-width:{max(size, 420)}px">'
            f'<img src="data:image/gif;base64,{gif}" width="{size}" height="{size}" style="image-rendering:pixelated"/>'
            f'<br/><img src="data:image/png;base64,{strip}" style="max-width:100%"/>'
            f'<figcaption style="font-size:11px">{html.escape(caption)}</figcaption></figure>')


def audio_html(audio: np.ndarray, rate: int = 16_000) -> str:
    """An HTML5 audio player with the clip embedded as a base64 16-bit PCM WAV data URI."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0), rate, format="WAV", subtype="PCM_16")
    b64 = base64.b64encode(buf.getvalue()).decode()
    return f'<audio controls="controls" preload="none" style="width:100%"><source src="data:audio/wav;base64,{b64}" type="audio/wav"/></audio>'


def flipbook_widget(frames: np.ndarray, ms_per_frame: int = 250, size: int = 224):
    """Play button + slider + image stepping through the clip (interactive JupyterLab only:
    widgets do not render in a static HTML export; use `case_html` there)."""
    import ipywidgets as W
    from PIL import Image

    pngs = []
    for f in frames:
        buf = io.BytesIO()
        Image.fromarray(np.asarray(f, dtype=np.uint8)).resize((size, size), Image.NEAREST).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    image = W.Image(value=pngs[0], format="png", width=size, height=size)
    play = W.Play(value=0, min=0, max=len(pngs) - 1, step=1, interval=ms_per_frame)
    slider = W.IntSlider(value=0, min=0, max=len(pngs) - 1, description="frame")
    W.jslink((play, "value"), (slider, "value"))
    slider.observe(lambda change: setattr(image, "value", pngs[change["new"]]), names="value")
    return W.VBox([W.HBox([play, slider]), image])


def plot_log_mel(clips: dict[str, np.ndarray], rate: int = 16_000, n_mels: int = 80, title: str = ""):
    """Log-mel spectrograms as the Whisper encoder sees its input (25 ms window, 10 ms hop, `n_mels` bands),
    one panel per named clip (e.g. clean vs operating-room noise), on one colour scale."""
    import librosa.display
    import matplotlib.pyplot as plt

    mels = {name: librosa.power_to_db(librosa.feature.melspectrogram(y=np.asarray(clip, np.float32), sr=rate, n_fft=400,
                                                                      hop_length=160, n_mels=n_mels), ref=1.0, top_db=None)
            for name, clip in clips.items()}
    top = max(float(m.max()) for m in mels.values())
    fig, axes = plt.subplots(len(mels), 1, figsize=(8, 2.2 * len(mels)), sharex=True, squeeze=False)
    for ax, (name, mel) in zip(axes[:, 0], mels.items()):
        image = librosa.display.specshow(mel, sr=rate, hop_length=160, x_axis="time", y_axis="mel", ax=ax,
                                         vmin=top - 80, vmax=top, cmap="magma")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("")
    axes[-1, 0].set_xlabel("time (s)")
    fig.colorbar(image, ax=axes[:, 0].tolist(), format="%+.0f dB", pad=0.01)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
