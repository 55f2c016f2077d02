"""How questions, answers and narration are worded: the `in` templates, natural `out` paraphrases,
long answers, stage-1 narration, spoken forms of symbols, and the corpus the embedded tokenizer learns.
"""
from __future__ import annotations

import functools
import re

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

# Wordings no training pool of any stage uses (`in` and `out` templates above are the training wordings; the
# tokenizer's corpus leaves these out too). VAL_WORDINGS re-ask val rows (recipes are chosen on them);
# HELDOUT_WORDINGS re-ask dev-test rows (the `heldout_wording` split). Each differs from every training wording, and
# from the other family, in more than one word (`word_distance`; tests/test_wordings.py).
VAL_WORDINGS: dict[str, list[str]] = {
    "mucosa_visibility": ["Is the colon wall free of debris so we can inspect it?",
                          "Would you say the mucosal surface is clearly on view?",
                          "Is there a good look at clean tissue in this part?"],
    "tool_catheter_check": ["Is any accessory out of the scope at the moment?",
                            "Has an instrument been advanced into view?",
                            "Do you notice a device or a catheter on screen?"],
    "endoscope_visibility": ["Is the shaft of the colonoscope on screen right now?",
                             "Are we seeing our own instrument looking back at us?",
                             "Does the image include the endoscope body?"],
    "nbi_status": ["Did someone turn NBI on for this part?",
                   "Is the narrow band filter engaged at the moment?",
                   "Are we imaging with the NBI light right now?"],
    "lighting_mode": ["Which illumination is on, NBI or white light?",
                      "What light are we inspecting with at the moment?",
                      "Tell me the current imaging light."],
    "blue_dye_presence": ["Did we stain the mucosa with blue here?",
                          "Is indigo carmine coating the surface?",
                          "Any blue colouring on the tissue at the moment?"],
    "occlusion_check": ["Is the tip pushed up against the mucosa?",
                        "Are we in a red out at the moment?",
                        "Did the view go red because of wall contact?"],
    "fluid_occlusion_level": ["To what extent is liquid hiding the mucosa?",
                              "Is the picture clear of fluid, partly covered, or fully submerged?",
                              "How much water is in the way right now?"],
    "scope_motion": ["Is the colonoscope in motion at the moment?",
                     "Does the view shift as the clip plays?",
                     "Is the endoscopist moving the instrument?"],
    "scope_forward_motion": ["Are we going deeper toward the cecum?",
                             "Is the tip advancing through the lumen?",
                             "Is the endoscopist pushing the colonoscope inward?"],
    "scope_backward_motion": ["Are we coming back out toward the rectum?",
                              "Is the endoscopist retracting the colonoscope?",
                              "Is the tip being withdrawn through the lumen?"],
    "scope_outside": ["Is the endoscope still outside the patient?",
                      "Are we seeing the procedure room rather than bowel?",
                      "Has the tip left the body at this point?"],
    "flush_action": ["Is someone washing the mucosa with water?",
                     "Are we rinsing the surface at the moment?",
                     "Is there irrigation going on right now?"],
    "scope_motion_type": ["Which movement is the colonoscope making at the moment?",
                          "Is the tip going in, coming out, moving sideways, or staying put?",
                          "Characterise the motion of the endoscope."],
    "tool_identification": ["What accessory has been passed through the channel?",
                            "Which instrument is the endoscopist holding out?",
                            "Identify the device on screen."],
    "lesion_histology_extended": ["What is this polyp likely to be under the microscope?",
                                  "Which histological class fits this lesion?",
                                  "What tissue type would pathology report for this polyp?"],
    "lesion_size_range": ["What is the approximate diameter of the lesion?",
                          "How large would you estimate this polyp to be?",
                          "Is the lesion small, medium, or large in millimetres?"],
    "lesion_site": ["Which colonic segment holds this lesion?",
                    "In what region of the colon does this polyp sit?",
                    "Name the part of the bowel where the lesion is found."],
    "lesion_screen_position": ["Which quarter of the display holds the polyp?",
                               "Is the lesion toward the top or bottom, left or right of the view?",
                               "Point out where the polyp appears on the monitor."],
    "lesion_motion_direction": ["Toward which side does the lesion travel on the monitor?",
                                "Which direction does the polyp move in the picture?",
                                "Is the lesion sliding up, down, left, right, or holding still on screen?"],
}

HELDOUT_WORDINGS: dict[str, list[str]] = {
    "mucosa_visibility": ["Can the tissue surface be made out in this stretch of video?",
                          "Is the bowel lining nice and clear to inspect?",
                          "Do we get an unobstructed look at the mucosa?",
                          "Is the mucosa well seen and free of residue?"],
    "tool_catheter_check": ["Is there an accessory poking into the field?",
                            "Are any instruments deployed at this point?",
                            "Can an instrument be seen on the monitor?",
                            "Has the endoscopist brought out a device?"],
    "endoscope_visibility": ["Is the scope looking back at itself?",
                             "Can the body of the colonoscope be seen on the monitor?",
                             "Does the instrument shaft show up in the picture?",
                             "Are we in retroflexion with the scope shaft on view?"],
    "nbi_status": ["Is NBI enabled for this segment?",
                   "Have we flipped to narrow band light?",
                   "Is the image in narrow band mode at this point?",
                   "Is the blue green NBI filter on?"],
    "lighting_mode": ["Are we under NBI or standard white light?",
                      "Which imaging light is being used for this view?",
                      "What kind of illumination does the image use?",
                      "Is this white light or narrow band imaging?"],
    "blue_dye_presence": ["Has the surface been stained blue?",
                          "Is dye spread over the mucosa at this point?",
                          "Can traces of indigo be seen on the wall?",
                          "Was chromoendoscopy done on this part?"],
    "occlusion_check": ["Is the lens buried in the mucosa?",
                        "Has the view turned red from the tip hugging the wall?",
                        "Are we too close to the wall to see anything?",
                        "Is contact with the mucosa blocking the image?"],
    "fluid_occlusion_level": ["Is the view obscured by liquid, and by how much?",
                              "How much of the picture is under water?",
                              "Is there no fluid, some fluid, or a view fully under fluid?",
                              "Rate how much liquid blocks the mucosa."],
    "scope_motion": ["Is the instrument moving or holding still?",
                     "Does the camera travel during this segment?",
                     "Is there movement of the endoscope over the clip?",
                     "Is the view changing because the scope moves?"],
    "scope_forward_motion": ["Is the scope heading deeper into the bowel?",
                             "Are we pushing in toward the cecum?",
                             "Is the instrument being inserted further?",
                             "Is the camera travelling forward through the lumen?"],
    "scope_backward_motion": ["Is the instrument being drawn back?",
                              "Are we pulling out toward the anus?",
                              "Is the endoscopist backing the scope out?",
                              "Is the camera retreating through the lumen?"],
    "scope_outside": ["Is the scope out in the open air?",
                      "Has the colonoscope been removed from the body?",
                      "Are we seeing the room instead of the patient?",
                      "Is the tip of the endoscope outside at this moment?"],
    "flush_action": ["Is a water jet rinsing the wall?",
                     "Has the endoscopist started washing this area?",
                     "Can we see irrigation in progress?",
                     "Is fluid being squirted to clean the mucosa?"],
    "scope_motion_type": ["How would you describe the scope's movement?",
                          "Is the instrument going in, pulling out, drifting sideways, or steady?",
                          "What is the motion of the colonoscope over this segment?",
                          "Which way is the scope travelling, if at all?"],
    "tool_identification": ["What device has come out of the scope?",
                            "Which accessory is the endoscopist using?",
                            "Tell me which instrument is on the monitor.",
                            "Is the instrument forceps, a snare, or a catheter?"],
    "lesion_histology_extended": ["What histology do you expect for this growth?",
                                  "What would the biopsy of this polyp show?",
                                  "Classify the lesion's likely tissue type.",
                                  "Is this growth adenomatous, hyperplastic, or serrated?"],
    "lesion_size_range": ["What size class does the growth belong to?",
                          "How many millimetres across is the lesion?",
                          "Estimate the diameter of the polyp.",
                          "Is this growth under five, five to ten, or over ten millimetres?"],
    "lesion_site": ["In which segment of the bowel was the growth found?",
                    "What colonic region is the polyp located in?",
                    "Which section of the colon contains the lesion?",
                    "Where along the colon does this growth sit?"],
    "lesion_screen_position": ["Which part of the monitor shows the growth?",
                               "Where on the display is the lesion located?",
                               "Is the polyp top left, top right, bottom left, or bottom right?",
                               "In what area of the picture does the growth appear?"],
    "lesion_motion_direction": ["Where is the growth heading on the monitor?",
                                "Does the lesion travel up, down, left or right in the picture?",
                                "What direction does the growth take across the display?",
                                "Which way is the polyp moving on the monitor?"],
}


def _words(text: str) -> tuple[str, ...]:
    return tuple(re.findall(r"[a-z0-9]+", text.lower()))


def word_distance(a: str, b: str) -> int:
    """Word-level edit distance between two wordings (lower case, punctuation dropped)."""
    x, y = _words(a), _words(b)
    row = list(range(len(y) + 1))
    for i, wx in enumerate(x, 1):
        prev, row[0] = row[0], i
        for j, wy in enumerate(y, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (wx != wy))
    return row[-1]


def within_one_word(x: tuple[str, ...], y: tuple[str, ...]) -> bool:
    """`word_distance <= 1` on word tuples, in one pass: the same words, one word swapped, or one word more."""
    if len(x) > len(y):
        x, y = y, x
    if len(y) - len(x) > 1:
        return False
    i = next((i for i, (a, b) in enumerate(zip(x, y)) if a != b), len(x))
    return x[i + (len(x) == len(y)):] == y[i + 1:]


def training_wordings(qtype: str) -> list[str]:
    """Every wording of `qtype` a training pool may use: the `in` template and the `out` paraphrases."""
    return [IN_TEMPLATES[qtype], *OUT_TEMPLATES[qtype]]


# More training wordings: per type, question frames x the ways to name what is asked about, plus a few ways to
# open and close a question. `out_wordings(qtype, k)` is the type's first k `out` wordings: the three paraphrases
# above, then a seeded order of the generated ones (`data.out_wordings`).
_YES_NO_FRAMES = ("Is there {x}{where}?", "Can you see {x}{where}?", "Do we have {x}{where}?", "Do you see {x}{where}?",
                  "Is {x} visible{where}?", "Would you say there is {x}{where}?", "Are we seeing {x}{where}?",
                  "Any sign of {x}{where}?")
_STATE_FRAMES = ("Would you say {x}{where}?", "Can you confirm {x}{where}?", "Is it true that {x}{where}?",
                 "Do you think {x}{where}?", "Tell me whether {x}{where}.", "Could you check if {x}{where}?",
                 "Do we know if {x}{where}?")
_WH_FRAMES = ("Can you tell me {x}{where}?", "Tell me {x}{where}.", "I would like to know {x}{where}.",
              "Could you say {x}{where}?", "Do you know {x}{where}?")
_WHERE = ("", " in this clip", " here", " in these frames", " right now", " in this video", " on the screen")
_GENERATED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # type -> (frames, what is asked about)
    "mucosa_visibility": (_YES_NO_FRAMES, ("clean mucosa", "a clear view of the mucosa", "clean colon lining",
                                           "a clean bowel wall", "well cleaned mucosa")),
    "tool_catheter_check": (_YES_NO_FRAMES, ("a tool", "an instrument", "a catheter", "a tool or a catheter",
                                             "an instrument in the field", "something out of the working channel")),
    "endoscope_visibility": (_YES_NO_FRAMES, ("the endoscope itself", "the scope shaft", "the colonoscope in the image",
                                              "the endoscope in its own view")),
    "nbi_status": (_STATE_FRAMES, ("narrow band imaging is on", "NBI is active", "the scope is in NBI mode",
                                   "narrow band imaging is switched on", "we are using NBI")),
    "lighting_mode": (_WH_FRAMES, ("what lighting mode is on", "which light the scope uses", "what light is used",
                                   "which imaging mode is active", "what the illumination is")),
    "blue_dye_presence": (_YES_NO_FRAMES, ("blue dye", "blue stain on the mucosa", "chromoendoscopy dye",
                                           "dye on the colon wall", "blue staining")),
    "occlusion_check": (_STATE_FRAMES, ("the view is blocked by wall contact", "the scope is touching the wall",
                                        "the tip is against the mucosa", "there is a red out", "the lens is on the wall")),
    "fluid_occlusion_level": (_WH_FRAMES, ("how much fluid covers the view", "how severe the fluid occlusion is",
                                           "how much liquid hides the mucosa", "how badly fluid blocks the view",
                                           "whether fluid covers none, part, or all of the view")),
    "scope_motion": (_STATE_FRAMES, ("the scope is moving", "the camera is moving", "the colonoscope changes position",
                                     "the scope is in motion")),
    "scope_forward_motion": (_STATE_FRAMES, ("the scope is moving forward", "the colonoscope is advancing",
                                             "we are going deeper", "the scope is being pushed in",
                                             "the camera moves forward")),
    "scope_backward_motion": (_STATE_FRAMES, ("the scope is moving backward", "the colonoscope is withdrawing",
                                              "we are pulling back", "the scope is being pulled out",
                                              "the camera moves backward")),
    "scope_outside": (_STATE_FRAMES, ("the scope is outside the patient", "the camera is out of the body",
                                      "the colonoscope is out", "we are outside the patient")),
    "flush_action": (_YES_NO_FRAMES, ("flushing", "a water jet", "water being sprayed", "irrigation of the mucosa",
                                      "a flush of water")),
    "scope_motion_type": (_WH_FRAMES, ("how the scope is moving", "what kind of motion the scope makes",
                                       "which way the camera moves", "what the scope motion is",
                                       "whether the scope advances, withdraws, moves sideways or holds still")),
    "tool_identification": (_WH_FRAMES, ("which tool is visible", "what instrument is used", "which tool is in view",
                                         "what device is out of the channel", "whether the tool is forceps, a snare or a catheter")),
    "lesion_histology_extended": (_WH_FRAMES, ("what the histology of the lesion is", "what kind of polyp this is",
                                               "what the lesion is histologically", "which polyp type this is",
                                               "what pathology this lesion likely has")),
    "lesion_size_range": (_WH_FRAMES, ("how big the lesion is", "what size the polyp is", "the size range of the lesion",
                                       "how large the polyp is in millimetres", "which size band the lesion falls in")),
    "lesion_site": (_WH_FRAMES, ("which colon segment the lesion is in", "where in the colon the polyp is",
                                 "what part of the colon this lesion is in", "which segment holds the polyp",
                                 "the location of the lesion in the colon")),
    "lesion_screen_position": (_WH_FRAMES, ("where on the screen the lesion is", "which corner the polyp is in",
                                            "where the lesion appears in the image", "which quadrant shows the polyp",
                                            "the screen position of the lesion")),
    "lesion_motion_direction": (_WH_FRAMES, ("which way the lesion moves on the screen", "where the polyp drifts",
                                             "in which direction the lesion moves", "how the polyp moves in the image",
                                             "the direction the lesion travels on screen")),
}


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:]


@functools.cache
def generated_wordings(qtype: str) -> tuple[str, ...]:
    """The type's generated training wordings in a seeded order (distinct; none within one word of a val or
    held-out wording, nor of another type's training wordings)."""
    frames, things = _GENERATED[qtype]
    out = list(dict.fromkeys(_sentence(f.format(x=x, where=w)) for f in frames for x in things for w in _WHERE
                             if not (w and w.split()[-1] in x.split())  # not "on the screen" twice
                             and not (x.endswith(" in") and w.startswith(" in "))))  # nor "is in in this clip"
    kept_out = [w for ws in (*VAL_WORDINGS.values(), *HELDOUT_WORDINGS.values()) for w in ws]
    kept_out += [w for other in QUESTION_TYPES if other != qtype for w in (IN_TEMPLATES[other], *OUT_TEMPLATES[other])]
    kept_words = [_words(k) for k in kept_out]  # compared by words: 2,000 wordings x 400 kept ones per type

    def near_a_kept_one(words: tuple[str, ...]) -> bool:
        return any(within_one_word(words, k) for k in kept_words)

    out = [w for w in out if not near_a_kept_one(_words(w))
           and w not in OUT_TEMPLATES[qtype] and w != IN_TEMPLATES[qtype]]
    order = np.random.default_rng([QUESTION_TYPES.index(qtype), 0x30D5]).permutation(len(out))
    return tuple(out[int(i)] for i in order)


def out_wordings(qtype: str, k: int) -> list[str]:
    """The first `k` `out` wordings of `qtype`: the three hand-written paraphrases, then generated ones."""
    return (list(OUT_TEMPLATES[qtype]) + list(generated_wordings(qtype)))[:k]


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
    texts += [w for qtype in QUESTION_TYPES for w in generated_wordings(qtype)]  # what data.out_wordings may train on
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
