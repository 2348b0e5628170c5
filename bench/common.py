"""Helpers shared by the benchmarks: a lab variant in a fresh FTLAB_HOME, run through the `ftlab` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def with_changes(lab, **sections: dict):
    """The lab with some fields of its sections changed (`train={"seed": 7}`), validated as a lab file is: a wrong
    value fails here with the field's name, not deep in training."""
    return lab.model_copy(update={name: type(getattr(lab, name)).model_validate(
        {**getattr(lab, name).model_dump(), **changes}) for name, changes in sections.items()})


def parse_sets(pairs: list[str]) -> dict[str, dict]:
    """section.key=value pairs (YAML values; train.seed=7, peft.dropout=0) by section, for `with_changes` and
    `write_lab`; a bare key is a train field."""
    out: dict[str, dict] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        section, _, name = key.rpartition(".")
        out.setdefault(section or "train", {})[name] = yaml.safe_load(value)
    return out


def write_lab(root: Path, lab: str, model_name: str | None = None, changes: dict[str, dict] | None = None,
              **train_overrides) -> Path:
    """labs/<lab>.yaml with another base model, section changes (`parse_sets`) and train overrides, in root/labs
    (point FTLAB_LABS_DIR at it)."""
    raw = yaml.safe_load((labs_dir() / f"{lab}.yaml").read_text())
    raw["train"].update(train_overrides)
    for section, fields in (changes or {}).items():
        raw.setdefault(section, {}).update(fields)
    if model_name:
        raw["model"]["name"] = model_name
    (root / "labs").mkdir(parents=True, exist_ok=True)
    (root / "labs" / f"{lab}.yaml").write_text(yaml.safe_dump(raw))
    return root / "labs"


def lab_env(root: Path) -> dict:
    home = root / "home"
    return {**os.environ, "FTLAB_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
            "FTLAB_LABS_DIR": str(root / "labs"), "TRANSFORMERS_VERBOSITY": "error"}


def timed_output(command: list[str], env: dict) -> tuple[float, str]:
    """Wall seconds of a command (process start to exit) and its stdout; raises with its stderr tail on failure."""
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started, proc.stdout


def timed(command: list[str], env: dict) -> float:
    """Wall seconds of a command (process start to exit); raises with its stderr tail on failure."""
    return timed_output(command, env)[0]


def ftlab_run(lab: str, root: Path) -> float:
    return timed([sys.executable, "-m", "ftlab_pipelines.cli", "run", lab], lab_env(root))


def save(payload: dict, path: Path, quick: bool) -> None:
    """Write a result file (committed with the code), unless this was a --quick smoke run."""
    if not quick:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {path}")


def labs_dir() -> Path:
    """The lab files a benchmark reads: FTLAB_LABS_DIR (a --quick run points it at tiny variants), else labs/."""
    return Path(os.environ.get("FTLAB_LABS_DIR") or REPO / "labs")


def quick_homes(lab: str, runs: int) -> list[Path]:
    """--quick of the scripts that read finished homes: `runs` ftlab runs of the tiny-model `lab` (training seeds 1,
    2, ...), each in its own temp root; their homes."""
    use_quick_labs()
    homes = []
    for seed in range(1, runs + 1):
        root = Path(tempfile.mkdtemp(prefix="bench-quick-run-"))
        write_lab(root, lab, seed=seed)
        ftlab_run(lab, root)
        homes.append(root / "home")
    return homes


QUICK_ROWS = 200  # persona_chat's contract wants at least 80


def use_quick_labs(root: Path | None = None) -> Path:
    """--quick: every reference lab on a tiny randomly initialised model with the real tokenizer (SmolLM2's for the
    SmolLM2 labs, MiniLM's for the rest) and at most QUICK_ROWS rows, written to root/labs (default: a new temp
    dir); FTLAB_LABS_DIR points there for this process and the ftlab runs it starts. The smoke run proves the
    script's code paths; its numbers mean nothing."""
    root = root or Path(tempfile.mkdtemp(prefix="bench-quick-labs-"))
    from ftlab_pipelines.core.config.settings import Settings
    from ftlab_pipelines.core.modeling.offline_models import minilm_path, smollm2_path
    from ftlab_pipelines.core.modeling.tiny import (
        TINY_BERT,
        TINY_LLAMA,
        build_tiny_model,
    )

    tiny_llama = build_tiny_model(smollm2_path(Settings.from_env().model_cache), root / "tiny-llama", **TINY_LLAMA)
    tiny_bert = build_tiny_model(minilm_path(), root / "tiny-bert", **TINY_BERT)
    (root / "labs").mkdir(parents=True, exist_ok=True)
    for path in (REPO / "labs").glob("*.yaml"):
        raw = yaml.safe_load(path.read_text())
        raw["model"]["name"] = str(tiny_llama if "smollm2" in raw["model"]["name"] else tiny_bert)
        raw["source"]["max_rows"] = min(raw["source"].get("max_rows") or QUICK_ROWS, QUICK_ROWS)
        (root / "labs" / path.name).write_text(yaml.safe_dump(raw))
    os.environ["FTLAB_LABS_DIR"] = str(root / "labs")
    return root / "labs"
