"""Raw -> tokenized throughput and peak memory of a tabular lab at 10k, 100k and 300k rows.

The creditcard table is upsampled (rows repeated with small Gaussian jitter on the numeric columns),
written as a CSV, then read, rendered with the creditcard_fraud row template and tokenized with the
MiniLM tokenizer through the same code the pipeline uses (batched `datasets.map`, Arrow on disk).
Each size runs in its own process, so peak RSS is per size. Writes bench/results/tabular_scale.json.

    python bench/tabular_scale.py [--sizes 10000 100000 300000] [--quick]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "tabular_scale.json"
LAB = "creditcard_fraud"


def make_table(rows: int, out: Path) -> None:
    import numpy as np
    import pandas as pd

    from ftlab_pipelines.core.config.settings import Settings

    base = pd.read_csv(Settings.from_env().data_dir / "creditcard" / "creditcard_fraud_enriched.csv")
    rng = np.random.default_rng(0)
    table = base.sample(n=rows, replace=True, random_state=0).reset_index(drop=True)
    numeric = [c for c in table.columns if c != "Class"]
    table[numeric] = table[numeric] + rng.normal(0, 0.01, size=(rows, len(numeric)))
    table["Amount"] = table["Amount"].abs()
    table.to_csv(out, index=False)


def measure(csv: Path) -> dict:
    """In this process: read, render and tokenize `csv`; rows/s and peak RSS."""
    import resource

    from ftlab_pipelines.core.config.loading import load_lab
    from ftlab_pipelines.core.data import sources
    from ftlab_pipelines.core.modeling import models
    from ftlab_pipelines.core.runtime import text
    from ftlab_pipelines.core.text import tabular, tokenize

    lab = load_lab(REPO / "labs" / f"{LAB}.yaml")
    tokenizer = models.load_tokenizer(lab.model)
    started = time.perf_counter()
    frame = sources.read_table(csv, "csv", dtype="infer")
    frame["Class"] = frame["Class"].map(lab.source.label_names)
    fitted = tabular.fitted_render(lab.render, frame)  # the tokenized stage fits bin edges on train
    with tempfile.TemporaryDirectory() as out:
        stats = tokenize.tokenize_splits(
            {"train": frame}, tokenizer, text_column="text", label_column="Class", labels=lab.labels,
            template=lab.model.template, max_length=lab.model.max_length, out_dir=Path(out) / "dataset",
            render=lambda batch: text.render_rows(batch, fitted), input_columns=lab.render.columns,
        )
    seconds = time.perf_counter() - started
    rows = stats["train"]["rows"]
    return {"rows": rows, "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "tokens": stats["train"]["tokens"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 300_000])
    parser.add_argument("--quick", action="store_true", help="2,000 rows only, nothing written (CI smoke)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: one size in this process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    sizes = [2_000] if args.quick else args.sizes
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for rows in sizes:
            csv = Path(tmp) / f"creditcard_{rows}.csv"
            make_table(rows, csv)
            proc = subprocess.run([sys.executable, __file__, "--measure", str(csv)], capture_output=True, text=True,
                                  env={**os.environ, "TOKENIZERS_PARALLELISM": "true"}, check=True)
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(results[-1], flush=True)
    payload = {"benchmark": "tabular_scale", "machine": machine(), "date": dt.date.today().isoformat(),
               "command": "python bench/tabular_scale.py", "lab": LAB, "sizes": results}
    if not args.quick:
        RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
