"""A REAL-Colon-VQA-shaped folder, generated (no annotation text copied): what a researcher points `data.source` at.

    <root>/in_template.jsonl      one row per QA, template wording; no `template`, `audio` or `voice` fields
    <root>/out_template.jsonl     the same QA rows (same video_id, id, frames, answers), natural wording
    <root>/frames/<video>/<video>_<frame>.jpg   JPEG frames, referred to by bare ids ("002-003_1004")

The properties of the real files that the data step must serve:
- every (video_id, id) of the in file is also in the out file (two wordings of one QA row), and ids restart
  in every video (`qa_000001` in each);
- 15 of the 20 question types occur, one wording per type per file, and `SHARED_TYPES`' out wording is their in
  wording (the dataset asks 2 of its 15 out questions in the in wording);
- tool questions are rare (`tool_identification` on one clip of a training video), lesion types on some clips;
- the test video (`TEST_VIDEO`, 002-004 as in the paper) is single-class for `lighting_mode` ("NBI") and
  `blue_dye_presence` ("no");
- some short answers lie outside `schema.ANSWER_VOCAB` (`OUT_OF_VOCAB`);
- no audio: the data step speaks every question.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

VIDEOS = ("002-001", "002-002", "002-003", "002-004")
TEST_VIDEO = "002-004"
CLIPS_PER_VIDEO = 4
NUM_FRAMES, STRIDE = 8, 4
FRAME_SIZE = (64, 48)  # width x height: not square, like the real frames

# (in wording, out wording); the 15 types REAL-Colon-VQA asks (scope_motion, scope_outside and three lesion
# types never occur)
WORDINGS = {
    "mucosa_visibility": ("Is the mucosa visible?", "Can the colon wall be seen clearly here?"),
    "tool_catheter_check": ("Is a tool or catheter present?", "Do you see any instrument in the field?"),
    "endoscope_visibility": ("Is endoscope body visible?", "Is endoscope body visible?"),
    "nbi_status": ("Is NBI active?", "Has the narrow band light been switched on?"),
    "lighting_mode": ("What is the lighting mode?", "Which light is the scope using?"),
    "blue_dye_presence": ("Is blue dye present?", "Has any blue stain been sprayed?"),
    "occlusion_check": ("Is the view occluded?", "Is the view occluded?"),
    "fluid_occlusion_level": ("What is the fluid occlusion level?", "How much fluid covers the view?"),
    "scope_forward_motion": ("Is the scope moving forward?", "Is the endoscope being pushed in?"),
    "scope_backward_motion": ("Is the scope moving backward?", "Is the endoscope being pulled back?"),
    "flush_action": ("Is flushing performed?", "Is water being sprayed to clean the lens?"),
    "scope_motion_type": ("What is the scope motion type?", "How is the endoscope moving?"),
    "tool_identification": ("Which tool is used?", "What instrument is that?"),
    "lesion_histology_extended": ("What is the lesion histology?", "What kind of polyp is this?"),
    "lesion_size_range": ("What is the lesion size range?", "How large is the polyp?"),
}
SHARED_TYPES = ("endoscope_visibility", "occlusion_check")  # out wording == in wording (the dataset's own)
TOOL_CLIP = ("002-002", 1)  # the one clip with a tool out (tool types are rare)
LESION_CLIPS = {("002-001", 2), ("002-002", 3), ("002-003", 0), ("002-003", 2), (TEST_VIDEO, 1)}
OUT_OF_VOCAB = {("002-003", 3, "fluid_occlusion_level"): "none", ("002-001", 1, "scope_motion_type"): "retroflexion"}


def clip_answers(video: str, clip: int, rng: np.random.Generator) -> dict[str, str]:
    """The short answer of every type asked about one clip."""
    test = video == TEST_VIDEO
    nbi = True if test else bool(rng.random() < 0.4)
    motion = ["advancing", "withdrawing", "stable", "lateral"][int(rng.integers(4))]
    tool = (video, clip) == TOOL_CLIP
    answers = {
        "mucosa_visibility": "yes" if rng.random() < 0.8 else "no",
        "tool_catheter_check": "yes" if tool else "no",
        "endoscope_visibility": "yes" if rng.random() < 0.3 else "no",
        "nbi_status": "yes" if nbi else "no",
        "lighting_mode": "NBI" if nbi else "white light",
        "blue_dye_presence": "no" if test or rng.random() < 0.6 else "yes",
        "occlusion_check": "yes" if rng.random() < 0.3 else "no",
        "fluid_occlusion_level": ["absent", "partial", "complete"][int(rng.integers(3))],
        "scope_forward_motion": "yes" if motion == "advancing" else "no",
        "scope_backward_motion": "yes" if motion == "withdrawing" else "no",
        "flush_action": "yes" if rng.random() < 0.25 else "no",
        "scope_motion_type": motion,
    }
    if tool:
        answers["tool_identification"] = "snare"
    if (video, clip) in LESION_CLIPS:
        answers["lesion_histology_extended"] = ["adenoma", "hyperplastic", "sessile serrated"][int(rng.integers(3))]
        answers["lesion_size_range"] = ["<5", "5-10", ">10"][int(rng.integers(3))]
    for (v, c, qtype), answer in OUT_OF_VOCAB.items():
        if (v, c) == (video, clip):
            answers[qtype] = answer
    return answers


def _frame(rng: np.random.Generator, nbi: bool) -> np.ndarray:
    w, h = FRAME_SIZE
    base = np.array([60, 140, 120] if nbi else [190, 90, 80], np.float32)
    noise = rng.normal(0, 18, (h, w, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    lumen = (((xx - w / 2) ** 2 + (yy - h / 2) ** 2) < (min(w, h) / 5) ** 2)[..., None]
    return np.clip(np.where(lumen, base * 0.2, base) + noise, 0, 255).astype(np.uint8)


def build(root: str | Path, seed: int = 0, clips_per_video: int = CLIPS_PER_VIDEO) -> Path:
    """Write the folder under `root` (created) and return it; deterministic for `seed`. Fewer clips per video
    (at least 2: the tool clip and the test video's lesion clip are clip 1) make a smaller folder of the same kind."""
    if clips_per_video < 2:
        raise ValueError(f"clips_per_video must be >= 2, got {clips_per_video}")
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = {"in": [], "out": []}
    for video in VIDEOS:
        (root / "frames" / video).mkdir(parents=True, exist_ok=True)
        qa = 0
        for clip in range(clips_per_video):
            answers = clip_answers(video, clip, rng)
            start = 1000 + 64 * clip + int(rng.integers(8))
            numbers = [start + STRIDE * k for k in range(NUM_FRAMES)]
            frames = [f"{video}_{n}" for n in numbers]  # bare ids, resolved under frames/<video>/
            for frame_id in frames:
                Image.fromarray(_frame(rng, answers["lighting_mode"] == "NBI")).save(
                    root / "frames" / video / f"{frame_id}.jpg", quality=85)
            for qtype, short in answers.items():
                qa += 1
                support = int(rng.integers(1, NUM_FRAMES + 1))
                common = {"id": f"qa_{qa:06d}", "video_id": video, "frames": frames, "frame_numbers": numbers,
                          "question_type": qtype, "support_frames": support, "support_ratio": support / NUM_FRAMES,
                          "support_percentage": round(100 * support / NUM_FRAMES, 1), "total_frames": NUM_FRAMES,
                          "answer": f"The {qtype.replace('_', ' ')} here is {short}.", "short_answer": short}
                for i, template in enumerate(("in", "out")):
                    rows[template].append({**common, "question": WORDINGS[qtype][i]})
    for template, file_rows in rows.items():
        with open(root / f"{template}_template.jsonl", "w", encoding="utf-8") as f:
            for row in file_rows:
                f.write(json.dumps(row) + "\n")
    return root
