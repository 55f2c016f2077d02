"""Synthetic colonoscopy video-QA with spoken questions, whose ground truth is exact.

A `Scene` is sampled per clip (lighting, blue dye, fluid, flush jets, tools, scope motion,
scope outside, close-up occlusion, retroflexion, debris, polyps); `render_clip` draws its
frames with numpy (circular endoscope view, mucosa texture in world coordinates, dark lumen,
haustral folds, vessels) and reports per-frame visibility; `qa_rows` turns the scene into
REAL-Colon-VQA rows for all 20 question types, each with one `in` template question and
a natural `out` paraphrase (>= 3 per type), a long answer and a short answer. Everything is a
function of (seed, video index, clip index), so a seed gives byte-identical JSONL and PNGs.

`build_dataset(cfg)` is the data step: synthetic (or a real REAL-Colon-VQA folder when
`data.source` is a path) -> splits -> voices -> spoken questions -> the stage-1 speech corpus
-> validated files under `runs/<profile>/data/`:

    dataset.json            roots, voices, held-out videos, summary (what was built)
    in_template.jsonl       every QA row (template wording) with its voice and audio
    out_template.jsonl      every QA row (natural paraphrase) with its voice and audio
    frames/<video>/<video>_<frame:06d>.png                   (synthetic source only)
    audio/<voice>-<hash>.wav  spoken questions and corpus sentences (cache by text + voice)
    splits/train.jsonl, splits/val.jsonl, splits/test.jsonl  full rows + `split`, `group`
    speech_corpus.jsonl     stage-1 speech -> transcript pairs (+ `split`)
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import data as D
from . import stratify

GENERATOR_VERSION = "1"

# ---- question wording ---------------------------------------------------------------------------

IN_TEMPLATES: dict[str, str] = {
    "mucosa_visibility": "Is clean mucosa visible in this sequence?",
    "tool_catheter_check": "Is a tool or catheter visible in this sequence?",
    "endoscope_visibility": "Is the endoscope itself visible in this sequence?",
    "nbi_status": "Is narrow band imaging active in this sequence?",
    "lighting_mode": "What lighting mode is used in this sequence?",
    "blue_dye_presence": "Is blue dye present in this sequence?",
    "occlusion_check": "Is the view blocked by the scope touching the wall in this sequence?",
    "fluid_occlusion_level": "How severe is the fluid occlusion in this sequence?",
    "scope_motion": "Is the scope moving in this sequence?",
    "scope_forward_motion": "Is the scope moving forward in this sequence?",
    "scope_backward_motion": "Is the scope moving backward in this sequence?",
    "scope_outside": "Is the scope outside the patient in this sequence?",
    "flush_action": "Is a flushing action visible in this sequence?",
    "scope_motion_type": "What type of scope motion is shown in this sequence?",
    "tool_identification": "Which tool is visible in this sequence?",
    "lesion_histology_extended": "What is the histology of the lesion in this sequence?",
    "lesion_size_range": "What is the size range of the lesion in this sequence?",
    "lesion_site": "In which colon segment is the lesion in this sequence?",
    "lesion_screen_position": "Where on the screen is the lesion in this sequence?",
    "lesion_motion_direction": "In which direction does the lesion move on the screen in this sequence?",
}

OUT_TEMPLATES: dict[str, list[str]] = {
    "mucosa_visibility": [
        "Can you clearly see clean mucosa in these frames?",
        "Do we have a clear view of the bowel wall here?",
        "Is the lining of the colon clean and easy to see?",
    ],
    "tool_catheter_check": [
        "Can you spot any instrument or catheter in the frames?",
        "Has anything come out of the working channel here?",
        "Do you see a surgical tool in this clip?",
    ],
    "endoscope_visibility": [
        "Can you see the scope's own shaft in the picture?",
        "Is the colonoscope visible in its own view, as in retroflexion?",
        "Does the endoscope appear inside the image here?",
    ],
    "nbi_status": [
        "Is the scope using NBI right now?",
        "Has narrow band imaging been switched on for these frames?",
        "Are we looking at this in NBI mode?",
    ],
    "lighting_mode": [
        "Which light setting is the scope using here?",
        "Are these frames taken under white light or NBI?",
        "How is the field being illuminated in this clip?",
    ],
    "blue_dye_presence": [
        "Can you see any blue dye on the mucosa?",
        "Has a blue stain been sprayed in this part of the colon?",
        "Is there chromoendoscopy dye visible in these frames?",
    ],
    "occlusion_check": [
        "Is the lens pressed against the wall so the view goes red?",
        "Do we lose the view because the scope is too close to the mucosa?",
        "Is there a red out from the tip touching the bowel wall?",
    ],
    "fluid_occlusion_level": [
        "How much of the view is covered by fluid?",
        "Is the fluid blocking the view partly, completely, or not at all?",
        "How badly does liquid obscure the picture here?",
    ],
    "scope_motion": [
        "Is the camera moving during this clip?",
        "Does the colonoscope change position across these frames?",
        "Is there any scope movement in these frames?",
    ],
    "scope_forward_motion": [
        "Is the colonoscope being pushed further in?",
        "Are we advancing deeper into the colon here?",
        "Does the scope go forward across these frames?",
    ],
    "scope_backward_motion": [
        "Is the colonoscope being pulled back?",
        "Are we withdrawing the scope in this clip?",
        "Does the camera move backwards across these frames?",
    ],
    "scope_outside": [
        "Is the camera out of the body in this clip?",
        "Are we looking at the room instead of the colon?",
        "Has the colonoscope been taken out of the patient here?",
    ],
    "flush_action": [
        "Is water being sprayed to clean the view?",
        "Do you see the water jet flushing in these frames?",
        "Is the endoscopist irrigating the mucosa here?",
    ],
    "scope_motion_type": [
        "How is the scope moving, advancing, withdrawing, sideways, or holding still?",
        "What kind of movement does the camera make in this clip?",
        "Describe the scope movement in these frames in one word.",
    ],
    "tool_identification": [
        "What instrument can you see here?",
        "Which device came out of the working channel?",
        "Name the tool that appears in these frames.",
    ],
    "lesion_histology_extended": [
        "What kind of polyp is this, based on its appearance?",
        "What would the pathology of this lesion most likely be?",
        "How would you classify this polyp histologically?",
    ],
    "lesion_size_range": [
        "How big is the polyp in millimetres?",
        "Roughly what size is this lesion?",
        "Which size band does the polyp fall into?",
    ],
    "lesion_site": [
        "Which part of the colon is this polyp in?",
        "Where in the bowel is this lesion located?",
        "What segment of the large intestine are we looking at with this polyp?",
    ],
    "lesion_screen_position": [
        "In which corner of the picture is the polyp?",
        "Where does the lesion sit in the image?",
        "Which quadrant of the view shows the polyp?",
    ],
    "lesion_motion_direction": [
        "Which way does the polyp drift across the screen?",
        "How does the lesion move in the image over these frames?",
        "In which direction is the polyp shifting on the display?",
    ],
}

# Long answers per type and short answer (two wordings each; the short answer appears in each).
LONG_ANSWERS: dict[str, dict[str, list[str]]] = {
    "mucosa_visibility": {
        "yes": ["Yes, clean mucosa is visible across the frames.", "Yes, the mucosa is clean and clearly visible."],
        "no": ["No, clean mucosa is not consistently visible.", "No, the view of the mucosa is obscured."],
    },
    "tool_catheter_check": {
        "yes": ["Yes, a tool is visible in the working field.", "Yes, an instrument has come out of the working channel."],
        "no": ["No, no tool or catheter is visible.", "No, there is no instrument in view."],
    },
    "endoscope_visibility": {
        "yes": ["Yes, the endoscope shaft is visible in retroflexion.", "Yes, the scope itself can be seen in the image."],
        "no": ["No, the endoscope itself is not visible.", "No, the scope shaft does not appear in view."],
    },
    "nbi_status": {
        "yes": ["Yes, narrow band imaging is active.", "Yes, the scope is in NBI mode."],
        "no": ["No, narrow band imaging is not active.", "No, the scope uses white light."],
    },
    "lighting_mode": {
        "white light": ["The lighting mode is white light.", "The scope is using white light illumination."],
        "NBI": ["The lighting mode is NBI, narrow band imaging.", "The scope is using NBI illumination."],
    },
    "blue_dye_presence": {
        "yes": ["Yes, blue dye is present on the mucosa.", "Yes, blue chromoendoscopy dye can be seen."],
        "no": ["No, there is no blue dye.", "No, no blue dye is visible on the mucosa."],
    },
    "occlusion_check": {
        "yes": ["Yes, the view is occluded by the scope touching the wall.", "Yes, there is a red out from close contact."],
        "no": ["No, the view is not occluded by wall contact.", "No, the scope keeps a clear distance from the wall."],
    },
    "fluid_occlusion_level": {
        "absent": ["Fluid occlusion is absent and clean mucosa stays visible.", "Fluid is absent from the view."],
        "partial": ["Fluid occlusion is partial and covers part of the view.", "Fluid partially covers the lower view."],
        "complete": ["Fluid occlusion is complete and hides the mucosa.", "The view is under complete fluid occlusion."],
    },
    "scope_motion": {
        "yes": ["Yes, the scope is moving.", "Yes, the scope position changes across the frames."],
        "no": ["No, the scope is not moving.", "No, the scope holds its position."],
    },
    "scope_forward_motion": {
        "yes": ["Yes, the scope is moving forward.", "Yes, the scope advances deeper."],
        "no": ["No, the scope is not moving forward.", "No, there is no forward motion."],
    },
    "scope_backward_motion": {
        "yes": ["Yes, the scope is moving backward.", "Yes, the scope is being withdrawn."],
        "no": ["No, the scope is not moving backward.", "No, there is no backward motion."],
    },
    "scope_outside": {
        "yes": ["Yes, the scope is outside the patient.", "Yes, the camera shows the room outside the body."],
        "no": ["No, the scope is inside the patient.", "No, the scope remains inside the colon."],
    },
    "flush_action": {
        "yes": ["Yes, a flushing action is visible.", "Yes, a water jet is flushing the mucosa."],
        "no": ["No, there is no flushing action.", "No, no water jet is visible."],
    },
    "scope_motion_type": {
        "advancing": ["The scope is primarily advancing.", "The scope is advancing through the lumen."],
        "withdrawing": ["The scope is primarily withdrawing.", "The scope is withdrawing from the lumen."],
        "stable": ["The scope is stable.", "The scope is stable with no clear motion."],
        "lateral": ["The scope moves in a lateral direction.", "The motion is lateral, across the lumen."],
    },
    "tool_identification": {
        "forceps": ["The tool is forceps.", "Biopsy forceps are visible."],
        "snare": ["The tool is a snare.", "A polypectomy snare is visible."],
        "catheter": ["The tool is a catheter.", "An injection catheter is visible."],
    },
    "lesion_histology_extended": {
        "adenoma": ["The lesion looks like an adenoma.", "The histology is adenoma."],
        "hyperplastic": ["The lesion looks hyperplastic.", "The histology is hyperplastic."],
        "sessile serrated": ["The lesion looks like a sessile serrated lesion.", "The histology is sessile serrated."],
    },
    "lesion_size_range": {
        "<5": ["The lesion size range is <5 mm.", "The polyp measures <5 mm."],
        "5-10": ["The lesion size range is 5-10 mm.", "The polyp measures 5-10 mm."],
        ">10": ["The lesion size range is >10 mm.", "The polyp measures >10 mm."],
    },
    "lesion_site": {s: [f"The lesion is in the {s} colon.", f"The lesion site is the {s}."]
                    for s in ("ascending", "transverse", "descending")}
    | {"cecum": ["The lesion is in the cecum.", "The lesion site is the cecum."],
       "sigma": ["The lesion is in the sigma.", "The lesion site is the sigma, the sigmoid colon."],
       "rectum": ["The lesion is in the rectum.", "The lesion site is the rectum."]},
    "lesion_screen_position": {p: [f"The lesion is in the {p} of the screen.", f"The lesion appears {p}."]
                               for p in ("upper-left", "upper-right", "lower-left", "lower-right")},
    "lesion_motion_direction": {
        **{d: [f"The lesion moves {d} on the screen.", f"The lesion drifts {d}."] for d in ("up", "down", "left", "right")},
        "stable": ["The lesion is stable on the screen.", "The lesion stays stable in place."],
    },
}

_NARRATION = [
    "{verb} the scope through the {site}.",
    "Switching to {light} to inspect the {site}.",
    "Flushing water to clear the {site} mucosa.",
    "A {size} {histology} polyp is seen in the {site}.",
    "Passing the {tool} through the working channel.",
    "Spraying blue dye over the {site} to highlight the surface.",
    "The view is {fluid} covered by fluid, suction now.",
    "The polyp sits in the {position} of the screen.",
    "Withdrawal time so far is {minutes} minutes.",
    "Retroflexion in the {site} shows the scope shaft.",
    "Close the {tool} slowly around the base of the lesion.",
    "The bowel preparation in the {site} is {prep}.",
]
_FILL = {
    "verb": ["Advancing", "Withdrawing", "Slowly advancing", "Carefully withdrawing"],
    "site": ["cecum", "ascending colon", "transverse colon", "descending colon", "sigmoid colon", "rectum"],
    "light": ["white light", "narrow band imaging"],
    "size": ["small", "diminutive", "five millimetre", "large", "flat"],
    "histology": ["adenomatous", "hyperplastic", "sessile serrated"],
    "tool": ["forceps", "snare", "catheter"],
    "fluid": ["partially", "completely"],
    "position": ["upper left", "upper right", "lower left", "lower right"],
    "minutes": [str(m) for m in range(2, 13)],
    "prep": ["excellent", "adequate", "poor"],
}
_SPEAK = {"<5 mm": "under 5 millimetres", "5-10 mm": "5 to 10 millimetres", ">10 mm": "over 10 millimetres",
          "<5": "under 5", "5-10": "5 to 10", ">10": "over 10", "upper-left": "upper left",
          "upper-right": "upper right", "lower-left": "lower left", "lower-right": "lower right"}


def speakable(text: str) -> str:
    """Text as it should be spoken and transcribed (symbols written out)."""
    for k, v in _SPEAK.items():
        text = text.replace(k, v)
    return text


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


def render_clip(scene: Scene, size: int = 112) -> tuple[np.ndarray, dict[str, list[bool]]]:
    """Render the clip: (T, size, size, 3) uint8 frames and per-frame visibility flags."""
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
    for t in range(n):
        covered = np.zeros_like(view)  # what is drawn over the mucosa in this frame
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
            if scene.fluid != "absent":
                fmask = view if scene.fluid == "complete" else uy > scene.fluid_level + 0.04 * np.sin(5 * ux + 0.7 * t)
                shade_f = (0.88 + 0.17 * nf(ux * 0.8 + 0.05 * t, uy * 0.8))[..., None]
                img = np.where(fmask[..., None], col["fluid"] * shade_f, img)
                covered |= fmask
            img = img * vignette
            if scene.endoscope:
                img, m = _draw_scope_shaft(img, ux, uy)
                covered |= m
        if scene.flush and scene.flush[0] <= t < scene.flush[1]:
            img, m = _draw_flush(img, ux, uy, t)
            covered |= m
            flags["flush"][t] = True
        if scene.tool is not None:
            reach = scene.tool_reach * min(1.0, (t - scene.tool_start + 1) / 3) if t >= scene.tool_start else 0.0
            if reach > 0.04:
                img, m = _draw_tool(img, scene.tool, scene.tool_angle, reach, ux, uy)
                covered |= m
                flags["tool"][t] = True
        if dye is not None:
            flags["dye"][t] = bool((dye & view & ~covered).mean() > 0.003)
        if lesion is not None and lesion.any():
            flags["lesion"][t] = bool((lesion & ~covered).sum() >= 0.5 * lesion.sum())
        img = np.where(view[..., None], img, 0.0)
        frames[t] = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return frames, flags


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
    return {t: ans[t] for t in D.QUESTION_TYPES if t in ans}


def frame_relpath(video_id: str, frame_number: int) -> str:
    return f"frames/{video_id}/{video_id}_{frame_number:06d}.png"


def qa_rows(scene: Scene, flags: dict[str, list[bool]], seed: int) -> dict[str, list[dict]]:
    """REAL-Colon-VQA rows for one clip: {"in": [...], "out": [...]} (no voice/audio yet)."""
    rng = np.random.default_rng([seed, int(scene.video_id.split("-")[-1]), scene.clip_index, 0xA11])
    frames = [frame_relpath(scene.video_id, f) for f in scene.frame_numbers]
    n = scene.num_frames
    out: dict[str, list[dict]] = {"in": [], "out": []}
    for qtype, (short, support) in scene_answers(scene, flags).items():
        long = LONG_ANSWERS[qtype][short][int(rng.integers(len(LONG_ANSWERS[qtype][short])))]
        paraphrase = OUT_TEMPLATES[qtype][int(rng.integers(len(OUT_TEMPLATES[qtype])))]
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


def generate(seed: int, num_videos: int, clips_per_video: int, num_frames: int = 8, frame_size: int = 112,
             priors: dict[str, float] | None = None, out_dir: str | Path | None = None,
             ) -> tuple[dict[str, list[dict]], list[Scene]]:
    """Sample, render and (if `out_dir`) write the frames of every clip; return rows per template."""
    rows: dict[str, list[dict]] = {"in": [], "out": []}
    scenes: list[Scene] = []
    for v in range(num_videos):
        for scene in sample_video(seed, v, clips_per_video, num_frames, priors):
            frames, flags = render_clip(scene, frame_size)
            if out_dir is not None:
                for f, num in zip(frames, scene.frame_numbers):
                    save_png(Path(out_dir) / frame_relpath(scene.video_id, num), f)
            for template, r in qa_rows(scene, flags, seed).items():
                rows[template] += r
            scenes.append(scene)
    return rows, scenes


# ---- stage-1 speech corpus ----------------------------------------------------------------------


def narration_sentences(seed: int, count: int) -> list[str]:
    """`count` distinct template-generated surgical narration sentences."""
    rng = np.random.default_rng([seed, 0x5EED])
    out: list[str] = []
    seen = set()
    tries = 0
    while len(out) < count and tries < count * 50:
        tries += 1
        tpl = _NARRATION[int(rng.integers(len(_NARRATION)))]
        slots = {k: v[int(rng.integers(len(v)))] for k, v in _FILL.items()}
        s = tpl.format(**slots)
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


# ---- the data step ------------------------------------------------------------------------------


@dataclass
class BuildResult:
    """What `build_dataset` wrote and measured (paths are absolute)."""

    data_dir: Path
    frames_root: Path
    audio_root: Path
    files: dict[str, Path]
    summary: D.DataSummary
    split_sizes: dict[str, int]
    group_sizes: dict[str, int]
    corpus_sizes: dict[str, int]
    audio_seconds: dict[str, float]
    heldout_videos: list[str]
    train_voices: list[str]
    heldout_voices: list[str]
    timings: dict[str, float] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)
    # base rows in no split: their clip's split does not use their template (e.g. `out` rows of
    # training clips, `in` rows of held-out clips); counted so nothing disappears unnoticed
    unused_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["summary"] = self.summary.to_dict()
        return json.loads(json.dumps(d, default=str))


def data_stamp(cfg) -> str:
    from . import speech

    payload = {"data": asdict(cfg.data), "seed": cfg.seed, "version": GENERATOR_VERSION,
               "voices": [repr(v) for v in speech.voices(cfg.data.num_voices)]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _source_dir(source: str) -> Path:
    from .config import REPO_ROOT

    p = Path(source).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def _audio_for(text: str, voice, audio_dir: Path, noise_snr_db: float | None, cache: dict) -> tuple[str, float]:
    """Spoken `text` (cached by text + voice, and by SNR when noisy): (path relative to the data dir, seconds)."""
    import soundfile as sf

    from . import speech

    key = (text, voice.name, noise_snr_db)
    if key in cache:
        return cache[key]
    path = speech.synthesize_to_file(text, voice, cache_dir=audio_dir)
    if noise_snr_db is not None:
        path = _noisy_copy(path, noise_snr_db)
    info = sf.info(str(path))
    result = (path.relative_to(audio_dir.parent).as_posix(), round(info.frames / info.samplerate, 3))
    cache[key] = result
    return result


def _link_source_audio(src: Path, rel: str, out: Path) -> tuple[str, float]:
    """Make a real dataset's audio file reachable under the data dir (symlink, else copy)."""
    import soundfile as sf

    target = out / "source_audio" / rel
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.symlink_to((src / rel).resolve())
        except OSError:
            shutil.copyfile(src / rel, target)
    info = sf.info(str(target))
    return f"source_audio/{rel}", round(info.frames / info.samplerate, 3)


def _noisy_copy(clean: Path, snr_db: float) -> Path:
    from . import speech
    from .audio import load_audio, write_wav

    for name in ("or_noise", "mix_at_snr"):
        if not hasattr(speech, name):
            raise RuntimeError(f"data.noise_snr_db is set but surgvqa.speech has no {name}()")
    out = clean.with_name(f"{clean.stem}-snr{snr_db:g}.wav")
    if not out.is_file():
        audio = load_audio(clean)
        rng = np.random.default_rng(int(hashlib.sha256(out.name.encode()).hexdigest()[:8], 16))
        noisy = speech.mix_at_snr(audio, speech.or_noise(len(audio), rng), snr_db)
        tmp = out.with_name(f".tmp-{out.name}")
        write_wav(tmp, noisy)
        tmp.replace(out)
    return out


def build_speech_corpus(question_texts: list[str], answers: list[str], narration: list[str], train_voices: list,
                        heldout_voices: list, audio_dir: Path, seed: int, val_fraction: float,
                        voices_per_text: int, noise_snr_db: float | None, cache: dict) -> list[dict]:
    """Stage-1 speech -> transcript pairs.

    Train/val texts are spoken by training voices only (val = unseen texts); test = the val texts
    spoken by every held-out voice (unseen text and unseen voice), for the ASR evaluation.
    """
    rng = np.random.default_rng([seed, 0xC0DE])
    entries: list[dict] = []
    texts = [("question", t) for t in question_texts] + [("answer", t) for t in answers] + [("narration", t) for t in narration]
    k = 0
    for kind, text in texts:
        spoken = speakable(text)
        is_val = rng.random() < val_fraction
        if is_val:
            speakers = [("val", train_voices[int(rng.integers(len(train_voices)))])] + [("test", v) for v in heldout_voices]
        else:
            picks = rng.permutation(len(train_voices))[:max(1, min(voices_per_text, len(train_voices)))]
            speakers = [("train", train_voices[int(i)]) for i in sorted(picks)]
        for split, voice in speakers:
            audio, secs = _audio_for(spoken, voice, audio_dir, noise_snr_db, cache)
            entries.append({"id": f"sc{k:05d}", "kind": kind, "text": spoken, "voice": voice.name,
                            "audio": audio, "duration_s": secs, "split": split})
            k += 1
    return entries


def _clean_outputs(out: Path) -> None:
    for name in ("frames", "splits", "source_audio"):
        if (out / name).exists():
            shutil.rmtree(out / name)
    for name in ("in_template.jsonl", "out_template.jsonl", "speech_corpus.jsonl", "dataset.json"):
        (out / name).unlink(missing_ok=True)


def build_dataset(cfg, out_dir: str | Path | None = None, verbose: bool = False) -> BuildResult:
    """The data step: rows (synthetic or a real folder) -> splits -> spoken questions -> files.

    Always rebuilds (deterministically); the audio cache under `audio/` is reused.
    Leakage checks run before anything is returned and raise `stratify.LeakageError`.
    """
    from . import speech

    d = cfg.data
    out = Path(out_dir) if out_dir is not None else cfg.data_dir
    out.mkdir(parents=True, exist_ok=True)
    _clean_outputs(out)
    audio_dir = out / "audio"
    audio_dir.mkdir(exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    # 1. rows + frames
    if d.source == "synthetic":
        by_template, scenes = generate(cfg.seed, d.num_videos, d.clips_per_video, d.num_frames, d.frame_size,
                                       d.priors, out_dir=out)
        frames_root = out
        base_rows = by_template["in"] + by_template["out"]
        timings["render_s"] = time.perf_counter() - t0
        num_clips = len(scenes)
    else:
        src = _source_dir(d.source)
        real = D.load_dataset(src, num_frames=d.num_frames)
        frames_root = src
        base_rows = real.rows
        for r in base_rows:  # recorded questions that come with the data are kept (linked in)
            if r.get("audio"):
                r["audio"], r["audio_s"] = _link_source_audio(src, r["audio"], out)
                r.setdefault("voice", "source")
        timings["load_s"] = time.perf_counter() - t0
        num_clips = real.summary.clips
    # 2. splits and voices
    t1 = time.perf_counter()
    all_voices = list(speech.voices(d.num_voices))
    if not 0 <= d.heldout_voices < len(all_voices):
        raise stratify.LeakageError(f"data.heldout_voices={d.heldout_voices} must leave at least one training voice "
                                    f"out of data.num_voices={d.num_voices}")
    train_voices = all_voices[: len(all_voices) - d.heldout_voices]
    heldout_voices = all_voices[len(all_voices) - d.heldout_voices:]
    plan = stratify.plan_splits(base_rows, d, cfg.seed)
    stratify.assign_voices(base_rows, [v.name for v in train_voices], cfg.seed)
    # 3. spoken questions (base rows first; the held-out-voice copies reuse the text cache)
    cache: dict = {}
    by_name = {v.name: v for v in all_voices}
    for r in base_rows:
        if not r.get("audio"):
            r["audio"], r["audio_s"] = _audio_for(r["question"], by_name[r["voice"]], audio_dir, d.noise_snr_db, cache)
    splits = stratify.materialize_splits(base_rows, plan, d, [v.name for v in heldout_voices], cfg.seed)
    for rows in splits.values():
        for r in rows:
            if not r.get("audio"):
                r["audio"], r["audio_s"] = _audio_for(r["question"], by_name[r["voice"]], audio_dir, d.noise_snr_db, cache)
    timings["splits_and_speech_s"] = time.perf_counter() - t1
    # 4. stage-1 speech corpus (texts of the training templates only)
    t2 = time.perf_counter()
    q_texts = sorted({r["question"] for r in base_rows if r["template"] in d.train_templates})
    answers = sorted({r["answer"] for r in base_rows})
    corpus = build_speech_corpus(q_texts, answers, narration_sentences(cfg.seed, d.narration_sentences),
                                 train_voices, heldout_voices, audio_dir, cfg.seed, d.val_fraction,
                                 d.corpus_voices_per_text, d.noise_snr_db, cache)
    timings["speech_corpus_s"] = time.perf_counter() - t2
    # 5. leakage checks, then write
    stratify.check_leakage(splits, heldout_voices=[v.name for v in heldout_voices], train_templates=d.train_templates,
                           test_templates=d.test_templates, corpus=corpus)
    t3 = time.perf_counter()
    files: dict[str, Path] = {}
    # every QA row with its voice and audio (for a real source: frame paths relative to that folder)
    files["in_template"] = D.write_jsonl(out / "in_template.jsonl", [r for r in base_rows if r["template"] == "in"])
    files["out_template"] = D.write_jsonl(out / "out_template.jsonl", [r for r in base_rows if r["template"] == "out"])
    for name, rows in splits.items():
        files[name] = D.write_jsonl(out / "splits" / f"{name}.jsonl", rows)
    files["speech_corpus"] = D.write_jsonl(out / "speech_corpus.jsonl", corpus)
    # 6. read everything back through the validating loader (what later notebooks will see)
    rel_frames = "." if frames_root == out else str(frames_root)
    caches: dict = {}
    for name in splits:
        D.load_jsonl(files[name], frames_root, num_frames=d.num_frames, audio_root=out, _caches=caches)
    summary = D.load_dataset(out, num_frames=d.num_frames, audio_root=out, frames_root=frames_root,
                             _caches=caches).summary
    timings["write_and_validate_s"] = time.perf_counter() - t3
    timings["total_s"] = time.perf_counter() - t0
    audio_seconds = {name: round(sum(r["audio_s"] for r in rows), 2) for name, rows in splits.items()}
    audio_seconds["speech_corpus"] = round(sum(e["duration_s"] for e in corpus), 2)
    meta = {
        "source": d.source,
        "frames_root": rel_frames,
        "audio_root": ".",
        "stamp": data_stamp(cfg),
        "generator_version": GENERATOR_VERSION,
        "heldout_videos": plan.heldout_videos,
        "train_voices": [v.name for v in train_voices],
        "heldout_voices": [v.name for v in heldout_voices],
        "train_templates": list(d.train_templates),
        "test_templates": list(d.test_templates),
        "split_sizes": {k: len(v) for k, v in splits.items()},
        "unused_rows": len(base_rows) - sum(1 for rows in splits.values() for r in rows if r["group"] != "heldout_voice"),
        "summary": summary.to_dict(),
    }
    meta["summary"]["root"] = rel_frames
    files["dataset"] = out / "dataset.json"
    files["dataset"].write_text(json.dumps(meta, indent=2) + "\n")
    groups: dict[str, int] = {}
    for rows in splits.values():
        for r in rows:
            groups[r["group"]] = groups.get(r["group"], 0) + 1
    corpus_sizes: dict[str, int] = {}
    for e in corpus:
        corpus_sizes[e["split"]] = corpus_sizes.get(e["split"], 0) + 1
    rates = {"clips_per_s": num_clips / max(timings.get("render_s", timings.get("load_s", 0.0)), 1e-9),
             "qa_rows_per_s": len(base_rows) / max(timings.get("render_s", timings.get("load_s", 0.0)), 1e-9)}
    used = sum(1 for rows in splits.values() for r in rows if r["group"] != "heldout_voice")
    result = BuildResult(out, frames_root, out, files, summary, {k: len(v) for k, v in splits.items()}, groups,
                         corpus_sizes, audio_seconds, plan.heldout_videos, [v.name for v in train_voices],
                         [v.name for v in heldout_voices], {k: round(v, 3) for k, v in timings.items()}, rates,
                         unused_rows=len(base_rows) - used)
    if verbose:
        print(summary)
        print(f"splits {result.split_sizes}  groups {groups}  corpus {corpus_sizes}  in {timings['total_s']:.1f}s")
    return result


def ensure_dataset(cfg, data_dir: str | Path | None = None) -> BuildResult | None:
    """Build the data step unless `dataset.json` already matches these params; None if reused."""
    out = Path(data_dir) if data_dir is not None else cfg.data_dir
    meta = out / "dataset.json"
    if meta.is_file():
        try:
            if json.loads(meta.read_text()).get("stamp") == data_stamp(cfg):
                return None
        except json.JSONDecodeError:
            pass
    return build_dataset(cfg, out_dir=out)


def load_speech_corpus(cfg, split: str | None = None, data_dir: str | Path | None = None) -> list[dict]:
    """Stage-1 corpus entries (audio paths relative to the data dir), optionally one split."""
    out = Path(data_dir) if data_dir is not None else cfg.data_dir
    ensure_dataset(cfg, out)
    rows = [json.loads(line) for line in (out / "speech_corpus.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if split is None or r["split"] == split]


def load_base(cfg, data_dir: str | Path | None = None) -> D.Dataset:
    """Every QA row of the run (both templates, before splitting) as a validated `Dataset`."""
    out = Path(data_dir) if data_dir is not None else cfg.data_dir
    ensure_dataset(cfg, out)
    meta = json.loads((out / "dataset.json").read_text())
    frames_root = Path(meta["frames_root"]) if Path(meta["frames_root"]).is_absolute() else out / meta["frames_root"]
    return D.load_dataset(out, num_frames=cfg.data.num_frames, audio_root=out, frames_root=frames_root)


def corpus_table(corpus: list[dict]):
    """Stage-1 corpus: utterances and audio seconds per kind x split."""
    import pandas as pd

    df = pd.DataFrame(corpus)
    table = df.pivot_table(index="kind", columns="split", values="duration_s", aggfunc=["count", "sum"], fill_value=0)
    table.columns = [f"{'utterances' if a == 'count' else 'seconds'}:{b}" for a, b in table.columns]
    return table.round(1)


def data_metrics(result: BuildResult, splits: dict, base: D.Dataset, corpus: list[dict],
                 bench: dict | None = None) -> dict[str, Any]:
    """The numbers notebook 01 reports in metrics/01_data.json."""
    df = D.rows_frame(base.rows)
    mb = D.majority_baseline(df)
    split_rows = {s: (ds.rows if hasattr(ds, "rows") else ds) for s, ds in splits.items()}
    return {
        "source": str(result.frames_root),
        "rows_total": base.summary.rows,
        "rows_per_template": base.summary.per_template,
        "videos": base.summary.videos,
        "clips": base.summary.clips,
        "question_types": len(base.summary.per_type),
        "split_rows": {s: len(r) for s, r in split_rows.items()},
        "split_clips": {s: len({D.clip_key(x) for x in r}) for s, r in split_rows.items()},
        "split_videos": {s: sorted({x["video_id"] for x in r}) for s, r in split_rows.items()},
        "test_groups": {g: sum(1 for x in split_rows["test"] if x["group"] == g)
                        for g in sorted({x["group"] for x in split_rows["test"]})},
        "unused_rows": result.unused_rows,
        "train_voices": result.train_voices,
        "heldout_voices": result.heldout_voices,
        "class_balance": {
            "presence_negative_share": {k: round(v, 4) for k, v in D.presence_balance(df).items()},
            "majority_rate": {t: round(float(v), 4) for t, v in mb["majority_rate"].items()},
            "majority_answer": {t: str(v) for t, v in mb["majority_answer"].items()},
            "mean_majority_rate": round(float(mb["majority_rate"].mean()), 4),
        },
        "audio_seconds": {s: round(sum(x.get("audio_s") or 0.0 for x in r), 2) for s, r in split_rows.items()}
        | {"speech_corpus": round(sum(e["duration_s"] for e in corpus), 2)},
        "speech_corpus": {s: sum(1 for e in corpus if e["split"] == s) for s in ("train", "val", "test")},
        "coverage_missing": stratify.coverage(split_rows),
        "leakage_checks": "passed",
        "timings_s": result.timings,
        "benchmark": bench or {},
    }


# ---- benchmark ----------------------------------------------------------------------------------


def data_benchmark(cfg, num_videos: int = 2, speech_texts: int = 20) -> dict[str, float]:
    """Generation rate (QA rows/s, clips/s incl. PNG writing) and speech rate (audio s per s)."""
    import tempfile

    from . import speech

    d = cfg.data
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rows, scenes = generate(cfg.seed + 1000, num_videos, d.clips_per_video, d.num_frames, d.frame_size,
                                d.priors, out_dir=tmp)
        dt = time.perf_counter() - t0
    n_rows = len(rows["in"]) + len(rows["out"])
    texts = sorted({r["question"] for r in rows["in"] + rows["out"]})[:speech_texts]
    vs = speech.voices(d.num_voices)
    t1 = time.perf_counter()
    secs = sum(len(speech.synthesize(t, vs[i % len(vs)])) for i, t in enumerate(texts)) / 16000
    st = time.perf_counter() - t1
    return {
        "frame_size": d.frame_size,
        "clips": len(scenes),
        "qa_rows": n_rows,
        "clips_per_s": round(len(scenes) / dt, 2),
        "qa_rows_per_s": round(n_rows / dt, 1),
        "frames_per_s": round(len(scenes) * d.num_frames / dt, 1),
        "speech_audio_s_per_s": round(secs / st, 1),
        "speech_utterances": len(texts),
    }
