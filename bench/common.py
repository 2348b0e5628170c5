"""Helpers shared by the benchmarks: a lab variant in a fresh FTLAB_HOME, run through the `ftlab` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def write_lab(root: Path, lab: str, model_name: str | None = None, **train_overrides) -> Path:
    """labs/<lab>.yaml with another base model and train overrides, in root/labs (point FTLAB_LABS_DIR at it)."""
    raw = yaml.safe_load((REPO / "labs" / f"{lab}.yaml").read_text())
    raw["train"].update(train_overrides)
    if model_name:
        raw["model"]["name"] = model_name
    (root / "labs").mkdir(parents=True, exist_ok=True)
    (root / "labs" / f"{lab}.yaml").write_text(yaml.safe_dump(raw))
    return root / "labs"


def lab_env(root: Path) -> dict:
    home = root / "home"
    return {**os.environ, "FTLAB_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
            "FTLAB_LABS_DIR": str(root / "labs"), "TRANSFORMERS_VERBOSITY": "error"}


def timed(command: list[str], env: dict) -> float:
    """Wall seconds of a command (process start to exit); raises with its stderr tail on failure."""
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started


def ftlab_run(lab: str, root: Path) -> float:
    return timed([sys.executable, "-m", "ftlab_pipelines.cli", "run", lab], lab_env(root))


def save(payload: dict, path: Path, quick: bool) -> None:
    """Write a result file (committed with the code), unless this was a --quick smoke run."""
    if not quick:
        path.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {path}")
