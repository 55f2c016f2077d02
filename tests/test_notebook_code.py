"""The numbered notebooks as code, checked in seconds (the slow test runs them): every name they use is
defined, their one `parameters` cell follows the imports and holds literals only, outputs are stripped."""
from __future__ import annotations

import ast
import json

import pytest
from pyflakes.api import check
from pyflakes.reporter import Reporter

from surgvqa.pipeline import numbered_notebooks


def code_cells(path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("notebook", numbered_notebooks(), ids=lambda p: p.stem)
def test_every_name_a_notebook_uses_is_defined(notebook, tmp_path):
    source = "\n\n".join("".join(c["source"]) for c in code_cells(notebook))
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with out.open("w") as o, err.open("w") as e:
        check(source, notebook.name, Reporter(o, e))
    problems = [line for line in out.read_text().splitlines() + err.read_text().splitlines()
                if "undefined name" in line or "syntax" in line.lower() or "invalid" in line]
    assert not problems, problems


@pytest.mark.parametrize("notebook", numbered_notebooks(), ids=lambda p: p.stem)
def test_one_literal_parameters_cell_after_the_imports(notebook):
    cells = code_cells(notebook)
    tagged = [i for i, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", [])]
    assert tagged == [1], f"{notebook.name}: the parameters cell must be the one right after the imports"
    for node in ast.parse("".join(cells[1]["source"])).body:
        assert isinstance(node, ast.Assign) and isinstance(node.value, (ast.Constant, ast.Dict)), ast.dump(node)
        ast.literal_eval(node.value)  # literals only: papermill injects after this cell and recomputes nothing
    assert "start(params_file, overrides)" in "".join(cells[2]["source"])


@pytest.mark.parametrize("notebook", numbered_notebooks(), ids=lambda p: p.stem)
def test_committed_without_outputs(notebook):
    assert not any(c.get("outputs") for c in code_cells(notebook)), f"{notebook.name}: strip the outputs"
