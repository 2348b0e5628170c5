"""Raw -> tokenized Arrow: rows/s and peak RSS at 10k, 100k and 300k rows of (upsampled) sms_spam.

Two datasets per size: `upsampled` (rows drawn with replacement from sms_spam's 5,574 messages, as a
rebalanced train split repeats rows; the tokenizer sees each distinct text once) and `distinct` (the same
rows, each made unique by a row-number suffix, so every row is tokenized: the tokenizer's own speed).

Each size runs in its own process (peak RSS is per process) through the code the tokenized asset uses:
`tokenize.tokenize_splits` (the fast tokenizer in chunks of 20k rows, each streamed to an Arrow file, the split
then memory-mapped). Reports the process's peak RSS and, apart from it, the RSS before tokenizing (libraries,
tokenizer, the input frame: that part grows with the input) and the growth during tokenization (the part
that must stay flat). Medians over --repeats runs. Writes bench/results/tokenize.json.

    python bench/tokenize_throughput.py [--sizes 10000 100000 300000] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402
from quality import machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "tokenize.json"


def make_frame(rows: int, out: Path, distinct: bool) -> None:
    import pandas as pd

    from ftlab_pipelines.core.config.settings import Settings

    base = pd.read_csv(Settings.from_env().data_dir / "sms_spam" / "sms_spam.csv", dtype=str)
    frame = base.sample(n=rows, replace=True, random_state=0).reset_index(drop=True)
    if distinct:
        frame["text"] = frame["text"] + " #" + frame.index.astype(str)
    frame.to_parquet(out, index=False)


def measure(path: Path) -> dict:
    import resource

    import datasets  # noqa: F401  imported before the clock, as in the pipeline's process (~0.15 s once)
    import pandas as pd

    from ftlab_pipelines.core.config.loading import load_lab
    from ftlab_pipelines.core.modeling import models
    from ftlab_pipelines.core.text import tokenize
    from ftlab_pipelines.core.training.train import (
        current_rss_mb,
        peak_rss_mb,
        reset_peak_rss,
    )

    lab = load_lab(REPO / "labs" / "sms_spam.yaml")
    tokenizer = models.load_tokenizer(lab.model)
    frame = pd.read_parquet(path)
    loaded_rss = current_rss_mb()  # interpreter, libraries, tokenizer and the input frame itself
    reset_peak_rss()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        stats = tokenize.tokenize_splits({"train": frame}, tokenizer, text_column="text", label_column="label",
                                         labels=lab.labels, template=lab.model.template,
                                         max_length=lab.model.max_length, out_dir=Path(out) / "dataset")
        seconds = time.perf_counter() - started
        tokenize_peak = peak_rss_mb()
        reloaded = tokenize.load_tokenized(Path(out) / "dataset")["train"]
        assert len(reloaded) == len(frame)
    return {"rows": stats["train"]["rows"], "seconds": round(seconds, 3),
            "rows_per_s": round(stats["train"]["rows"] / seconds, 1), "tokens": stats["train"]["tokens"],
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_before_mb": round(loaded_rss, 1), "tokenize_rss_growth_mb": round(tokenize_peak - loaded_rss, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 300_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2,000 rows once, nothing written (CI smoke)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    sizes, repeats = ([2_000], 1) if args.quick else (args.sizes, args.repeats)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for rows in sizes:
            for kind in ("upsampled", "distinct"):
                data = Path(tmp) / f"sms_{kind}_{rows}.parquet"
                make_frame(rows, data, distinct=kind == "distinct")
                runs = []
                for _ in range(repeats):
                    proc = subprocess.run([sys.executable, __file__, "--measure", str(data)], capture_output=True,
                                          text=True, env={**os.environ, "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"})
                    if proc.returncode != 0:
                        raise SystemExit(proc.stderr[-3000:])
                    runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                median = {k: statistics.median(r[k] for r in runs) for k in ("seconds", "rows_per_s", "peak_rss_mb", "rss_before_mb",
                                                                 "tokenize_rss_growth_mb")}
                results.append({"rows": rows, "texts": kind, **median, "tokens": runs[0]["tokens"],
                                "repeats": repeats})
                print(results[-1], flush=True)
    payload = {"benchmark": "tokenize", "machine": machine(), "date": dt.date.today().isoformat(),
               "command": "python bench/tokenize_throughput.py", "lab": "sms_spam", "tokenizer": "all-minilm-l6-v2",
               "sizes": results}
    save(payload, RESULTS, args.quick)


if __name__ == "__main__":
    main()
