"""QA rows and their validating loaders (the fields are named in `schema`).

One JSONL row per QA, with the REAL-Colon-VQA fields

    id, video_id, frames[8], frame_numbers, question, question_type,
    support_frames, support_ratio, answer (long form), short_answer

plus `template` ("in" = template wording, "out" = natural paraphrase), `audio` (wav path
relative to the audio root; may be absent for real data) and `voice`. Real data folders hold
`in_template.jsonl` / `out_template.jsonl` next to their frame images; the synthetic generator
writes the same layout, so both go through `load_dataset`.

Validation never drops a row silently: a bad row raises `DataError` naming the file, the line
and the field; everything that was read is counted in `DataSummary`. A row is identified by
(video_id, id, template) (`row_key`): REAL-Colon-VQA ids are unique only within a video, and its
in/out files are two wordings of the same QA rows, sharing (video_id, id) — "the same question
about the same clip" (`qa_key`), which pairs the wordings and never crosses splits. Every frame and audio path
goes through one resolver (`resolve_under`) that confines it to its root after resolving
symlinks, and JSONL is read by one line reader (`read_jsonl`), the mirror of `write_jsonl`.
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator, NamedTuple

import numpy as np

from .answers import in_vocabulary
from .schema import FRAME_EXTENSIONS, QUESTION_TYPES, REQUIRED_FIELDS, TEMPLATE_FILES, TEMPLATES

class DataError(ValueError):
    """A data file that cannot be used. `.file`, `.line` (1-based) and `.field` say where."""

    def __init__(self, file: str | Path, line: int | None, field_name: str | None, problem: str):
        self.file, self.line, self.field, self.problem = str(file), line, field_name, problem
        where = f"{file}" + (f":{line}" if line is not None else "")
        what = f" field '{field_name}':" if field_name else ""
        super().__init__(f"{where}:{what} {problem}")


def clip_key(row: dict) -> str:
    """Identity of the 8-frame clip a row asks about: video id + first frame number."""
    return f"{row['video_id']}:{row['frame_numbers'][0]}"


def qa_key(row: dict) -> tuple[str, str]:
    """The same question about the same clip: (video_id, id). Real REAL-Colon-VQA ids repeat across
    videos, and its in/out files share them (two wordings of one QA row): both wordings have this key."""
    return row["video_id"], row["id"]


def row_key(row: dict) -> tuple[str, str, str | None]:
    """Identity of a row: (video_id, id, template), unique in a file, a split and a dataset."""
    return row["video_id"], row["id"], row.get("template")


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
        oov = Counter(r["question_type"] for r in rows if not in_vocabulary(r["short_answer"], r["question_type"]))
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
    _resolved_clips: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]

    def frame_paths(self, row: dict) -> list[Path]:
        # ~20 rows share a clip: resolve its frames once (resolving walks every path component)
        key = tuple(row["frames"])
        if key not in self._resolved_clips:
            self._resolved_clips[key] = [resolve_under(self.root, f, self.root, None, "frames") for f in key]
        return list(self._resolved_clips[key])

    def audio_path(self, row: dict) -> Path | None:
        root = self.audio_root or self.root
        return resolve_under(root, row["audio"], root, None, "audio") if row.get("audio") else None

    def load_frames(self, row: dict, size: int | None = None) -> np.ndarray:
        """The clip as (T, H, W, 3) uint8, optionally resized to size x size."""
        return load_frames(self.frame_paths(row), size=size)

    def load_audio(self, row: dict) -> np.ndarray:
        from .audio import load_audio

        path = self.audio_path(row)
        if path is None:
            raise DataError(self.root, None, "audio", f"row {row['id']!r} of video {row['video_id']!r} has no audio")
        return load_audio(path)



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


def _safe_relpath(value: str, file: Path, line: int | None, field_name: str) -> str:
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


def resolve_under(root: Path, rel: str, file: Path, line: int | None, field_name: str) -> Path:
    """The one resolver of dataset paths: `root/rel`, symlinks resolved, which must stay inside `root`
    (itself resolved, so a symlinked dataset folder is fine). Errors name the file, line and field."""
    rel = _safe_relpath(rel, file, line, field_name)
    real_root = Path(root).resolve()
    target = (real_root / rel).resolve()
    if not target.is_relative_to(real_root):
        raise DataError(file, line, field_name, f"path {rel!r} resolves to {target}, outside the dataset root {real_root} "
                        "(a symlink pointing out of the root?)")
    return target


def _check_image(path: Path, file: Path, line: int, field_name: str) -> None:
    """Header check only (cheap): an empty or non-image frame fails here, with its row, not in training."""
    from PIL import Image, UnidentifiedImageError

    if path.stat().st_size == 0:
        raise DataError(file, line, field_name, f"frame file {path} is empty")
    try:
        with Image.open(path) as im:
            im.size  # noqa: B018 - reading the header is the check
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(file, line, field_name, f"frame file {path} is not a readable image ({e})") from None


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
        if (root / cand).is_file():
            _check_image(resolve_under(root, cand, file, line, field_name), file, line, field_name)
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
               check_audio: bool = True, allow_empty: bool = False, default_template: str | None = None,
               _caches: dict | None = None, _seen: dict | None = None) -> tuple[list[dict], dict[str, int]]:
    """Read and validate one JSONL file. Returns (rows, counts) with counts rows/blank_lines/...

    A file without rows is an error unless `allow_empty` (a split that params may leave empty).

    `root` (default: the file's folder) is where frame paths resolve; audio paths resolve against
    `audio_root` (default `root`). `template` is the file's template ("in"/"out"): rows without a
    `template` field get it, rows that disagree are an error. Frame entries are rewritten as
    paths relative to `root` (bare REAL-Colon-VQA frame ids are resolved to their files); rows of
    other files without a `template` get `default_template` if given. The same `row_key` twice is
    an error naming both lines (`_seen`, shared by `load_dataset`, extends the check across files).
    """
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    audio_root = Path(audio_root) if audio_root is not None else root
    caches = _caches if _caches is not None else {}
    frame_cache = caches.setdefault("frames", {})
    audio_ok: set = caches.setdefault("audio", set())
    rows: list[dict] = []
    seen: dict[tuple, tuple[Path, int]] = _seen if _seen is not None else {}
    counts = {"rows": 0, "blank_lines": 0}
    for lineno, obj in read_jsonl(path):
        if obj is None:
            counts["blank_lines"] += 1
            continue
        row = validate_row(obj, path, lineno, num_frames=num_frames)
        if template is not None:
            if row.setdefault("template", template) != template:
                raise DataError(path, lineno, "template", f"row says {row['template']!r} but the file holds {template!r} rows")
        elif default_template is not None:
            row.setdefault("template", default_template)
        key = row_key(row)  # ids repeat across videos and templates in real data; the same key twice is an error
        if key in seen:
            first_file, first_line = seen[key]
            first = f"line {first_line}" if first_file == path else f"{first_file}:{first_line}"
            raise DataError(path, lineno, "id", f"duplicate id {row['id']!r} in video {row['video_id']!r} "
                            f"(first on {first}) with the same template {row.get('template')!r}")
        seen[key] = (path, lineno)
        row["frames"] = [resolve_frame(root, f, row["video_id"], path, lineno, "frames", check_files, frame_cache)
                         for f in row["frames"]]
        if row.get("audio"):
            row["audio"] = _safe_relpath(row["audio"], path, lineno, "audio")
            if check_audio and row["audio"] not in audio_ok:
                from .audio import AudioError, load_audio

                try:
                    load_audio(resolve_under(audio_root, row["audio"], path, lineno, "audio"))
                except AudioError as e:
                    raise DataError(path, lineno, "audio", f"unreadable audio: {e}") from None
                audio_ok.add(row["audio"])
        rows.append(row)
    if not rows and not allow_empty:
        raise DataError(path, None, None, "holds no QA rows" + (f" ({counts['blank_lines']} blank lines)" if counts["blank_lines"] else " (empty file)"))
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
    seen: dict = {}  # row_key -> (file, line) across the files: one row, one key
    for name in files:
        template = next((t for t, f in TEMPLATE_FILES.items() if Path(name).name == f), None)
        file_rows, counts = load_jsonl(root / name, frames_root, template=template, num_frames=num_frames,
                                       check_files=check_files, audio_root=audio_root, check_audio=check_audio,
                                       default_template="in", _caches=caches, _seen=seen)
        rows += file_rows
        per_file[str(name)] = len(file_rows)
        blank += counts["blank_lines"]
    summary = DataSummary.of(rows, root, per_file, blank, counts.get("frames_checked", 0), counts.get("audio_checked", 0))
    return Dataset(rows, frames_root, Path(audio_root) if audio_root is not None else None, summary)


def read_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """The one JSONL line reader, the mirror of `write_jsonl`: (line number, value) per line, value None
    for a blank line. Lines end at "\\n" only (a trailing "\\r" is dropped): `str.splitlines` would also
    split at U+2028, U+0085 and the like, which JSON strings may hold verbatim."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(path, None, None, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, None, None, "is a directory, not a JSONL file") from None
    except UnicodeDecodeError as e:
        raise DataError(path, None, None, f"not UTF-8 text ({e})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    for lineno, raw in enumerate(lines, start=1):
        raw = raw.removesuffix("\r")
        if not raw.strip():
            yield lineno, None
            continue
        try:
            yield lineno, json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(path, lineno, None, f"malformed JSON ({e.msg} at column {e.colno})") from None


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    """Deterministic JSONL: one compact object per line in the rows' own key order.

    Written to a temporary file and renamed, so a killed writer never leaves half a file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class RunData(NamedTuple):
    """What the data step gives every later notebook: validated splits and the stage-1 speech corpus."""

    splits: dict[str, Dataset]  # train / val / test (test rows: group heldout_video | heldout_voice | final_test)
    corpus: list[dict]  # speech -> transcript entries (audio relative to the data dir), each with `split`


def read_regions(data_dir: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Where each thing is seen in every clip, as the data step wrote it: (`dataset.json`'s "regions" entry: file,
    mask names, patch size; clip key -> (T, S/patch, S/patch, masks) uint8 shares in 1/255). A data step without
    them (real data, or frames that do not tile into merged tokens) raises, saying so."""
    from safetensors.numpy import load_file

    info = read_data_meta(data_dir).get("regions")
    if not info:
        raise DataError(data_dir / "dataset.json", None, "regions", "this data step has no region masks (they come "
                        "with synthetic data whose data.frame_size is a multiple of 28)")
    return info, load_file(str(data_dir / info["file"]))


def read_data_meta(data_dir: Path) -> dict:
    """`dataset.json` of a built data step: roots, voices, held-out videos, its stamp (`datastep.data_stamp`)."""
    path = data_dir / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the data step (notebook 01) first")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, None, None, f"not valid JSON ({e}): rebuild the data step") from None
