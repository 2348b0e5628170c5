"""Serving a champion: batch scoring through the pyfunc vs a seed-style loop, served latency and load through
`ftlab serve`, generation latency, and what a pyfunc model costs in disk and load time.

Trains a short sms_spam (real MiniLM) and persona_chat (real SmolLM2) through `ftlab run` in a fresh home, so
both have a registered champion; --quick does the same on tiny random models (CI proves the script runs).
Writes bench/results/serving.json (not with --quick).

    python bench/serving.py [--quick]
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import datetime as dt
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, lab_env, save, timed, use_quick_labs  # noqa: E402
from quality import machine  # noqa: E402

RESULTS = REPO / "bench" / "results" / "serving.json"
SHORT_TEXTS = ["Ok, see you at home tonight", "URGENT! You won a FREE prize, call 09061701461 now",
               "lunch at 1?", "Your account is suspended, click here to verify", "Running late, sorry"]
PROMPTS = ["How was your weekend?", "What do you think of flowers?", "Any plans for the holidays?"]
TARGETS = {"batch_speedup": 3.0, "p50_ms_concurrency_1": 50.0, "load_errors": 0, "rss_growth": 0.10}


def write_labs(root: Path, quick: bool) -> None:
    """sms_spam and persona_chat, shortened to serving's needs, in root/labs (--quick: on bench/common.py's tiny
    models)."""
    source = use_quick_labs(root / "quick") if quick else REPO / "labs"
    spam = yaml.safe_load((source / "sms_spam.yaml").read_text())
    persona = yaml.safe_load((source / "persona_chat.yaml").read_text())
    spam["source"]["max_rows"] = 200 if quick else 1500
    spam["train"].update({"epochs": 1, "max_steps": 2 if quick else 60, "save_steps": 1000, "batch_size": 16})
    persona["source"]["max_rows"] = 80  # the persona contract wants at least this many rows
    persona["train"].update({"epochs": 1, "max_steps": 2 if quick else 4, "save_steps": 1000, "batch_size": 4})
    persona["eval"]["generation"].update({"samples": 1 if quick else 2, "max_new_tokens": 64,
                                          "max_eval_rows": 4 if quick else 8})
    (root / "labs").mkdir(parents=True, exist_ok=True)
    for name, raw in (("sms_spam", spam), ("persona_chat", persona)):
        (root / "labs" / f"{name}.yaml").write_text(yaml.safe_dump({**raw, "name": name}))


def download(home: Path, lab: str, into: Path) -> Path:
    from ftlab_pipelines.core.release import serving
    from ftlab_pipelines.core.tracking import using_store

    with using_store(f"sqlite:///{home / 'mlflow.db'}"):
        return serving.download(serving.model_uri(f"ftlab-{lab}"), into)


def model_cost(model_dir: Path) -> dict:
    """Disk size, and the seconds a fresh interpreter takes to import MLflow and load the model."""
    size = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
    code = "import time; t=time.perf_counter(); import mlflow; mlflow.pyfunc.load_model(%r); print(time.perf_counter()-t)"
    done = subprocess.run([sys.executable, "-c", code % str(model_dir)], capture_output=True, text=True, check=True)
    return {"disk_mb": round(size / 2**20, 1), "load_seconds": round(float(done.stdout.strip().splitlines()[-1]), 2)}


def sms_texts(home: Path, rows: int) -> list[str]:
    import pandas as pd

    splits = sorted((home / "artifacts" / "sms_spam" / "splits").glob("*/test.parquet"))[-1].parent
    texts = pd.concat([pd.read_parquet(splits / f"{s}.parquet")["text"] for s in ("train", "validation", "test")])
    return texts.sample(n=rows, replace=True, random_state=0).tolist()


def batch_scoring(model_dir: Path, texts: list[str]) -> dict:
    """The pyfunc on the whole batch vs an HF pipeline called one text at a time (fp32), same model and rows."""
    import mlflow
    import pandas as pd
    from transformers import pipeline

    config = json.loads((model_dir / "artifacts" / "merged" / "ftlab_model.json").read_text())
    model = mlflow.pyfunc.load_model(str(model_dir))
    model.predict(pd.DataFrame({"text": texts[:8]}))  # warm-up
    started = time.perf_counter()
    served = model.predict(pd.DataFrame({"text": texts}))
    pyfunc_seconds = time.perf_counter() - started

    seed = pipeline("text-classification", model=str(model_dir / "artifacts" / "merged"), device=-1, top_k=None)
    seed(texts[0])
    started = time.perf_counter()
    scores = [{s["label"]: s["score"] for s in one_text(seed, text, config["max_length"])} for text in texts]
    seed_seconds = time.perf_counter() - started
    positive, threshold = config["positive_label"], config["threshold"]
    seed_labels = [positive if s[positive] >= threshold else next(k for k in s if k != positive) for s in scores]
    mismatches = sum(a != b for a, b in zip(seed_labels, served["label"]))
    return {"rows": len(texts), "pyfunc_rows_per_s": round(len(texts) / pyfunc_seconds, 1),
            "seed_rows_per_s": round(len(texts) / seed_seconds, 1),
            "speedup": round(seed_seconds / pyfunc_seconds, 2), "target_speedup": TARGETS["batch_speedup"],
            "label_mismatches": mismatches, "labels_identical": mismatches == 0}


def one_text(seed, text: str, max_length: int) -> list[dict]:
    """The seed's call: one text through the pipeline; every class's score."""
    out = seed(text, truncation=True, max_length=max_length)
    return out[0] if out and isinstance(out[0], list) else out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def start_server(root: Path):
    import requests

    port = free_port()
    env = {k: v for k, v in lab_env(root).items() if not k.startswith("MLFLOW_")}
    process = subprocess.Popen([sys.executable, "-m", "ftlab_pipelines.cli", "serve", "sms_spam", "--port", str(port)],
                               env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("ftlab serve exited before answering /ping")
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return process, url
        except requests.ConnectionError:
            time.sleep(0.5)
    process.terminate()
    raise SystemExit("ftlab serve did not answer /ping within 300 s")


def fire(url: str, count: int, concurrency: int, on_done=None) -> tuple[list[float], int]:
    """`count` single-text requests over `concurrency` connections; latencies in ms and the error count."""
    import threading

    import requests

    local = threading.local()

    def one(i: int) -> float | None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        body = json.dumps({"dataframe_records": [{"text": SHORT_TEXTS[i % len(SHORT_TEXTS)]}]})
        started = time.perf_counter()
        response = session.post(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"},
                                timeout=60)
        elapsed = (time.perf_counter() - started) * 1000
        if on_done:
            on_done(i)
        return elapsed if response.status_code == 200 else None

    with futures.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(count)))
    return [r for r in results if r is not None], sum(r is None for r in results)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 1)


def served(root: Path, quick: bool) -> tuple[dict, dict]:
    process, url = start_server(root)
    try:
        fire(url, 20, 1)  # warm-up
        latency = {}
        for concurrency, count in ((1, 20 if quick else 200), (4, 20 if quick else 200), (16, 32 if quick else 320)):
            started = time.perf_counter()
            times, errors = fire(url, count, concurrency)
            latency[f"concurrency_{concurrency}"] = {
                "requests": count, "errors": errors, "p50_ms": percentile(times, 0.5),
                "p95_ms": percentile(times, 0.95), "requests_per_s": round(count / (time.perf_counter() - started), 1)}
        total = 100 if quick else 1000
        marks = {}

        def mark(i: int) -> None:
            if i + 1 in (total // 10, total):
                marks[i + 1] = rss_mb(process.pid)

        _, errors = fire(url, total, 16, mark)
        marks[total] = rss_mb(process.pid)  # after the last response, whichever thread finished last
        first = marks.get(total // 10, marks[total])
        load = {"requests": total, "concurrency": 16, "errors": errors, "rss_mb_at_10pct": first,
                "rss_mb_at_end": marks[total], "rss_growth": round(marks[total] / first - 1, 4),
                "target_rss_growth": TARGETS["rss_growth"]}
        return latency, load
    finally:
        process.terminate()
        process.wait(timeout=30)


def generation(model_dir: Path) -> dict:
    import mlflow
    import pandas as pd
    from transformers import AutoTokenizer

    model = mlflow.pyfunc.load_model(str(model_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir / "artifacts" / "merged"))
    params = {"max_new_tokens": 64}
    model.predict(pd.DataFrame({"message": ["Hello"]}), params={"max_new_tokens": 4})  # warm-up
    first, full, tokens = [], [], []
    for prompt in PROMPTS:
        started = time.perf_counter()
        next(iter(model.predict_stream(pd.DataFrame({"message": [prompt]}), params=params)), None)
        first.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        reply = model.predict(pd.DataFrame({"message": [prompt]}), params=params)["reply"].iloc[0]
        full.append((time.perf_counter() - started) * 1000)
        tokens.append(len(tokenizer(reply, add_special_tokens=False)["input_ids"]))
    return {"lab": "persona_chat", "max_new_tokens": 64, "prompts": len(PROMPTS),
            "first_token_ms_median": round(statistics.median(first), 1),
            "full_reply_ms_median": round(statistics.median(full), 1),
            "reply_tokens_median": statistics.median(tokens)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models, few requests; nothing is written")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ftlab-bench-serving-") as tmp:
        root = Path(tmp)
        write_labs(root, args.quick)
        train_seconds = {lab: round(timed([sys.executable, "-m", "ftlab_pipelines.cli", "run", lab], lab_env(root)), 1)
                         for lab in ("sms_spam", "persona_chat")}
        home = root / "home"
        spam_dir, persona_dir = download(home, "sms_spam", root / "m-spam"), download(home, "persona_chat", root / "m-chat")
        result = {
            "benchmark": "serving", "machine": machine(), "date": dt.date.today().isoformat(),
            "command": "python bench/serving.py" + (" --quick" if args.quick else ""),
            "models": {} if args.quick else {  # a fresh interpreter per model: skipped in the smoke run
                "sms_spam": {"base": "all-minilm-l6-v2", **model_cost(spam_dir)},
                "persona_chat": {"base": "smollm2-135m-instruct", **model_cost(persona_dir)}},
            "lab_run_seconds": train_seconds,
            "batch_scoring": batch_scoring(spam_dir, sms_texts(home, 200 if args.quick else 10_000)),
        }
        result["latency"], result["load"] = served(root, args.quick)
        result["latency"]["target_p50_ms_concurrency_1"] = TARGETS["p50_ms_concurrency_1"]
        result["generation"] = generation(persona_dir)
    print(json.dumps(result, indent=2))
    save(result, RESULTS, args.quick)


if __name__ == "__main__":
    main()
