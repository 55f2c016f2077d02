"""The REAL-Colon-VQA / SurgViVQA schema: question types, closed answer vocabularies, row fields.

Constants only, so every layer (answers, loaders, generator, evaluation) can share them.
"""
from __future__ import annotations


QUESTION_TYPES: tuple[str, ...] = (
    "mucosa_visibility",
    "tool_catheter_check",
    "endoscope_visibility",
    "nbi_status",
    "lighting_mode",
    "blue_dye_presence",
    "occlusion_check",
    "fluid_occlusion_level",
    "scope_motion",
    "scope_forward_motion",
    "scope_backward_motion",
    "scope_outside",
    "flush_action",
    "scope_motion_type",
    "tool_identification",
    "lesion_histology_extended",
    "lesion_size_range",
    "lesion_site",
    "lesion_screen_position",
    "lesion_motion_direction",
)

_YES_NO = ["yes", "no"]

# The closed short-answer vocabulary of each question type, defined once here; evaluation
# normalises predictions against it. Real REAL-Colon-VQA answers outside it are counted in
# `DataSummary.out_of_vocab`, never rejected.
ANSWER_VOCAB: dict[str, list[str]] = {
    "mucosa_visibility": _YES_NO,
    "tool_catheter_check": _YES_NO,
    "endoscope_visibility": _YES_NO,
    "nbi_status": _YES_NO,
    "lighting_mode": ["white light", "NBI"],
    "blue_dye_presence": _YES_NO,
    "occlusion_check": _YES_NO,
    "fluid_occlusion_level": ["absent", "partial", "complete"],
    "scope_motion": _YES_NO,
    "scope_forward_motion": _YES_NO,
    "scope_backward_motion": _YES_NO,
    "scope_outside": _YES_NO,
    "flush_action": _YES_NO,
    "scope_motion_type": ["advancing", "withdrawing", "stable", "lateral"],
    "tool_identification": ["forceps", "snare", "catheter"],
    "lesion_histology_extended": ["adenoma", "hyperplastic", "sessile serrated"],
    "lesion_size_range": ["<5", "5-10", ">10"],
    "lesion_site": ["cecum", "ascending", "transverse", "descending", "sigma", "rectum"],
    "lesion_screen_position": ["upper-left", "upper-right", "lower-left", "lower-right"],
    "lesion_motion_direction": ["up", "down", "left", "right", "stable"],
}

# Types whose answer says whether something is there; their "absent" answer is the negative class.
PRESENCE_TYPES: dict[str, str] = {
    "tool_catheter_check": "no",
    "endoscope_visibility": "no",
    "nbi_status": "no",
    "blue_dye_presence": "no",
    "occlusion_check": "no",
    "fluid_occlusion_level": "absent",
    "scope_outside": "no",
    "flush_action": "no",
}

TEMPLATES = ("in", "out")

TEMPLATE_FILES = {"in": "in_template.jsonl", "out": "out_template.jsonl"}

REQUIRED_FIELDS = (
    "id", "video_id", "frames", "frame_numbers", "question", "question_type",
    "support_frames", "support_ratio", "answer", "short_answer",
)

OPTIONAL_FIELDS = ("template", "audio", "voice", "total_frames", "support_percentage", "split", "group")

FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
