"""Synthetic colonoscopy video-QA with spoken questions, whose ground truth is exact.

A `Scene` is sampled per clip (lighting, blue dye, fluid, flush jets, tools, scope motion,
scope outside, close-up occlusion, retroflexion, debris, polyps); `render_clip` draws its
frames with numpy (circular endoscope view, mucosa texture in world coordinates, dark lumen,
haustral folds, vessels) and reports per-frame visibility; `qa_rows` turns the scene into
REAL-Colon-VQA rows for all 20 question types, each with one `in` template question and
a natural `out` paraphrase (>= 3 per type), a long answer and a short answer. Everything is a
function of (seed, video index, clip index), so a seed gives byte-identical JSONL and PNGs.

The data step (`datastep.build_dataset`) turns these rows into a run's files; the wording of
questions and answers lives in `wording`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .schema import QUESTION_TYPES
from .wording import IN_TEMPLATES, LONG_ANSWERS, out_wordings

GENERATOR_VERSION = "1"

# ---- scene model --------------------------------------------------------------------------------

# Prior probability of each clip state ("as configured": `data.priors` overrides any of these).
# Presence states are rare, as in REAL-Colon-VQA, so most presence answers are "no"/"absent".
DEFAULT_PRIORS: dict[str, float] = {
    "nbi": 0.2,
    "blue_dye": 0.15,
    "tool": 0.2,
    "lesion": 0.3,
    "flush": 0.12,
    "outside": 0.05,
    "occlusion": 0.08,
    "debris": 0.15,
    "endoscope": 0.08,
    "fluid_partial": 0.2,
    "fluid_complete": 0.08,
    "motion_forward": 0.2,
    "motion_backward": 0.35,
    "motion_lateral": 0.1,
}
TOOL_PRIORS = {"forceps": 0.45, "snare": 0.3, "catheter": 0.25}
HISTOLOGY_PRIORS = {"adenoma": 0.6, "hyperplastic": 0.3, "sessile serrated": 0.1}
SIZE_PRIORS = {"<5": 0.55, "5-10": 0.3, ">10": 0.15}
SIZE_RADIUS = {"<5": 0.075, "5-10": 0.11, ">10": 0.155}  # world units
SITES = ("cecum", "ascending", "transverse", "descending", "sigma", "rectum")
# Per-site look, so the segment is learnable from pixels: fold frequency/contrast, lumen shape
# (triangular transverse), vessel density.
SITE_STYLE = {
    "cecum": dict(fold_freq=1.1, fold_contrast=0.45, tri=0.0, vessel=0.010),
    "ascending": dict(fold_freq=1.6, fold_contrast=0.5, tri=0.0, vessel=0.010),
    "transverse": dict(fold_freq=2.0, fold_contrast=0.35, tri=0.3, vessel=0.010),
    "descending": dict(fold_freq=1.4, fold_contrast=0.22, tri=0.0, vessel=0.014),
    "sigma": dict(fold_freq=2.6, fold_contrast=0.4, tri=0.1, vessel=0.012),
    "rectum": dict(fold_freq=0.8, fold_contrast=0.12, tri=0.0, vessel=0.024),
}
MOTIONS = ("static", "forward", "backward", "lateral")
MOTION_TYPE_ANSWER = {"static": "stable", "forward": "advancing", "backward": "withdrawing", "lateral": "lateral"}
ZOOM_RANGE = 1.6  # forward/backward motion changes magnification by this factor over a clip
VIEW_RADIUS = 0.94  # circular endoscope view, in normalised screen units ([-1, 1] across the frame)

# Colours (0..255) per lighting mode; tools, scope shaft, water and the room are unlit by NBI.
COLORS = {
    "white light": dict(mucosa=(205, 95, 85), vessel=(135, 35, 40), dye=(45, 80, 200), debris=(100, 70, 45),
                        fluid=(180, 155, 60), redout=(215, 70, 55), adenoma=(215, 105, 95),
                        hyperplastic=(225, 160, 150), ssl=(215, 160, 140)),
    "NBI": dict(mucosa=(100, 155, 140), vessel=(70, 60, 45), dye=(30, 60, 150), debris=(95, 62, 40),
                fluid=(160, 140, 40), redout=(140, 105, 70), adenoma=(125, 90, 60),
                hyperplastic=(150, 195, 150), ssl=(150, 180, 130)),
}
TOOL_GREY = (165, 167, 172)
CATHETER_WHITE = (246, 246, 240)
SCOPE_DARK = (38, 40, 46)
WATER = (232, 240, 250)


class PriorError(ValueError):
    pass


def resolve_priors(overrides: dict[str, float] | None) -> dict[str, float]:
    pri = dict(DEFAULT_PRIORS)
    for k, v in (overrides or {}).items():
        if k not in pri:
            raise PriorError(f"data.priors: unknown key {k!r} (known: {', '.join(pri)})")
        if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            raise PriorError(f"data.priors.{k} must be a probability in [0, 1], got {v!r}")
        pri[k] = float(v)
    for group in (("fluid_partial", "fluid_complete"), ("motion_forward", "motion_backward", "motion_lateral")):
        if sum(pri[k] for k in group) > 1.0 + 1e-9:
            raise PriorError(f"data.priors: {' + '.join(group)} must not exceed 1")
    return pri


@dataclass
class Lesion:
    histology: str
    size: str
    radius: float  # world units
    pos: tuple[float, float]  # world position of the centre
    screen_position: str
    motion_direction: str


@dataclass
class Scene:
    """Everything about one clip; every answer is a function of this state."""

    video_id: str
    clip_index: int
    frame_numbers: list[int]
    texture_seed: int
    site: str
    lighting: str  # "white light" | "NBI"
    outside: bool = False
    occlusion: tuple[int, int] | None = None  # frames [start, end) with the lens against the wall
    fluid: str = "absent"  # absent | partial | complete
    fluid_level: float = 0.0  # partial: screen y of the fluid surface (fluid below it)
    blue_dye: bool = False
    dye_cover: float = 0.0
    debris: bool = False
    endoscope: bool = False
    flush: tuple[int, int] | None = None  # frames [start, end) with the water jet
    tool: str | None = None  # forceps | snare | catheter
    tool_start: int = 0
    tool_reach: float = 0.0
    tool_angle: float = math.pi / 4
    motion: str = "static"
    zooms: list[float] = field(default_factory=list)
    offsets: list[tuple[float, float]] = field(default_factory=list)
    lumen: tuple[float, float] = (0.0, 0.0)
    lesion: Lesion | None = None

    @property
    def clip_id(self) -> str:
        return f"{self.video_id}_c{self.clip_index:03d}"

    @property
    def num_frames(self) -> int:
        return len(self.frame_numbers)


def _choice(rng: np.random.Generator, probs: dict[str, float]) -> str:
    keys = list(probs)
    p = np.array([probs[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _span(rng: np.random.Generator, n: int, lo: int = 3) -> tuple[int, int]:
    length = int(rng.integers(min(lo, n), n + 1))
    start = int(rng.integers(0, n - length + 1))
    return (start, start + length)


def _camera(rng: np.random.Generator, motion: str, n: int) -> tuple[list[float], list[tuple[float, float]]]:
    s = np.linspace(0.0, 1.0, n)
    o0 = rng.uniform(-0.08, 0.08, size=2)
    if motion == "static":
        z0 = rng.uniform(1.0, 1.3)
        zooms = z0 * (1 + 0.004 * np.sin(3 * s + rng.uniform(0, 6)))
        offs = [tuple(o0 + 0.004 * np.array([math.sin(7 * v), math.cos(5 * v)])) for v in s]
    elif motion in ("forward", "backward"):
        z0 = rng.uniform(0.9, 1.05)
        prog = s if motion == "forward" else 1 - s
        zooms = z0 * ZOOM_RANGE ** prog
        offs = [tuple(o0) for _ in s]
    else:  # lateral: pan roughly along one screen axis
        z0 = rng.uniform(1.0, 1.25)
        zooms = np.full(n, z0)
        ang = rng.integers(0, 4) * math.pi / 2 + rng.uniform(-0.3, 0.3)
        d = np.array([math.cos(ang), math.sin(ang)]) * rng.uniform(0.3, 0.42)
        offs = [tuple(o0 + (v - 0.5) * d) for v in s]
    return [float(z) for z in zooms], [(float(a), float(b)) for a, b in offs]


def _to_screen(scene: Scene, p: tuple[float, float], t: int) -> np.ndarray:
    ox, oy = scene.offsets[t]
    return np.array([(p[0] - ox) * scene.zooms[t], (p[1] - oy) * scene.zooms[t]])


def _place_lesion(rng: np.random.Generator, scene: Scene) -> Lesion | None:
    """A polyp that stays in one screen quadrant and moves in one unambiguous direction."""
    histology = _choice(rng, HISTOLOGY_PRIORS)
    size = _choice(rng, SIZE_PRIORS)
    radius = SIZE_RADIUS[size]
    n, mid = scene.num_frames, scene.num_frames // 2
    for _ in range(200):
        sx, sy = rng.choice([-1.0, 1.0]), rng.choice([-1.0, 1.0])
        um = np.array([sx * rng.uniform(0.22, 0.6), sy * rng.uniform(0.22, 0.6)])
        ox, oy = scene.offsets[mid]
        pos = (float(um[0] / scene.zooms[mid] + ox), float(um[1] / scene.zooms[mid] + oy))
        if math.hypot(pos[0] - scene.lumen[0], pos[1] - scene.lumen[1]) < radius + 0.22:
            continue
        us = [_to_screen(scene, pos, t) for t in range(n)]
        ok = all(np.sign(u[0]) == sx and np.sign(u[1]) == sy and min(abs(u[0]), abs(u[1])) > radius * scene.zooms[t] * 0.6 + 0.06
                 and math.hypot(*u) + radius * scene.zooms[t] < 0.82 for t, u in enumerate(us))
        if not ok:
            continue
        d = us[-1] - us[0]
        mag = math.hypot(*d)
        if mag < 0.05:
            direction = "stable"
        elif mag > 0.12 and max(abs(d)) >= 1.6 * min(abs(d)):
            direction = ("right" if d[0] > 0 else "left") if abs(d[0]) > abs(d[1]) else ("down" if d[1] > 0 else "up")
        else:
            continue
        quadrant = ("upper" if sy < 0 else "lower") + "-" + ("left" if sx < 0 else "right")
        return Lesion(histology, size, radius, pos, quadrant, direction)
    return None


def sample_scene(rng: np.random.Generator, video_id: str, clip_index: int, frame_numbers: list[int],
                 site: str, priors: dict[str, float]) -> Scene:
    n = len(frame_numbers)
    sc = Scene(video_id, clip_index, list(frame_numbers), int(rng.integers(0, 2**31 - 1)), site,
               "NBI" if rng.random() < priors["nbi"] else "white light")
    sc.lumen = (float(rng.uniform(-0.12, 0.12)), float(rng.uniform(-0.12, 0.12)))
    sc.outside = bool(rng.random() < priors["outside"])
    if sc.outside:
        sc.lighting = "white light"
        sc.zooms, sc.offsets = _camera(rng, "static", n)
        return sc
    if rng.random() < priors["occlusion"]:
        sc.occlusion = _span(rng, n, lo=3)
    if sc.occlusion is None:
        u = rng.random()
        sc.fluid = "partial" if u < priors["fluid_partial"] else (
            "complete" if u < priors["fluid_partial"] + priors["fluid_complete"] else "absent")
    clear = sc.occlusion is None and sc.fluid != "complete"
    if sc.fluid == "partial":
        sc.fluid_level = float(rng.uniform(0.05, 0.45))
    sc.blue_dye = bool(clear and rng.random() < priors["blue_dye"])
    sc.dye_cover = float(rng.uniform(0.1, 0.25))
    sc.debris = bool(sc.fluid != "complete" and sc.occlusion is None and rng.random() < priors["debris"])
    sc.endoscope = bool(clear and rng.random() < priors["endoscope"])
    if rng.random() < priors["flush"]:
        sc.flush = _span(rng, n, lo=3)
    if rng.random() < priors["tool"]:
        _add_tool(rng, sc)
    if sc.occlusion is not None:
        sc.motion = "static"
    else:
        u = rng.random()
        f, b, lat = priors["motion_forward"], priors["motion_backward"], priors["motion_lateral"]
        sc.motion = "forward" if u < f else "backward" if u < f + b else "lateral" if u < f + b + lat else "static"
    sc.zooms, sc.offsets = _camera(rng, sc.motion, n)
    if lesion_allowed(sc) and rng.random() < priors["lesion"]:
        sc.lesion = _place_lesion(rng, sc)
    return sc


def _add_tool(rng: np.random.Generator, sc: Scene) -> None:
    sc.tool = _choice(rng, TOOL_PRIORS)
    sc.tool_start = int(rng.integers(0, max(1, sc.num_frames - 4)))
    sc.tool_reach = float(rng.uniform(0.55, 0.75))
    sc.tool_angle = float(math.pi / 4 + rng.uniform(-0.2, 0.2))


def lesion_allowed(sc: Scene) -> bool:
    """Polyps are only placed where nothing hides them for the whole clip."""
    return not sc.outside and sc.occlusion is None and sc.fluid == "absent" and not sc.endoscope


def sample_video(seed: int, video_index: int, num_clips: int, num_frames: int = 8,
                 priors: dict[str, float] | None = None) -> list[Scene]:
    """The clips of one synthetic video, in time order (withdrawal: cecum towards rectum).

    Each video gets at least one clip with a tool and one with a polyp (when a clip allows it),
    so tool and lesion questions exist in every video, held-out ones included.
    """
    priors = resolve_priors(priors)
    vrng = np.random.default_rng([seed, video_index, 0xC0FFEE])
    video_id = f"syn-{video_index + 1:02d}"
    sites = sorted(vrng.integers(0, len(SITES), size=num_clips).tolist())
    scenes = []
    frame = int(vrng.integers(200, 800))
    for c in range(num_clips):
        rng = np.random.default_rng([seed, video_index, c])
        frames = [frame + 4 * k for k in range(num_frames)]  # stride 4, as REAL-Colon-VQA
        scenes.append(sample_scene(rng, video_id, c, frames, SITES[sites[c]], priors))
        frame += 4 * num_frames + int(vrng.integers(120, 900))
    if not any(s.tool for s in scenes):
        cand = [s for s in scenes if not s.outside]
        if cand:
            _add_tool(vrng, cand[int(vrng.integers(len(cand)))])
    if not any(s.lesion for s in scenes):
        for idx in vrng.permutation(len(scenes)):
            s = scenes[int(idx)]
            if lesion_allowed(s):
                s.lesion = _place_lesion(vrng, s)
                if s.lesion is not None:
                    break
    return scenes


# ---- rendering ----------------------------------------------------------------------------------


def _noise_sampler(rng: np.random.Generator, grid: int, extent: float = 2.6):
    """Smooth random field on the world plane [-extent, extent]^2, sampled with a cubic spline."""
    from scipy.ndimage import map_coordinates, spline_filter

    coeffs = spline_filter(rng.random((grid, grid)).astype(np.float64), order=3)

    def sample(wx: np.ndarray, wy: np.ndarray) -> np.ndarray:
        gx = (wx + extent) / (2 * extent) * (grid - 1)
        gy = (wy + extent) / (2 * extent) * (grid - 1)
        return map_coordinates(coeffs, [gy.ravel(), gx.ravel()], order=3, mode="mirror",
                               prefilter=False).reshape(wx.shape)

    return sample


def _c(rgb) -> np.ndarray:
    return np.asarray(rgb, dtype=np.float32) / 255.0


def _screen_grid(size: int):
    xs = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    ux, uy = np.meshgrid(xs, xs)
    return ux, uy, np.hypot(ux, uy)


def _segment(ux, uy, start, direction, length, half_width):
    """Mask of a capsule from `start` along unit `direction` for `length`, and the along/perp coords."""
    rx, ry = ux - start[0], uy - start[1]
    along = rx * direction[0] + ry * direction[1]
    perp = -rx * direction[1] + ry * direction[0]
    inside = (along >= 0) & (along <= length) & (np.abs(perp) <= half_width)
    tip = np.hypot(along - length, perp) <= half_width
    return inside | tip, along, perp


# What `render_clip(..., masks=True)` says is where, in the order it is painted (a later layer hides an earlier one).
LAYERS = ("dye", "lesion", "redout", "fluid", "shaft", "flush", "tool")
MASKS = tuple(k for k in LAYERS if k != "redout")


def render_clip(scene: Scene, size: int = 112, masks: bool = False):
    """Render the clip: (T, size, size, 3) uint8 frames and per-frame visibility flags; with `masks`, also where
    each of `MASKS` is seen in each frame ({name: (T, size, size) bool}, hidden parts removed): the exact local
    ground truth a vision pretraining step can learn from. The frames do not depend on `masks`."""
    rng = np.random.default_rng(scene.texture_seed)
    n1 = _noise_sampler(rng, 14)
    n2 = _noise_sampler(rng, 20)
    n3 = _noise_sampler(rng, 9)
    n4 = _noise_sampler(rng, 48)
    nf = _noise_sampler(rng, 10)
    style = SITE_STYLE[scene.site]
    col = {k: _c(v) for k, v in COLORS[scene.lighting].items()}
    fold_phase = rng.uniform(0, 2 * math.pi)
    tri_phase = rng.uniform(0, 2 * math.pi)
    ux, uy, ru = _screen_grid(size)
    view = ru < VIEW_RADIUS
    vignette = (1.0 - 0.25 * ru**2)[..., None]
    n = scene.num_frames
    # Thresholds that make blue dye / debris cover the intended share of the first frame's view.
    w0x, w0y = ux / scene.zooms[0] + scene.offsets[0][0], uy / scene.zooms[0] + scene.offsets[0][1]
    dye_thr = float(np.quantile(n3(w0x, w0y)[view], 1 - scene.dye_cover))
    debris_thr = float(np.quantile(n4(w0x, w0y)[view], 0.965))
    frames = np.zeros((n, size, size, 3), dtype=np.uint8)
    flags: dict[str, list[bool]] = {k: [False] * n for k in ("occluded", "flush", "tool", "dye", "lesion", "outside")}
    where = {k: np.zeros((n, size, size), dtype=bool) for k in MASKS}
    for t in range(n):
        covered = np.zeros_like(view)  # what is drawn over the mucosa in this frame
        drawn: dict[str, np.ndarray] = {}  # layer -> where it was painted in this frame
        dye = lesion = None
        if scene.outside:
            img = _render_outside(ux, uy, rng_seed=scene.texture_seed, t=t)
            flags["outside"][t] = True
        else:
            z = scene.zooms[t]
            ox, oy = scene.offsets[t]
            wx, wy = ux / z + ox, uy / z + oy
            dx, dy = wx - scene.lumen[0], wy - scene.lumen[1]
            r = np.hypot(dx, dy)
            if style["tri"]:
                r = r * (1 + style["tri"] * np.cos(3 * np.arctan2(dy, dx) + tri_phase))
            bright = 0.08 + 0.95 * np.clip((r - 0.08) / 1.0, 0, 1) ** 0.5
            fold = 0.5 + 0.5 * np.sin(2 * math.pi * style["fold_freq"] * np.log(np.maximum(r, 1e-3)) + fold_phase)
            shade = bright * (1 - style["fold_contrast"] * fold**8) * (0.88 + 0.24 * n1(wx, wy))
            base = col["mucosa"][None, None, :] * np.ones_like(shade)[..., None]
            vessel = (np.abs(n2(wx, wy) - 0.5) < style["vessel"]) & (bright > 0.3)
            base[vessel] = 0.35 * base[vessel] + 0.65 * col["vessel"]
            if scene.blue_dye:
                dye = n3(wx, wy) > dye_thr
                base[dye] = col["dye"]
            if scene.debris:
                base[n4(wx, wy) > debris_thr] = col["debris"]
            img = base * shade[..., None]
            if scene.lesion is not None:
                img, lesion = _draw_lesion(img, scene, wx, wy, col, n4, shade)
            if scene.occlusion and scene.occlusion[0] <= t < scene.occlusion[1]:
                img = col["redout"][None, None, :] * (0.75 + 0.3 * n1(ux * 0.3 + t * 0.01, uy * 0.3))[..., None]
                flags["occluded"][t] = True
                covered |= view
                drawn["redout"] = view
            if scene.fluid != "absent":
                fmask = view if scene.fluid == "complete" else uy > scene.fluid_level + 0.04 * np.sin(5 * ux + 0.7 * t)
                shade_f = (0.88 + 0.17 * nf(ux * 0.8 + 0.05 * t, uy * 0.8))[..., None]
                img = np.where(fmask[..., None], col["fluid"] * shade_f, img)
                covered |= fmask
                drawn["fluid"] = fmask
            img = img * vignette
            if scene.endoscope:
                img, m = _draw_scope_shaft(img, ux, uy)
                covered |= m
                drawn["shaft"] = m
        if scene.flush and scene.flush[0] <= t < scene.flush[1]:
            img, m = _draw_flush(img, ux, uy, t)
            covered |= m
            drawn["flush"] = m
            flags["flush"][t] = True
        if scene.tool is not None:
            reach = scene.tool_reach * min(1.0, (t - scene.tool_start + 1) / 3) if t >= scene.tool_start else 0.0
            if reach > 0.04:
                img, m = _draw_tool(img, scene.tool, scene.tool_angle, reach, ux, uy)
                covered |= m
                drawn["tool"] = m
                flags["tool"][t] = True
        if dye is not None:
            flags["dye"][t] = bool((dye & view & ~covered).mean() > 0.003)
        if lesion is not None and lesion.any():
            flags["lesion"][t] = bool((lesion & ~covered).sum() >= 0.5 * lesion.sum())
        if masks:
            drawn.update({k: m for k, m in (("dye", dye), ("lesion", lesion)) if m is not None})
            above = ~view
            for k in reversed(LAYERS):
                if k in drawn:
                    if k in where:
                        where[k][t] = drawn[k] & ~above
                    above = above | drawn[k]
        img = np.where(view[..., None], img, 0.0)
        frames[t] = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return (frames, flags, where) if masks else (frames, flags)


def _render_outside(ux, uy, rng_seed: int, t: int) -> np.ndarray:
    """The operating room seen through the scope: bright grey walls, a lamp, green drapes."""
    rng = np.random.default_rng(rng_seed + 17)
    lx, ly = rng.uniform(-0.5, 0.5, size=2)
    wall = _c((150, 160, 170)) * (0.75 + 0.25 * (1 - uy) / 2)[..., None]
    img = wall + 0 * ux[..., None]
    drape = uy > 0.35 + 0.1 * np.sin(3 * ux + rng.uniform(0, 6))
    img[drape] = _c((70, 125, 105))
    lamp = np.hypot(ux - lx - 0.01 * t, uy - ly) < 0.25
    img[lamp] = _c((250, 250, 240))
    return img


def _draw_lesion(img, scene: Scene, wx, wy, col, noise, shade) -> np.ndarray:
    les = scene.lesion
    px, py = les.pos
    d = np.hypot(wx - px, wy - py) / les.radius
    if les.histology == "sessile serrated":  # irregular, cloud-like border
        d = d * (1 + 0.12 * (noise(wx * 3, wy * 3) - 0.5))
    mask = d < 1
    if not mask.any():
        return img, mask
    dome = np.sqrt(np.clip(1 - d**2, 0, 1))
    light = 0.82 + 0.28 * dome - 0.1 * np.clip((wx - px + wy - py) / les.radius, -1, 1)
    key = {"adenoma": "adenoma", "hyperplastic": "hyperplastic", "sessile serrated": "ssl"}[les.histology]
    color = col[key][None, None, :] * light[..., None]
    if les.histology == "adenoma":  # tubular pit pattern
        pits = (np.sin(55 * (wx - px)) * np.sin(55 * (wy - py)) > 0.55)
        color = np.where(pits[..., None], color * 0.8, color)
    # keep the overall illumination falloff, but lesions are raised and lit (>= 0.8)
    out = img.copy()
    lit = np.clip(shade / max(float(shade[mask].max()), 1e-6), 0.8, 1.0)[..., None]
    out[mask] = (color * lit)[mask]
    return out, mask


def _draw_scope_shaft(img, ux, uy) -> np.ndarray:
    shaft, along, perp = _segment(ux, uy, (0.0, 1.05), (0.0, -1.0), 0.85, 0.2)
    stripe = np.abs(perp + 0.07) < 0.03
    out = img.copy()
    out[shaft] = _c(SCOPE_DARK)
    out[shaft & stripe] = _c((70, 72, 80))
    return out, shaft


def _draw_flush(img, ux, uy, t: int) -> np.ndarray:
    start = (-0.66, 0.66)
    direc = np.array([0.72, -0.69])
    direc = direc / np.linalg.norm(direc)
    rx, ry = ux - start[0], uy - start[1]
    along = rx * direc[0] + ry * direc[1]
    perp = -rx * direc[1] + ry * direc[0]
    jet = (along > 0) & (along < 1.05) & (np.abs(perp + 0.02 * np.sin(9 * along + t)) < 0.03 + 0.09 * along)
    # translucent water with bright streaks along the jet
    alpha = (0.35 + 0.35 * (np.sin(60 * perp + 3 * t) > 0.2))[..., None]
    out = img.copy()
    out = np.where(jet[..., None], (1 - alpha) * out + alpha * _c(WATER), out)
    mask = jet.copy()
    for k in range(5):  # bubbles
        a = 0.35 + 0.13 * k
        cx, cy = start[0] + direc[0] * a + 0.12 * math.sin(k * 2.1 + t), start[1] + direc[1] * a + 0.1 * math.cos(k * 1.7 + t)
        ring = np.abs(np.hypot(ux - cx, uy - cy) - 0.035) < 0.01
        out[ring] = _c(WATER)
        mask |= ring
    return out, mask


def _draw_tool(img, tool: str, angle: float, reach: float, ux, uy) -> np.ndarray:
    """A tool out of the working channel (lower right), in screen space (it moves with the scope)."""
    start = (VIEW_RADIUS * math.cos(angle) * 1.05, VIEW_RADIUS * math.sin(angle) * 1.05)
    direc = (-math.cos(angle), -math.sin(angle))
    out = img.copy()
    grey = _c(TOOL_GREY)
    if tool == "forceps":
        shaft, along, perp = _segment(ux, uy, start, direc, reach, 0.065)
        metal = (0.82 + 0.25 * np.cos(np.clip(perp / 0.065, -1, 1) * math.pi / 2))[..., None]
        tip = (start[0] + direc[0] * reach, start[1] + direc[1] * reach)
        jaws = np.zeros_like(shaft)
        for sgn in (-1, 1):
            a = angle + math.pi + sgn * 0.45
            jaw, _, _ = _segment(ux, uy, tip, (math.cos(a), math.sin(a)), 0.17, 0.03)
            jaws |= jaw
        mask = shaft | jaws
        out[mask] = (grey * metal)[mask]
    elif tool == "snare":
        shaft, along, perp = _segment(ux, uy, start, direc, reach, 0.03)
        out[shaft] = grey * 0.95
        mask = shaft
        if reach > 0.3:
            loop_r = (0.2, 0.15)
            e = np.hypot((along - reach - loop_r[0]) / loop_r[0], perp / loop_r[1])
            ring = np.abs(e - 1) < 0.17
            out[ring] = grey
            mask = shaft | ring
    else:  # catheter
        shaft, along, perp = _segment(ux, uy, start, direc, reach, 0.038)
        sheen = (0.93 + 0.07 * np.cos(np.clip(perp / 0.038, -1, 1) * math.pi / 2))[..., None]
        out[shaft] = (_c(CATHETER_WHITE) * sheen)[shaft]
        mask = shaft
    return out, mask


# ---- QA rows ------------------------------------------------------------------------------------


def scene_answers(scene: Scene, flags: dict[str, list[bool]]) -> dict[str, tuple[str, int]]:
    """Short answer and support frame count for every question type this clip supports."""
    n = scene.num_frames
    occl = sum(flags["occluded"])
    tool_frames = sum(flags["tool"])
    flush_frames = sum(flags["flush"])
    dye_frames = sum(flags["dye"])
    clean = not scene.outside and occl == 0 and scene.fluid == "absent" and not scene.debris

    def yn(cond: bool, frames_yes: int) -> tuple[str, int]:
        return ("yes", frames_yes) if cond else ("no", n)

    ans = {
        "mucosa_visibility": ("yes", n) if clean else ("no", occl if (occl and scene.fluid == "absent" and not scene.debris) else n),
        "tool_catheter_check": yn(tool_frames > 0, tool_frames),
        "endoscope_visibility": yn(scene.endoscope, n),
        "nbi_status": yn(scene.lighting == "NBI", n),
        "lighting_mode": (scene.lighting, n),
        "blue_dye_presence": yn(dye_frames > 0, dye_frames),
        "occlusion_check": yn(occl > 0, occl),
        "fluid_occlusion_level": (scene.fluid, n),
        "scope_motion": yn(scene.motion != "static", n),
        "scope_forward_motion": yn(scene.motion == "forward", n),
        "scope_backward_motion": yn(scene.motion == "backward", n),
        "scope_outside": yn(scene.outside, n),
        "flush_action": yn(flush_frames > 0, flush_frames),
        "scope_motion_type": (MOTION_TYPE_ANSWER[scene.motion], n),
    }
    if scene.tool is not None and tool_frames:
        ans["tool_identification"] = (scene.tool, tool_frames)
    if scene.lesion is not None and any(flags["lesion"]):
        les, k = scene.lesion, sum(flags["lesion"])
        ans.update({
            "lesion_histology_extended": (les.histology, k),
            "lesion_size_range": (les.size, k),
            "lesion_site": (scene.site, k),
            "lesion_screen_position": (les.screen_position, k),
            "lesion_motion_direction": (les.motion_direction, k),
        })
    return {t: ans[t] for t in QUESTION_TYPES if t in ans}


def frame_relpath(video_id: str, frame_number: int) -> str:
    return f"frames/{video_id}/{video_id}_{frame_number:06d}.png"


def qa_rows(scene: Scene, flags: dict[str, list[bool]], seed: int, num_out_wordings: int = 3) -> dict[str, list[dict]]:
    """REAL-Colon-VQA rows for one clip: {"in": [...], "out": [...]} (no voice/audio yet); each `out` row's wording is
    drawn from the type's first `num_out_wordings` (`wording.out_wordings`)."""
    rng = np.random.default_rng([seed, int(scene.video_id.split("-")[-1]), scene.clip_index, 0xA11])
    frames = [frame_relpath(scene.video_id, f) for f in scene.frame_numbers]
    n = scene.num_frames
    out: dict[str, list[dict]] = {"in": [], "out": []}
    for qtype, (short, support) in scene_answers(scene, flags).items():
        long = LONG_ANSWERS[qtype][short][int(rng.integers(len(LONG_ANSWERS[qtype][short])))]
        wordings = out_wordings(qtype, num_out_wordings)
        paraphrase = wordings[int(rng.integers(len(wordings)))]
        for template, question in (("in", IN_TEMPLATES[qtype]), ("out", paraphrase)):
            out[template].append({
                "id": f"{scene.clip_id}_{qtype}_{template}",
                "video_id": scene.video_id,
                "frames": frames,
                "frame_numbers": list(scene.frame_numbers),
                "question": question,
                "question_type": qtype,
                "support_frames": support,
                "total_frames": n,
                "support_ratio": round(support / n, 4),
                "answer": long,
                "short_answer": short,
                "template": template,
            })
    return out


def save_png(path: Path, frame: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame).save(path, format="PNG", optimize=False, compress_level=6)


REGION_PATCH = 14  # region shares are kept per 14 x 14 pixel patch (Qwen2-VL's patch)


def region_shares(masks: dict[str, np.ndarray], patch: int = REGION_PATCH) -> np.ndarray:
    """`render_clip` masks -> (T, S/patch, S/patch, len(MASKS)) uint8: the share of each patch's pixels where each
    of `MASKS` is seen, in 1/255."""
    t, s, _ = masks[MASKS[0]].shape
    if s % patch:
        raise ValueError(f"frame size {s} is not a multiple of the {patch}-pixel patch")
    g = s // patch
    shares = np.stack([masks[k].reshape(t, g, patch, g, patch).mean(axis=(2, 4)) for k in MASKS], axis=-1)
    return np.rint(shares * 255).astype(np.uint8)


def generate(seed: int, num_videos: int, clips_per_video: int, num_frames: int = 8, frame_size: int = 112,
             priors: dict[str, float] | None = None, out_dir: str | Path | None = None, out_wordings: int = 3,
             regions: dict[str, np.ndarray] | None = None) -> tuple[dict[str, list[dict]], list[Scene]]:
    """Sample, render and (if `out_dir`) write the frames of every clip; return rows per template. Given a dict
    `regions`, also fill it: clip key (`data.clip_key`) -> `region_shares` of the clip (where each thing is seen)."""
    rows: dict[str, list[dict]] = {"in": [], "out": []}
    scenes: list[Scene] = []
    for v in range(num_videos):
        for scene in sample_video(seed, v, clips_per_video, num_frames, priors):
            frames, flags, *masks = render_clip(scene, frame_size, masks=regions is not None)
            if regions is not None:
                regions[f"{scene.video_id}:{scene.frame_numbers[0]}"] = region_shares(masks[0])
            if out_dir is not None:
                for f, num in zip(frames, scene.frame_numbers):
                    save_png(Path(out_dir) / frame_relpath(scene.video_id, num), f)
            for template, r in qa_rows(scene, flags, seed, out_wordings).items():
                rows[template] += r
            scenes.append(scene)
    return rows, scenes


def sample_clip(seed: int, num_frames: int = 8, frame_size: int = 112, video_index: int = 0) -> list[np.ndarray]:
    """The frames of one synthetic endoscopy clip (for checks and demos)."""
    scene = sample_video(seed, video_index, 1, num_frames)[0]
    frames, _ = render_clip(scene, frame_size)
    return list(frames)
