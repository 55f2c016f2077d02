"""What every ablation script shares: its command line (params file, where its runs go) and its record, written to
reports/ablations/<name>.json with the command, the commit and the date."""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
from pathlib import Path

from surgvqa.config import REPO_ROOT, Config


def parser(doc: str, name: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params/default.yaml")
    p.add_argument("--root", default=None, help=f"where the runs go (default <run>/ablations/{name})")
    return p


def setup(args: argparse.Namespace, name: str) -> tuple[Config, Path]:
    """The params file's config and the folder the ablation's runs go to."""
    cfg = Config.from_yaml(args.params)
    return cfg, Path(args.root) if args.root else cfg.paths.run / "ablations" / name


def write(name: str, result: dict, argv: list[str], params: str, script: str | None = None) -> Path:
    """`script`: the script's name where it writes records of other names (default `name`)."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    record = {**result, "command": f"python ablations/{script or name}.py " + " ".join(argv), "commit": commit,
              "date": datetime.date.today().isoformat(), "params": params}
    out = REPO_ROOT / "reports" / "ablations" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(f"[{name}] {out}")
    return out
