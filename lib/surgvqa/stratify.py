"""Train / val / test splits and the leakage checks that guard them.

* test  = whole held-out videos, asked with the `data.test_templates` wording, in two parts:
          - the dev-test (`data.heldout_video_ids`, else the `data.heldout_videos` videos before the final
            test in sorted order): every row is there twice, spoken by a training voice (`group="heldout_video"`)
            and by a held-out voice (`group="heldout_voice"`, id suffixed "_hv"), so the voice effect is a paired
            comparison on the same clips and questions; with a held-out speech engine (`data.heldout_engine`),
            a third time by one of its voices (`group="heldout_engine"`, id suffixed "_he"); and the held-out-voice
            row once more in a wording no training pool uses (`wording.HELDOUT_WORDINGS`, `group="heldout_wording"`,
            id suffixed "_hw"), so the wording effect is paired too;
          - the final test (`data.final_test_video_ids`, else the last `data.final_test_videos` videos): unseen
            video and unseen voice, each row once, spoken by a held-out voice (`group="final_test"`); only the
            reference run scores it (`eval.score_final_test`).
* val   = a question-type-stratified share (`data.val_fraction`) of the clips of the training
          videos, `data.train_templates` wording, training voices (`group="in_domain"`); each row again in a
          val wording (`wording.VAL_WORDINGS`, the same voice, `group="val_wording"`, id suffixed "_vw"), on which
          recipes for new wordings are chosen (never part of the eval loss).
* train = the remaining clips of the training videos, `data.train_templates`, training voices.

Whole clips are assigned (never single QA rows), so no clip crosses splits; clips that share a QA row
(`data.qa_key`: the two wordings of one row, should a dataset give them different clips) go together, so
both wordings of one QA row always land in the same split.

Held-out wording (train and test templates disjoint): a test wording also in training is a leak, unless the
dataset itself uses that wording in both its template files (`shared_wordings`; REAL-Colon-VQA does for 2
of its 15 `out` wordings). Such test rows follow `data.shared_wordings` (`apply_shared_wordings`):
"score_apart" marks them `seen_wording: true` (the evaluation scores them apart), "exclude" leaves them out
of the test split (counted). `check_leakage` runs whenever splits are built or loaded and raises `LeakageError`.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from .answers import normalize_short
from .data import clip_key, qa_key, row_key
from .schema import QUESTION_TYPES
from .wording import HELDOUT_WORDINGS, VAL_WORDINGS

SPLIT_NAMES = ("train", "val", "test")  # the manifests the data step writes
GROUPS = {"train": "train", "val": "in_domain"}  # test rows: heldout_video | heldout_voice | final_test
FINAL_TEST = "final_test"
HELDOUT_ENGINE_SUFFIX = "_he"
HELDOUT_VOICE_SUFFIX = "_hv"
HELDOUT_WORDING_SUFFIX = "_hw"
VAL_WORDING_SUFFIX = "_vw"
# groups that re-ask another group's rows -> (id suffix, the group re-asked)
RESPOKEN = {"heldout_voice": (HELDOUT_VOICE_SUFFIX, "heldout_video"), "heldout_engine": (HELDOUT_ENGINE_SUFFIX, "heldout_video"),
            "heldout_wording": (HELDOUT_WORDING_SUFFIX, "heldout_video"), "val_wording": (VAL_WORDING_SUFFIX, "in_domain")}


class LeakageError(RuntimeError):
    """A clip, video, voice or question wording crosses splits it must not cross."""


@dataclass
class SplitPlan:
    heldout_videos: list[str]  # the dev-test
    train_videos: list[str]
    clip_split: dict[str, str]  # clip key -> train | val | test
    final_test_videos: list[str] = field(default_factory=list)


def plan_splits(rows: list[dict], data_cfg, seed: int) -> SplitPlan:
    """Assign every clip to train/val/test (see the module docstring)."""
    videos = sorted({r["video_id"] for r in rows})
    for key in ("heldout_video_ids", "final_test_video_ids"):
        unknown = sorted(set(getattr(data_cfg, key)) - set(videos))
        if unknown:
            raise LeakageError(f"data.{key} names videos not in the data: {unknown} (videos: {videos})")
    final = sorted(data_cfg.final_test_video_ids) or _last([v for v in videos if v not in data_cfg.heldout_video_ids],
                                                            data_cfg.final_test_videos)
    dev = sorted(data_cfg.heldout_video_ids) or _last([v for v in videos if v not in final], data_cfg.heldout_videos)
    heldout = dev + final
    train_videos = [v for v in videos if v not in heldout]
    if not train_videos:
        raise LeakageError(f"holding out the dev-test {dev} and the final test {final} (data.heldout_videos / "
                           f"heldout_video_ids, data.final_test_videos / final_test_video_ids) leaves no training "
                           f"video (videos: {videos})")
    unit = clip_units(rows)  # clip -> the unit assigned whole (itself, unless a QA row links it to another clip)
    unit_types: dict[str, set[str]] = defaultdict(set)
    clip_video: dict[str, str] = {}
    for r in rows:
        k = clip_key(r)
        unit_types[unit[k]].add(r["question_type"])
        clip_video[k] = r["video_id"]
    clip_split = {k: "test" for k, v in clip_video.items() if v in heldout}
    train_units = sorted({unit[k] for k, v in clip_video.items() if v not in heldout})
    val = choose_val_clips({u: unit_types[u] for u in train_units}, data_cfg.val_fraction, seed)
    clip_split.update({k: ("val" if unit[k] in val else "train") for k, v in clip_video.items() if v not in heldout})
    return SplitPlan(dev, train_videos, clip_split, final)


def _last(videos: list[str], n: int) -> list[str]:
    return videos[len(videos) - n:] if n > 0 else []


def clip_units(rows: list[dict]) -> dict[str, str]:
    """Clip key -> the smallest clip key of its unit: clips linked by a QA row (`qa_key`, both wordings of one
    row) are one unit, assigned to a split whole. A dataset whose wordings of a row share their clip (the
    synthetic one, REAL-Colon-VQA) has one clip per unit."""
    parent: dict[str, str] = {}

    def find(k: str) -> str:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    first_clip: dict[tuple[str, str], str] = {}
    for r in rows:
        k = clip_key(r)
        parent.setdefault(k, k)
        other = first_clip.setdefault(qa_key(r), k)
        a, b = find(k), find(other)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return {k: find(k) for k in parent}


def choose_val_clips(clip_types: dict[str, set[str]], fraction: float, seed: int) -> set[str]:
    """Question-type-stratified clip sample of round(fraction * clips) clips.

    First, rarest types first, each type with two or more clips gets at least one val clip; then
    clips are added greedily so that every type's val share stays closest to `fraction` (a clip
    whose types are already well represented waits). A clip is never taken if it holds the last
    training clip of any type. Ties are broken in a seeded random order.
    """
    rng = np.random.default_rng([seed, 0x5A1])
    clips = sorted(clip_types)
    if fraction <= 0 or len(clips) < 2:
        return set()
    target = min(len(clips) - 1, max(1, round(fraction * len(clips))))
    order = [clips[int(i)] for i in rng.permutation(len(clips))]
    totals = Counter(t for c in clips for t in clip_types[c])
    remaining = Counter(totals)
    in_val: Counter = Counter()
    val: set[str] = set()

    def can_take(c: str) -> bool:
        return c not in val and all(remaining[t] > 1 for t in clip_types[c])

    def take(c: str) -> None:
        val.add(c)
        for t in clip_types[c]:
            remaining[t] -= 1
            in_val[t] += 1

    def load(c: str) -> float:  # how over-represented val would be after taking c
        return max(((in_val[t] + 1) / (fraction * totals[t]) for t in clip_types[c]), default=0.0)

    for t in sorted(totals, key=lambda t: (totals[t], t)):
        if totals[t] >= 2 and in_val[t] == 0 and len(val) < target:
            cands = [c for c in order if t in clip_types[c] and can_take(c)]
            if cands:
                take(min(cands, key=load))
    while len(val) < target:
        cands = [c for c in order if can_take(c)]
        if not cands:
            break
        take(min(cands, key=load))
    return val


def assign_voices(rows: list[dict], train_voice_names: list[str], seed: int) -> None:
    """Give rows without a voice a training voice, balanced: a shuffled cycle over the voices."""
    if not train_voice_names:
        raise LeakageError("no training voices to assign")
    rng = np.random.default_rng([seed, 0x701CE])
    cycle: list[str] = []
    for r in rows:
        if r.get("voice"):
            continue
        if not cycle:
            cycle = [train_voice_names[int(i)] for i in rng.permutation(len(train_voice_names))]
        r["voice"] = cycle.pop()


def materialize_splits(rows: list[dict], plan: SplitPlan, data_cfg, heldout_voice_names: list[str],
                       seed: int, engine_voice_names: Iterable[str] = (),
                       train_voice_names: Iterable[str] = ()) -> dict[str, list[dict]]:
    """Copies of the rows per split with `split` and `group`; dev-test rows also re-spoken by held-out voices and by
    the held-out engine's voices."""
    rng = np.random.default_rng([seed, 0x7E57])
    engine_rng = np.random.default_rng([seed, 0xE61E])  # its own stream: the other draws stay what they were
    wording_rng = np.random.default_rng([seed, 0x3047D])  # and the new wordings theirs
    engine_voice_names, train_voice_names = list(engine_voice_names), list(train_voice_names)
    engine_cycle: list[str] = []
    out: dict[str, list[dict]] = {s: [] for s in SPLIT_NAMES}
    templates = {"train": set(data_cfg.train_templates), "val": set(data_cfg.train_templates),
                 "test": set(data_cfg.test_templates)}
    cycle: list[str] = []
    for r in rows:
        split = plan.clip_split[clip_key(r)]
        if r["template"] not in templates[split]:
            continue
        final = r["video_id"] in plan.final_test_videos
        if split == "test" and heldout_voice_names and not cycle:
            cycle = [heldout_voice_names[int(i)] for i in rng.permutation(len(heldout_voice_names))]
        if final:  # unseen video, unseen voice: once, by a held-out voice
            out[split].append(_respoken(r, r["id"], cycle.pop() if heldout_voice_names else r["voice"], FINAL_TEST))
            continue
        out[split].append(dict(r, split=split, group=GROUPS.get(split, "heldout_video")))
        if split == "val":  # the same row in a wording no training pool uses, by the same voice (a recording that
            # came with the data: by a training voice)
            voice = r["voice"] if r["voice"] in train_voice_names else train_voice_names[int(wording_rng.integers(len(train_voice_names)))]
            out[split].append(_reworded(dict(r, voice=voice), VAL_WORDINGS, wording_rng, "val_wording", split))
        if split == "test" and heldout_voice_names:
            out[split].append(_respoken(r, r["id"] + HELDOUT_VOICE_SUFFIX, cycle.pop(), "heldout_voice"))
            # the held-out-voice row again in a held-out wording: the two differ only in the wording
            out[split].append(_reworded(out[split][-1], HELDOUT_WORDINGS, wording_rng, "heldout_wording", split))
        if split == "test" and engine_voice_names:
            if not engine_cycle:
                engine_cycle = [engine_voice_names[int(i)] for i in engine_rng.permutation(len(engine_voice_names))]
            out[split].append(_respoken(r, r["id"] + HELDOUT_ENGINE_SUFFIX, engine_cycle.pop(), "heldout_engine"))
    return out


def _respoken(row: dict, row_id: str, voice: str, group: str, split: str = "test") -> dict:
    """A copy of `row` asked by `voice` (its audio made again by the data step)."""
    out = dict(row, id=row_id, voice=voice, split=split, group=group)
    out.pop("audio", None)
    out.pop("audio_s", None)
    return out


def _reworded(row: dict, family: dict[str, list[str]], rng: np.random.Generator, group: str, split: str) -> dict:
    """A copy of `row` (a val row or a held-out-voice row) asked in a wording of `family` for its type, drawn from
    `rng`, by the same voice; its id is the base row's with the group's suffix."""
    suffix, _ = RESPOKEN[group]
    base_id = row["id"].removesuffix(HELDOUT_VOICE_SUFFIX)
    options = family[row["question_type"]]
    out = _respoken(row, base_id + suffix, row["voice"], group, split)
    out["question"] = options[int(rng.integers(len(options)))]
    return out


def shared_wordings(rows: Iterable[dict]) -> dict[str, dict[str, int]]:
    """Wordings (`normalize_short` of the question) the dataset itself uses in both templates: wording -> rows
    per template. The dataset's own property (REAL-Colon-VQA asks some `out` questions in the `in` wording)."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        counts[normalize_short(r["question"])][r.get("template")] += 1
    return {w: {t: c[t] for t in ("in", "out")} for w, c in sorted(counts.items()) if c["in"] and c["out"]}


def held_out_wording(train_templates: Iterable[str], test_templates: Iterable[str]) -> bool:
    """Whether the split holds out the test wording: no template is both trained on and tested."""
    return not (set(train_templates) & set(test_templates))


def apply_shared_wordings(splits: dict[str, list[dict]], shared: Iterable[str], rule: str, train_templates: Iterable[str],
                          test_templates: Iterable[str]) -> dict[str, int]:
    """Test rows of a held-out-wording split whose wording is in train/val and shared by the dataset's template
    files (`shared_wordings`), in place: `rule` "score_apart" marks them `seen_wording: True`, "exclude" removes
    them (both voices' copies) from the test split. Returns {"test_rows_seen_wording", "test_rows_excluded"}
    (rows of the test split, both groups). Any other test wording in training is left for `check_leakage`."""
    out = {"test_rows_seen_wording": 0, "test_rows_excluded": 0}
    if not held_out_wording(train_templates, test_templates):
        return out  # the test wording is trained on by design: nothing to set apart
    seen = {normalize_short(r["question"]) for s in ("train", "val") for r in splits.get(s, [])} & set(shared)
    hit = [normalize_short(r["question"]) in seen for r in splits.get("test", [])]
    if rule == "exclude":
        splits["test"] = [r for r, h in zip(splits["test"], hit) if not h]
        out["test_rows_excluded"] = sum(hit)
    elif rule == "score_apart":
        for r, h in zip(splits.get("test", []), hit):
            if h:
                r["seen_wording"] = True
        out["test_rows_seen_wording"] = sum(hit)
    else:
        raise ValueError(f"data.shared_wordings must be 'score_apart' or 'exclude', got {rule!r}")
    return out


def check_leakage(splits: dict[str, list[dict]], heldout_voices: Iterable[str], train_templates: Iterable[str],
                  test_templates: Iterable[str], corpus: list[dict] | None = None, shared: Iterable[str] = (),
                  rule: str = "score_apart") -> dict[str, int]:
    """Raise `LeakageError` if anything crosses splits; return what was checked (counts).

    Rows are identified by `row_key` (no duplicates in a split) and a QA row by `qa_key` (none in two splits).
    With held-out wording, a test wording in train/val (or the speech corpus) must be one of `shared`, the
    wordings the dataset uses in both its template files, and its test rows must follow `rule`: marked
    `seen_wording: true` ("score_apart"), or absent ("exclude"); `seen_wording` only on such rows."""
    problems: list[str] = []
    heldout_voices = set(heldout_voices)
    train_templates, test_templates = set(train_templates), set(test_templates)

    def sample(items) -> str:
        items = sorted(items)
        return ", ".join(map(str, items[:5])) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")

    for s, rows in splits.items():
        dup = [k for k, c in Counter(row_key(r) for r in rows).items() if c > 1]
        if dup:
            problems.append(f"duplicate rows (video_id, id, template) in {s}: {sample(dup)}")
    keys = {s: {qa_key(r) for r in rows} for s, rows in splits.items()}
    clips = {s: {clip_key(r) for r in rows} for s, rows in splits.items()}
    videos = {s: {r["video_id"] for r in rows} for s, rows in splits.items()}
    names = sorted(splits)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = keys[a] & keys[b]
            if both:
                problems.append(f"QA rows (video_id, id) in both {a} and {b}: {sample(both)}")
            both = clips[a] & clips[b]
            if both:
                problems.append(f"clips in both {a} and {b}: {sample(both)}")
    seen_videos = videos.get("train", set()) | videos.get("val", set())
    if videos.get("test", set()) & seen_videos:
        problems.append(f"test videos also in train/val: {sample(videos['test'] & seen_videos)}")
    seen_voices = {r.get("voice") for s in ("train", "val") for r in splits.get(s, [])}
    if heldout_voices & seen_voices:
        problems.append(f"held-out voices used in train/val: {sample(heldout_voices & seen_voices)}")
    for s in ("train", "val"):
        bad = {r.get("template") for r in splits.get(s, [])} - train_templates
        if bad:
            problems.append(f"{s} has templates {sorted(bad)} outside data.train_templates {sorted(train_templates)}")
    bad = {r.get("template") for r in splits.get("test", [])} - test_templates
    if bad:
        problems.append(f"test has templates {sorted(bad)} outside data.test_templates {sorted(test_templates)}")
    test_questions = {normalize_short(r["question"]) for r in splits.get("test", [])}
    shared = set(shared)
    marked = [r for r in splits.get("test", []) if r.get("seen_wording")]
    held_out = held_out_wording(train_templates, test_templates)
    if held_out:  # no test question may be trained on, but for the wordings the dataset shares between its files
        seen_q = {normalize_short(r["question"]) for s in ("train", "val") for r in splits.get(s, [])}
        leaked = (test_questions & seen_q) - shared
        if leaked:
            problems.append(f"test question wordings also in train/val: {sample(leaked)} (not wordings the dataset "
                            "uses in both its template files)")
        seen_shared = test_questions & seen_q & shared
        if seen_shared and rule == "exclude":
            problems.append(f"test rows with wordings seen in training, which data.shared_wordings: exclude leaves out: "
                            f"{sample(seen_shared)}")
        unmarked = {normalize_short(r["question"]) for r in splits.get("test", []) if not r.get("seen_wording")} & seen_shared
        if unmarked and rule == "score_apart":
            problems.append(f"test rows with wordings seen in training not marked seen_wording: {sample(unmarked)}")
        marked = [r for r in marked if normalize_short(r["question"]) not in seen_shared]
    if marked:
        problems.append(f"test rows marked seen_wording whose wording is not a shared wording seen in training: "
                        f"{sample({r['id'] for r in marked})}")
    # the new wordings (VAL_WORDINGS, HELDOUT_WORDINGS) are heard by no training pool: not the rows, not the corpus
    new = {normalize_short(r["question"]) for s in ("val", "test") for r in splits.get(s, [])
           if r.get("group") in ("val_wording", "heldout_wording")}
    trained = {normalize_short(r["question"]) for r in splits.get("train", [])}
    trained |= {normalize_short(e["text"]) for e in corpus or [] if e["split"] == "train"}
    if new & trained:
        problems.append(f"new wordings (val_wording / heldout_wording rows) also in a training pool: {sample(new & trained)}")
    if corpus is not None:
        bad = {e["voice"] for e in corpus if e["split"] in ("train", "val") and e["voice"] in heldout_voices}
        if bad:
            problems.append(f"speech corpus train/val entries use held-out voices: {sample(bad)}")
        if held_out:
            both = ({normalize_short(e["text"]) for e in corpus} & test_questions) - shared
            if both:
                problems.append(f"speech corpus contains test question wordings: {sample(both)}")
    if problems:
        raise LeakageError("split leakage:\n  " + "\n  ".join(problems))
    return {"rows": sum(len(v) for v in splits.values()), "clips": sum(len(v) for v in clips.values()),
            "videos": len(set().union(*videos.values())) if videos else 0}


def all_rows(splits) -> list[dict]:
    """Rows of every split (train, val, test) in one list; accepts Datasets or row lists."""
    return [r for s in SPLIT_NAMES if s in splits for r in (splits[s].rows if hasattr(splits[s], "rows") else splits[s])]


def coverage(splits: dict[str, list[dict]]) -> dict[str, list[str]]:
    """Question types missing from each split."""
    return {s: [t for t in QUESTION_TYPES if t not in {r["question_type"] for r in rows}] for s, rows in splits.items()}


