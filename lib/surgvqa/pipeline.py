"""Run the numbered notebooks headless with a params file and render them to HTML.

    python -m surgvqa.pipeline --params params/default.yaml [--only 00 01] [--run-root /tmp/runs]

Executed notebooks and their HTML go to the profile's reports directory (reports/ for the
reference profile, runs/<profile>/reports/ otherwise), with each notebook's wall time.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import papermill
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook
from nbconvert import HTMLExporter

from . import report
from .config import REPO_ROOT, Config, shown_path

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
NUMBERED = re.compile(r"^\d\d_.+\.ipynb$")


def numbered_notebooks(only: list[str] | None = None) -> list[Path]:
    notebooks = sorted(p for p in NOTEBOOKS_DIR.iterdir() if NUMBERED.match(p.name))
    if only:
        notebooks = [p for p in notebooks if p.name[:2] in only]
    return notebooks


def run_notebook(notebook: Path, params: dict, reports_dir: Path, executor: str = "papermill") -> dict:
    """Execute one notebook with `params` injected and render it; returns its timing record.

    executor "papermill" (make report) executes it in notebooks/; "nbmake" (the tests) writes the
    parameterised copy and executes it as a pytest item, so a failing cell fails like a test."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    executed = reports_dir / notebook.name
    start = time.perf_counter()
    if executor == "papermill":
        papermill.execute_notebook(
            str(notebook), str(executed), parameters=params, cwd=str(NOTEBOOKS_DIR), kernel_name="python3", progress_bar=False,
        )
    elif executor == "nbmake":
        nbformat.write(parameterize_notebook(load_notebook_node(str(notebook)), params), executed)
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbmake", "--overwrite",
                               "--nbmake-timeout=1800", str(executed)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{notebook.name} failed under nbmake:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")
    else:
        raise ValueError(f"unknown executor {executor!r} (papermill | nbmake)")
    seconds = time.perf_counter() - start
    html, _ = HTMLExporter().from_filename(str(executed))
    (reports_dir / notebook.with_suffix(".html").name).write_text(html)
    return {"notebook": notebook.name, "seconds": round(seconds, 2)}


def notebook_parameters(params_path: str | Path, overrides: dict | None = None) -> dict:
    """What papermill injects into each notebook's `parameters` cell."""
    return {"params_file": shown_path(params_path), "overrides": overrides or {}}


def run_pipeline(params_path: str | Path, only: list[str] | None = None, overrides: dict | None = None,
                 executor: str = "papermill") -> list[dict]:
    cfg = Config.from_yaml(params_path, overrides)  # validate before spending minutes on kernels
    params_path = cfg.params_source
    params = notebook_parameters(params_path, overrides)
    notebooks = numbered_notebooks(only)
    if not notebooks:
        raise SystemExit(f"no numbered notebooks selected in {NOTEBOOKS_DIR} (only={only})")
    timings = []
    for notebook in notebooks:
        print(f"[pipeline] {notebook.name} with {params_path} ...", flush=True)
        record = run_notebook(notebook, params, cfg.paths.reports, executor)
        print(f"[pipeline] {notebook.name} done in {record['seconds']:.1f} s -> {cfg.paths.reports}", flush=True)
        timings.append(record)
    # Merge by notebook so a partial run (--only) keeps the other stages' last timings.
    path = cfg.paths.timings
    path.parent.mkdir(parents=True, exist_ok=True)
    merged = {t["notebook"]: t for t in (json.loads(path.read_text()) if path.exists() else [])}
    merged.update({t["notebook"]: t for t in timings})
    path.write_text(json.dumps(sorted(merged.values(), key=lambda t: t["notebook"]), indent=2))
    # reports/index.html + reports/metrics.json: every notebook's metrics with the params and their hash.
    finished = report.finish_report(cfg, sorted(merged.values(), key=lambda t: t["notebook"]))
    print(f"[pipeline] {finished['index']}  {finished['metrics_json']}", flush=True)
    return timings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params/default.yaml")
    parser.add_argument("--only", nargs="*", help="notebook numbers to run, e.g. 00 01")
    parser.add_argument("--run-root", help="write the run under this folder instead of the params' run_root")
    args = parser.parse_args(argv)
    run_pipeline(args.params, args.only, overrides={"run_root": args.run_root} if args.run_root else None)


if __name__ == "__main__":
    main(sys.argv[1:])
