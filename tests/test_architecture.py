"""The structure docs/ARCHITECTURE.md promises: lib/surgvqa's modules sit in layers, each importing only from its
own layer or those below, with no cycle; nothing that builds, trains or evaluates models reaches the data generator;
the model overlay depends on transformers alone."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

from surgvqa.config import REPO_ROOT

LIB = REPO_ROOT / "lib" / "surgvqa"
OVERLAY = REPO_ROOT / "transformers_fork" / "qwen2_vl_audio"
# Bottom to top, as in docs/ARCHITECTURE.md; every module of lib/surgvqa is in exactly one layer.
LAYERS = {
    "settings": {"config", "repro", "plots", "systems"},
    "I/O": {"audio", "speech", "channel", "media", "video", "whisper_conversion"},
    "data and scoring": {"schema", "answers", "metrics", "stats", "data", "wording", "synthetic", "stratify", "datastep",
                         "data_eda"},
    "model helpers": {"prompts", "lora", "tiny_vlm", "models", "caches", "collate", "infer", "asr", "checkpoints",
                      "model_checks", "paper_scale"},
    "stages": {"trainer", "training_data", "vision_pretrain", "stages", "training_report"},
    "evaluation": {"evaluate", "latency", "evaluation_report", "sight", "error_analysis", "audio_swap"},
    "reports and entry points": {"report", "results_page", "notebook", "pipeline", "bench", "train", "seed_spread", "assistant", "ask",
                                 "demo"},
}
# What builds, trains or evaluates models: it sees data only as the data step's files, never how they are made.
MODEL_SIDE = LAYERS["model helpers"] | LAYERS["stages"] | LAYERS["evaluation"]
GENERATOR = {"synthetic", "datastep"}


def imported_modules(path: Path, package: str) -> set[str]:
    """Every module of `package` that `path` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                base = node.module.split(".")[0] if node.module else None
                found |= {base} if base else {a.name for a in node.names}
            elif node.module and node.module.split(".")[0] == package:
                parts = node.module.split(".")
                found |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith(package + ".")}
    return found


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    modules = {p.stem for p in root.glob("*.py")}
    return {p.stem: (imported_modules(p, package) & modules) - {p.stem} for p in root.glob("*.py")}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [])):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_lib_import_graph_has_no_cycle():
    graph = import_graph(LIB, "surgvqa")
    assert len(graph) > 20 and graph["datastep"] >= {"synthetic", "stratify", "speech"}  # the graph is really read
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def layer_violations(graph: dict[str, set[str]], layers: dict[str, set[str]]) -> list[str]:
    """Imports of a module from a layer above its own."""
    rank = {m: i for i, members in enumerate(layers.values()) for m in members}
    return [f"{m} -> {d}" for m, deps in sorted(graph.items()) for d in sorted(deps) if rank[d] > rank[m]]


def test_layer_violations_are_found():
    assert layer_violations({"a": {"b"}, "b": set()}, {"low": {"a"}, "high": {"b"}}) == ["a -> b"]
    assert layer_violations({"a": set(), "b": {"a"}}, {"low": {"a"}, "high": {"b"}}) == []


def test_every_module_sits_in_one_documented_layer():
    modules = {p.stem for p in LIB.glob("*.py")} - {"__init__"}
    placed = [m for members in LAYERS.values() for m in members]
    assert len(placed) == len(set(placed)), "a module in two layers"
    assert set(placed) == modules, {"unplaced": sorted(modules - set(placed)), "gone": sorted(set(placed) - modules)}
    documented = (REPO_ROOT / "docs" / "ARCHITECTURE.md").read_text()
    assert not [m for m in modules if f"`{m}`" not in documented], "docs/ARCHITECTURE.md leaves a module out"


def test_each_layer_imports_only_from_itself_and_below():
    graph = {m: deps for m, deps in import_graph(LIB, "surgvqa").items() if m != "__init__"}
    assert layer_violations(graph, LAYERS) == []


def test_model_side_never_reaches_the_data_generator():
    """Models see data only through the data step's files (`data` readers), never the generator or the data step
    that runs it; only entry points (the training CLI, the pipeline, the demo) build data."""
    graph = import_graph(LIB, "surgvqa")
    assert graph["datastep"] >= {"synthetic", "speech"}  # the graph is really read
    offenders = {m: sorted(reachable(graph, m) & GENERATOR) for m in sorted(MODEL_SIDE)}
    assert not any(offenders.values()), {m: o for m, o in offenders.items() if o}


def test_overlay_depends_on_transformers_alone():
    third_party = set()
    for path in OVERLAY.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                third_party.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                third_party |= {a.name.split(".")[0] for a in node.names}
    third_party -= set(sys.stdlib_module_names)
    # transformers and what transformers itself builds these models from (configs are huggingface_hub
    # strict dataclasses, as transformers' own are)
    assert "transformers" in third_party and third_party <= {"transformers", "huggingface_hub", "torch", "numpy", "PIL"}, third_party
