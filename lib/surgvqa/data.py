"""REAL-Colon-VQA / SurgViVQA schema, validating JSONL loaders, and EDA helpers.

One JSONL row per QA, with the REAL-Colon-VQA fields

    id, video_id, frames[8], frame_numbers, question, question_type,
    support_frames, support_ratio, answer (long form), short_answer

plus `template` ("in" = template wording, "out" = natural paraphrase), `audio` (wav path
relative to the audio root; may be absent for real data) and `voice`. Real data folders hold
`in_template.jsonl` / `out_template.jsonl` next to their frame images; the synthetic generator
writes the same layout, so both go through `load_dataset`.

Validation never drops a row silently: a bad row raises `DataError` naming the file, the line
and the field; everything that was read is counted in `DataSummary`.
"""
from __future__ import annotations

import base64
import io
import json
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator

import numpy as np

# ---- schema ---------------------------------------------------------------------------------

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


class DataError(ValueError):
    """A data file that cannot be used. `.file`, `.line` (1-based) and `.field` say where."""

    def __init__(self, file: str | Path, line: int | None, field_name: str | None, problem: str):
        self.file, self.line, self.field, self.problem = str(file), line, field_name, problem
        where = f"{file}" + (f":{line}" if line is not None else "")
        what = f" field '{field_name}':" if field_name else ""
        super().__init__(f"{where}:{what} {problem}")


def normalize_answer(text: str) -> str:
    """Lower-case, trim, collapse whitespace, drop a trailing full stop."""
    return " ".join(str(text).strip().lower().rstrip(".").split())


def in_vocab(question_type: str, short_answer: str) -> bool:
    vocab = {normalize_answer(a) for a in ANSWER_VOCAB.get(question_type, [])}
    return normalize_answer(short_answer) in vocab


def clip_key(row: dict) -> str:
    """Identity of the 8-frame clip a row asks about: video id + first frame number."""
    return f"{row['video_id']}:{row['frame_numbers'][0]}"


def row_key(row: dict) -> str:
    """Unique key of a QA row (real data reuses ids between its in/out files)."""
    return f"{row['id']}|{row.get('template', '?')}"


# ---- summary --------------------------------------------------------------------------------


@dataclass
class DataSummary:
    """What a load read: counts only, so nothing can disappear unnoticed."""

    root: str = ""
    files: dict[str, int] = field(default_factory=dict)  # file -> rows read
    rows: int = 0
    blank_lines: int = 0
    videos: int = 0
    clips: int = 0
    per_type: dict[str, int] = field(default_factory=dict)
    per_template: dict[str, int] = field(default_factory=dict)
    with_audio: int = 0
    without_audio: int = 0
    out_of_vocab: dict[str, int] = field(default_factory=dict)  # type -> rows with an answer outside ANSWER_VOCAB
    frames_checked: int = 0
    audio_checked: int = 0

    @classmethod
    def of(cls, rows: list[dict], root: str | Path = "", files: dict[str, int] | None = None,
           blank_lines: int = 0, frames_checked: int = 0, audio_checked: int = 0) -> "DataSummary":
        oov = Counter(r["question_type"] for r in rows if not in_vocab(r["question_type"], r["short_answer"]))
        per_type = Counter(r["question_type"] for r in rows)
        return cls(
            root=str(root),
            files=dict(files or {}),
            rows=len(rows),
            blank_lines=blank_lines,
            videos=len({r["video_id"] for r in rows}),
            clips=len({clip_key(r) for r in rows}),
            per_type={t: per_type[t] for t in QUESTION_TYPES if per_type[t]},
            per_template=dict(sorted(Counter(r.get("template", "?") for r in rows).items())),
            with_audio=sum(1 for r in rows if r.get("audio")),
            without_audio=sum(1 for r in rows if not r.get("audio")),
            out_of_vocab={t: oov[t] for t in QUESTION_TYPES if oov[t]},
            frames_checked=frames_checked,
            audio_checked=audio_checked,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"read {self.rows} QA rows from {len(self.files)} file(s) under {self.root}"]
        lines += [f"  {name}: {n} rows" for name, n in self.files.items()]
        lines.append(f"  videos={self.videos} clips={self.clips} templates={self.per_template} blank_lines={self.blank_lines}")
        lines.append(f"  audio: {self.with_audio} rows with, {self.without_audio} without; "
                     f"{self.audio_checked} audio files and {self.frames_checked} frame files checked")
        lines.append(f"  question types: {len(self.per_type)}/{len(QUESTION_TYPES)}")
        if self.out_of_vocab:
            lines.append(f"  short answers outside ANSWER_VOCAB: {self.out_of_vocab}")
        return "\n".join(lines)


# ---- dataset --------------------------------------------------------------------------------


@dataclass
class Dataset:
    """Validated rows plus the roots their relative paths resolve against.

    `rows[i]["frames"]` are POSIX paths relative to `root`; `rows[i]["audio"]` (if any) is
    relative to `audio_root` (defaults to `root`).
    """

    rows: list[dict]
    root: Path
    audio_root: Path | None = None
    summary: DataSummary = field(default_factory=DataSummary)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]

    def frame_paths(self, row: dict) -> list[Path]:
        return [Path(self.root) / f for f in row["frames"]]

    def audio_path(self, row: dict) -> Path | None:
        return Path(self.audio_root or self.root) / row["audio"] if row.get("audio") else None

    def load_frames(self, row: dict, size: int | None = None) -> np.ndarray:
        """The clip as (T, H, W, 3) uint8, optionally resized to size x size."""
        return load_frames(self.frame_paths(row), size=size)

    def load_audio(self, row: dict) -> np.ndarray:
        from .audio import load_audio

        path = self.audio_path(row)
        if path is None:
            raise DataError(self.root, None, "audio", f"row {row['id']} has no audio")
        return load_audio(path)

    def select(self, **where: Any) -> "Dataset":
        """Rows whose fields equal the given values (a list/tuple/set value means 'one of')."""
        def ok(row):
            return all(row.get(k) in v if isinstance(v, (list, tuple, set)) else row.get(k) == v for k, v in where.items())

        rows = [r for r in self.rows if ok(r)]
        return Dataset(rows, self.root, self.audio_root, DataSummary.of(rows, self.root))


def load_frames(paths: Iterable[str | Path], size: int | None = None) -> np.ndarray:
    from PIL import Image

    out = []
    for p in paths:
        with Image.open(p) as im:
            im = im.convert("RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            out.append(np.asarray(im, dtype=np.uint8))
    return np.stack(out)


# ---- loading and validation -----------------------------------------------------------------


def _safe_relpath(value: str, file: Path, line: int, field_name: str) -> str:
    """A POSIX path relative to its root; absolute paths and `..` escapes are errors."""
    if not isinstance(value, str) or not value.strip():
        raise DataError(file, line, field_name, f"expected a non-empty relative path string, got {value!r}")
    p = value.replace("\\", "/")
    if p.startswith("/") or PurePosixPath(p).is_absolute() or (len(p) > 1 and p[1] == ":"):
        raise DataError(file, line, field_name, f"path {value!r} must be relative to the dataset root")
    norm = os.path.normpath(p).replace("\\", "/")
    if norm == ".." or norm.startswith("../"):
        raise DataError(file, line, field_name, f"path {value!r} escapes the dataset root")
    return norm


def resolve_frame(root: Path, name: str, video_id: str, file: Path, line: int, field_name: str,
                  check_files: bool = True, _cache: dict | None = None) -> str:
    """Find a frame file; return its path relative to `root`.

    `name` may be a relative path with an extension (our layout) or a bare REAL-Colon-VQA frame
    id such as "002-003_3806", looked up as frames/<video_id>/<id>.<ext>, <video_id>/<id>.<ext>,
    frames/<id>.<ext> and <id>.<ext> for the usual image extensions.
    """
    rel = _safe_relpath(name, file, line, field_name)
    if not check_files:
        return rel
    cache = _cache if _cache is not None else {}
    key = (rel, video_id)
    if key in cache:
        return cache[key]
    candidates = [rel]
    if PurePosixPath(rel).suffix.lower() not in FRAME_EXTENSIONS:
        vid = _safe_relpath(str(video_id), file, line, "video_id")
        for base in (f"frames/{vid}/{rel}", f"{vid}/{rel}", f"frames/{rel}", rel):
            candidates += [base + ext for ext in FRAME_EXTENSIONS + tuple(e.upper() for e in FRAME_EXTENSIONS)]
    for cand in candidates:
        path = root / cand
        if path.is_file():
            if path.stat().st_size == 0:
                raise DataError(file, line, field_name, f"frame file {path} is empty")
            cache[key] = cand
            return cand
    raise DataError(file, line, field_name, f"frame file not found: {name!r} (looked for {root / candidates[0]}"
                    + (f" and {len(candidates) - 1} other names" if len(candidates) > 1 else "") + ")")


def validate_row(row: Any, file: Path, line: int, num_frames: int | None = 8) -> dict:
    """Check one parsed row's fields and types; returns it (normalised copy)."""
    if not isinstance(row, dict):
        raise DataError(file, line, None, f"expected a JSON object, got {type(row).__name__}")
    for name in REQUIRED_FIELDS:
        if name not in row:
            raise DataError(file, line, name, "missing required field")
    row = dict(row)
    for name in ("id", "video_id", "question", "answer", "short_answer"):
        if not isinstance(row[name], str) or (name != "answer" and not row[name].strip()):
            raise DataError(file, line, name, f"expected a non-empty string, got {row[name]!r}")
    if row["question_type"] not in QUESTION_TYPES:
        raise DataError(file, line, "question_type", f"unknown question type {row['question_type']!r} "
                        f"(known: {', '.join(QUESTION_TYPES)})")
    frames, numbers = row["frames"], row["frame_numbers"]
    if not isinstance(frames, list) or not all(isinstance(f, str) for f in frames):
        raise DataError(file, line, "frames", "expected a list of frame paths/ids")
    if num_frames is not None and len(frames) != num_frames:
        raise DataError(file, line, "frames", f"expected {num_frames} frames, got {len(frames)}")
    if not isinstance(numbers, list) or len(numbers) != len(frames) or not all(
            isinstance(n, int) and not isinstance(n, bool) for n in numbers):
        raise DataError(file, line, "frame_numbers", f"expected {len(frames)} integers (one per frame), got {numbers!r}")
    sf = row["support_frames"]
    if isinstance(sf, list):  # some exports list the supporting frame indices
        sf = len(sf)
    if not isinstance(sf, int) or isinstance(sf, bool) or not 0 <= sf <= len(frames):
        raise DataError(file, line, "support_frames", f"expected an integer in 0..{len(frames)}, got {row['support_frames']!r}")
    sr = row["support_ratio"]
    if not isinstance(sr, (int, float)) or isinstance(sr, bool) or not (0.0 <= float(sr) <= 1.0) or math.isnan(sr):
        raise DataError(file, line, "support_ratio", f"expected a number in [0, 1], got {sr!r}")
    for name in ("audio", "voice"):
        if row.get(name) is not None and not isinstance(row[name], str):
            raise DataError(file, line, name, f"expected a string, got {row[name]!r}")
    if "template" in row and row["template"] not in TEMPLATES:
        raise DataError(file, line, "template", f"expected one of {list(TEMPLATES)}, got {row['template']!r}")
    return row


def load_jsonl(path: str | Path, root: str | Path | None = None, template: str | None = None,
               num_frames: int | None = 8, check_files: bool = True, audio_root: str | Path | None = None,
               check_audio: bool = True, _caches: dict | None = None) -> tuple[list[dict], dict[str, int]]:
    """Read and validate one JSONL file. Returns (rows, counts) with counts rows/blank_lines/...

    `root` (default: the file's folder) is where frame paths resolve; audio paths resolve against
    `audio_root` (default `root`). `template` is the file's template ("in"/"out"): rows without a
    `template` field get it, rows that disagree are an error. Frame entries are rewritten as
    paths relative to `root` (bare REAL-Colon-VQA frame ids are resolved to their files).
    """
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    audio_root = Path(audio_root) if audio_root is not None else root
    caches = _caches if _caches is not None else {}
    frame_cache = caches.setdefault("frames", {})
    audio_ok: set = caches.setdefault("audio", set())
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(path, None, None, "file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(path, None, None, f"not UTF-8 text ({e})") from None
    rows: list[dict] = []
    seen_ids: dict[str, int] = {}
    counts = {"rows": 0, "blank_lines": 0}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            counts["blank_lines"] += 1
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(path, lineno, None, f"malformed JSON ({e.msg} at column {e.colno})") from None
        row = validate_row(obj, path, lineno, num_frames=num_frames)
        if template is not None:
            if row.setdefault("template", template) != template:
                raise DataError(path, lineno, "template", f"row says {row['template']!r} but the file holds {template!r} rows")
        if row["id"] in seen_ids:
            raise DataError(path, lineno, "id", f"duplicate id {row['id']!r} (first on line {seen_ids[row['id']]})")
        seen_ids[row["id"]] = lineno
        row["frames"] = [resolve_frame(root, f, row["video_id"], path, lineno, "frames", check_files, frame_cache)
                         for f in row["frames"]]
        if row.get("audio"):
            row["audio"] = _safe_relpath(row["audio"], path, lineno, "audio")
            if check_audio and row["audio"] not in audio_ok:
                from .audio import AudioError, load_audio

                try:
                    load_audio(audio_root / row["audio"])
                except AudioError as e:
                    raise DataError(path, lineno, "audio", f"unreadable audio: {e}") from None
                audio_ok.add(row["audio"])
        rows.append(row)
    counts["rows"] = len(rows)
    counts["frames_checked"] = len(frame_cache) if check_files else 0
    counts["audio_checked"] = len(audio_ok)
    return rows, counts


def load_dataset(root: str | Path, files: Iterable[str] | None = None, num_frames: int | None = 8,
                 check_files: bool = True, audio_root: str | Path | None = None,
                 check_audio: bool = True, frames_root: str | Path | None = None,
                 _caches: dict | None = None) -> Dataset:
    """Load a REAL-Colon-VQA style folder: `in_template.jsonl` and/or `out_template.jsonl` + frames.

    `files` defaults to whichever of the two template files exist (at least one must); a file
    named `<template>_template.jsonl` sets its rows' template, other names keep the rows' own.
    Frames resolve against `frames_root` (default `root`), audio against `audio_root` (default
    the frames root).
    """
    root = Path(root)
    frames_root = Path(frames_root) if frames_root is not None else root
    if not root.is_dir():
        raise DataError(root, None, None, "dataset folder not found")
    if files is None:
        files = [name for name in TEMPLATE_FILES.values() if (root / name).is_file()]
        if not files:
            raise DataError(root, None, None, f"no {' or '.join(TEMPLATE_FILES.values())} in the dataset folder")
    rows: list[dict] = []
    per_file: dict[str, int] = {}
    blank = 0
    caches: dict = _caches if _caches is not None else {}
    counts: dict = {}
    for name in files:
        template = next((t for t, f in TEMPLATE_FILES.items() if Path(name).name == f), None)
        file_rows, counts = load_jsonl(root / name, frames_root, template=template, num_frames=num_frames,
                                       check_files=check_files, audio_root=audio_root,
                                       check_audio=check_audio, _caches=caches)
        for r in file_rows:
            r.setdefault("template", "in")
        rows += file_rows
        per_file[str(name)] = len(file_rows)
        blank += counts["blank_lines"]
    summary = DataSummary.of(rows, root, per_file, blank, counts.get("frames_checked", 0), counts.get("audio_checked", 0))
    return Dataset(rows, frames_root, Path(audio_root) if audio_root is not None else None, summary)


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    """Deterministic JSONL: one compact object per line in the rows' own key order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


# ---- EDA (used by notebook 01 and the error analysis) -----------------------------------------


def rows_frame(rows: Iterable[dict]):
    """Rows as a pandas DataFrame with the columns the EDA needs (+ clip key)."""
    import pandas as pd

    records = []
    for r in rows:
        records.append({
            "id": r["id"], "video_id": r["video_id"], "clip": clip_key(r), "question_type": r["question_type"],
            "template": r.get("template", "?"), "short_answer": r["short_answer"], "question": r["question"],
            "voice": r.get("voice"), "split": r.get("split"), "group": r.get("group"),
            "support_ratio": r["support_ratio"], "audio_s": r.get("audio_s"),
        })
    return pd.DataFrame.from_records(records)


def type_distribution(df):
    """Rows per question type x template (all 20 types listed, zeros kept)."""
    import pandas as pd

    table = pd.crosstab(df["question_type"], df["template"]).reindex(list(QUESTION_TYPES), fill_value=0)
    table["total"] = table.sum(axis=1)
    return table


def answer_distribution(df):
    """Per type and short answer: count and share within the type."""
    counts = df.groupby(["question_type", "short_answer"]).size().rename("count").reset_index()
    counts["share"] = counts["count"] / counts.groupby("question_type")["count"].transform("sum")
    order = {t: i for i, t in enumerate(QUESTION_TYPES)}
    return counts.sort_values(["question_type", "count"], key=lambda s: s.map(order) if s.name == "question_type" else -s)


def majority_baseline(df):
    """Per type: rows, distinct answers, majority answer and its rate (a constant-answer baseline).

    A type with rate 1.0 never varies (REAL-Colon-VQA's lighting_mode is always "NBI"), so its
    accuracy says nothing about the model.
    """
    import pandas as pd

    out = []
    for t in QUESTION_TYPES:
        answers = df.loc[df["question_type"] == t, "short_answer"]
        if answers.empty:
            continue
        counts = answers.value_counts()
        out.append({"question_type": t, "rows": int(len(answers)), "answers": int(len(counts)),
                    "majority_answer": counts.index[0], "majority_rate": float(counts.iloc[0] / len(answers))})
    return pd.DataFrame(out).set_index("question_type")


def presence_balance(df) -> dict[str, float]:
    """Share of the negative ("no"/"absent") answer for each presence type, and overall."""
    out = {}
    neg_total = n_total = 0
    for t, neg in PRESENCE_TYPES.items():
        answers = df.loc[df["question_type"] == t, "short_answer"]
        if len(answers):
            n_neg = int((answers == neg).sum())
            out[t] = n_neg / len(answers)
            neg_total += n_neg
            n_total += len(answers)
    out["all_presence_types"] = neg_total / n_total if n_total else float("nan")
    return out


def audio_summary(df, by: str = "split"):
    """Spoken-question seconds per group: count, total, mean, min, max."""
    d = df.dropna(subset=["audio_s"])
    table = d.groupby(by)["audio_s"].agg(["count", "sum", "mean", "min", "max"]).round(2)
    table.columns = ["rows", "total_s", "mean_s", "min_s", "max_s"]
    table["voices"] = d.groupby(by)["voice"].nunique()
    return table


def plot_type_distribution(df):
    import matplotlib.pyplot as plt

    table = type_distribution(df).drop(columns="total")
    fig, ax = plt.subplots(figsize=(9, 5.5))
    table.iloc[::-1].plot.barh(stacked=True, ax=ax, width=0.8)
    ax.set_xlabel("QA rows")
    ax.set_ylabel("")
    ax.set_title("Question types by template")
    return fig


def plot_answer_balance(df, max_cols: int = 5):
    """One small bar chart per question type: answer shares (imbalance at a glance)."""
    import matplotlib.pyplot as plt

    types = [t for t in QUESTION_TYPES if (df["question_type"] == t).any()]
    cols = min(max_cols, max(1, len(types)))
    rows = math.ceil(len(types) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.2 * rows), squeeze=False)
    for ax, t in zip(axes.flat, types):
        counts = df.loc[df["question_type"] == t, "short_answer"].value_counts(normalize=True)
        ax.bar([str(a) for a in counts.index], counts.values, color="tab:blue")
        ax.set_ylim(0, 1)
        ax.set_title(t, fontsize=8)
        ax.tick_params(axis="x", labelsize=7, rotation=30)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(types):]:
        ax.axis("off")
    fig.suptitle("Answer shares per question type")
    fig.tight_layout()
    return fig


def plot_audio_durations(df, by: str = "split"):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    d = df.dropna(subset=["audio_s"])
    groups = sorted(d[by].dropna().unique()) if by in d and d[by].notna().any() else [None]
    bins = np.linspace(0, max(1.0, float(d["audio_s"].max()) if len(d) else 1.0), 30)
    for g in groups:
        vals = d["audio_s"] if g is None else d.loc[d[by] == g, "audio_s"]
        ax.hist(vals, bins=bins, alpha=0.6, label=str(g) if g is not None else None)
    ax.set_xlabel("spoken question length (s)")
    ax.set_ylabel("rows")
    if groups != [None]:
        ax.legend(title=by)
    ax.set_title("Audio durations")
    return fig


def plot_voices_per_split(df):
    import matplotlib.pyplot as plt
    import pandas as pd

    table = pd.crosstab(df["voice"], df["split"])
    fig, ax = plt.subplots(figsize=(8, 3.8))
    table.plot.bar(ax=ax, width=0.8)
    ax.set_xlabel("voice")
    ax.set_ylabel("QA rows")
    ax.set_title("Voices per split (held-out voices appear only in test)")
    ax.tick_params(axis="x", rotation=30)
    return fig


def pick_examples(rows: Iterable[dict], types: Iterable[str], seed: int = 0, distinct_clips: bool = True) -> list[dict]:
    """One row per requested question type (random among that type, reproducible), from distinct clips."""
    rng = np.random.default_rng([seed, 0xE6])
    rows = list(rows)
    picked: list[dict] = []
    used: set[str] = set()
    for t in types:
        cands = [r for r in rows if r["question_type"] == t and not (distinct_clips and clip_key(r) in used)]
        if cands:
            r = cands[int(rng.integers(len(cands)))]
            picked.append(r)
            used.add(clip_key(r))
    return picked


# ---- clip display (flipbooks that survive HTML export) -----------------------------------------


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
