"""The structure the docs promise: lib/surgvqa's import graph has no cycle, the model side never
imports the data generator, and the model overlay depends on transformers alone."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

from surgvqa.config import REPO_ROOT

LIB = REPO_ROOT / "lib" / "surgvqa"
OVERLAY = REPO_ROOT / "transformers_fork" / "qwen2_vl_audio"
# Modules that build, train or run models: they must not depend on how the synthetic data is made.
MODEL_SIDE = ("build", "model_checks", "features", "collate", "prompts", "lora", "train", "infer", "evaluate")


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


def test_model_side_never_imports_the_generator():
    """Models see data only through the data step's readers, never the generator or its wording."""
    graph = import_graph(LIB, "surgvqa")
    graph = {m: deps - {"datastep"} for m, deps in graph.items() if m != "datastep"}

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    offenders = {m: sorted(reachable(m) & {"synthetic"}) for m in MODEL_SIDE}
    assert not any(offenders.values()), offenders


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
