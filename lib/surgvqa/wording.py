"""How questions, answers and narration are worded: the `in` templates, natural `out` paraphrases,
long answers, stage-1 narration, spoken forms of symbols, and the corpus the embedded tokenizer learns.
"""
from __future__ import annotations

import numpy as np

from .schema import ANSWER_VOCAB, QUESTION_TYPES


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


def domain_texts(seed: int = 0, narration: int = 400) -> list[str]:
    """Every domain text the embedded default will read or write: questions, paraphrases, answers, narration."""
    texts = list(IN_TEMPLATES.values())
    texts += [p for paraphrases in OUT_TEMPLATES.values() for p in paraphrases]
    texts += [a for per_type in LONG_ANSWERS.values() for answers in per_type.values() for a in answers]
    texts += [a for answers in ANSWER_VOCAB.values() for a in answers]
    texts += narration_sentences(seed, narration)
    return texts


def clip_caption(answers: dict[str, str]) -> str:
    """A clip's dense caption: every answer of the clip, in schema order, named by its question type
    ("lighting mode: NBI; blue dye presence: no; ..."). One target that names every attribute: the
    base VLM's stand-in for pretraining on described video."""
    unknown = sorted(set(answers) - set(QUESTION_TYPES))
    if unknown:
        raise ValueError(f"clip_caption: unknown question types {unknown}")
    return "; ".join(f"{t.replace('_', ' ')}: {answers[t]}" for t in QUESTION_TYPES if t in answers)
