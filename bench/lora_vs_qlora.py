"""LoRA vs QLoRA (4-bit NF4) training of SmolLM2 on the persona_chat data: tokens/s and peak RSS, same batch.

Each variant runs the persona_chat chain up to the adapter in its own process and FTLAB_HOME (peak RSS is
per process), with the same steps, batch and seed. Writes bench/results/memory.json.

    python bench/lora_vs_qlora.py [--steps 40] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import labs_dir, use_quick_labs  # noqa: E402
from quality import machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "memory.json"
LAB = "persona_chat"


def run_variant(quantization: str, steps: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"bench-{quantization}-"))
    raw = yaml.safe_load((labs_dir() / f"{LAB}.yaml").read_text())
    raw["model"]["quantization"] = quantization
    raw["train"].update({"max_steps": steps, "save_steps": 10_000, "logging_steps": 10})
    (root / "labs").mkdir()
    (root / "labs" / f"{LAB}.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "FTLAB_HOME": str(root / "home"), "DAGSTER_HOME": str(root / "home" / "dagster"),
           "FTLAB_LABS_DIR": str(root / "labs")}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ftlab_pipelines.cli", "run", LAB, "--only", "raw_dataset",
                           "validated_dataset", "splits", "tokenized", "adapter"],
                          env=env, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{quantization} failed:\n{proc.stderr[-3000:]}")
    manifest = max((root / "home" / "artifacts" / LAB / "adapter").glob("*/manifest.json"), key=os.path.getmtime)
    metrics = json.loads(manifest.read_text())["metrics"]
    return {"tokens_per_s": metrics["tokens_per_s"], "peak_rss_mb": metrics["peak_rss_mb"],
            "rss_before_train_mb": metrics["rss_before_train_mb"],
            "train_seconds": metrics["train_seconds"], "train_loss": round(metrics["train_loss"], 4),
            "train_steps": metrics["train_steps"], "wall_seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="3 steps on a tiny model: proves the script works (CI smoke)")
    args = parser.parse_args()
    steps = 3 if args.quick else args.steps
    if args.quick:
        use_quick_labs()
    lora, qlora = run_variant("none", steps), run_variant("4bit", steps)
    result = {
        "benchmark": "memory", "machine": machine(), "date": dt.date.today().isoformat(),
        "command": f"python bench/lora_vs_qlora.py --steps {steps}", "lab": LAB,
        "model": "smollm2-135m-instruct", "batch_size": yaml.safe_load(
            (REPO / "labs" / f"{LAB}.yaml").read_text())["train"]["batch_size"],
        "lora_peak_rss_mb": lora["peak_rss_mb"], "qlora_peak_rss_mb": qlora["peak_rss_mb"],
        "lora_tokens_per_s": lora["tokens_per_s"], "qlora_tokens_per_s": qlora["tokens_per_s"],
        "lora_rss_before_train_mb": lora["rss_before_train_mb"],
        "qlora_rss_before_train_mb": qlora["rss_before_train_mb"],
        "lora": lora, "qlora": qlora,
    }
    print(json.dumps(result, indent=2))
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
