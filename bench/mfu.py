"""Model FLOP utilisation: this machine's matmul peak (bf16, fp32) vs ftlab's SmolLM2 LoRA training FLOP/s.

Peak: a square torch matmul on all threads, median of repeats. Training: `train.train_adapter` on the
psychology_instruct tokenized train split (the adapter asset's path), real tokens/s as in
train_throughput.py. FLOPs per token: 4N for LoRA on a frozen base (forward 2N + activation gradients
2N, no weight gradients), 6N for full fine-tuning; N = weights in the model's matmuls (Linear layers,
the LM head included). ftlab runs the LM head on reply tokens only (core/reply_loss.py), so the FLOPs it
actually needs per token are 4 x (N_body + N_head x reply share); the MFU target is judged on that
smaller count, and the conventional 4N figure is reported beside it. Writes bench/results/mfu.json.

    python bench/mfu.py [--steps 16] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import labs_dir, save, use_quick_labs  # noqa: E402
from quality import machine  # noqa: E402
from train_throughput import prepare  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "mfu.json"
LAB = "psychology_instruct"


def matmul_gflops(dtype_name: str, size: int = 2048, repeats: int = 10) -> float:
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    return 2 * size**3 / statistics.median(times) / 1e9


def matmul_parameters() -> tuple[int, int]:
    """(all matmul weights, the LM head's)."""
    import torch

    from ftlab_pipelines.core.config.loading import load_lab
    from ftlab_pipelines.core.modeling import models

    model = models.load_causal_lm(load_lab(labs_dir() / f"{LAB}.yaml").model)
    total = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return total, model.get_output_embeddings().weight.numel()


def reply_share(data: Path) -> float:
    """Share of train tokens that are reply tokens (the only ones the LM head runs on)."""
    from ftlab_pipelines.core.text import tokenize

    train = tokenize.load_tokenized(data)["train"]
    return sum(map(sum, train["completion_mask"])) / sum(train["length"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="2 steps on a tiny model, nothing written (CI smoke)")
    args = parser.parse_args()
    import torch

    steps = 2 if args.quick else args.steps
    # A CPU without bf16 instructions emulates bf16 matmuls at a few GFLOP/s: the smoke run keeps them tiny.
    size, repeats = (256, 2) if args.quick else (2048, 10)
    peak_bf16, peak_fp32 = matmul_gflops("bfloat16", size, repeats), matmul_gflops("float32", size, repeats)
    print(f"peak bf16 {peak_bf16:.0f} GFLOP/s, fp32 {peak_fp32:.0f} GFLOP/s ({torch.get_num_threads()} threads)")
    if args.quick:
        use_quick_labs()
    with tempfile.TemporaryDirectory(prefix="bench-mfu-") as tmp:
        data = prepare(LAB, Path(tmp) / "home")
        proc = subprocess.run([sys.executable, str(REPO / "bench" / "train_throughput.py"), "--variant", "ftlab",
                               "--lab", LAB, "--data", str(data), "--steps", str(steps), "--eval-rows", "8"],
                              capture_output=True, text=True, cwd=REPO)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        run = json.loads(proc.stdout.strip().splitlines()[-1])
        share = reply_share(data)
    n, n_head = matmul_parameters()
    needed_per_token = 4 * (n - n_head + n_head * share)
    achieved = needed_per_token * run["tokens_per_s"] / 1e9
    conventional = 4 * n * run["tokens_per_s"] / 1e9
    payload = {"benchmark": "mfu", "machine": machine(), "date": dt.date.today().isoformat(),
               "command": "python bench/mfu.py", "lab": LAB, "model": "smollm2-135m-instruct", "method": "LoRA",
               "threads": torch.get_num_threads(), "peak_bf16_gflops": round(peak_bf16, 1),
               "peak_fp32_gflops": round(peak_fp32, 1), "matmul_parameters": n, "lm_head_parameters": n_head,
               "reply_token_share": round(share, 4), "flops_per_token": round(needed_per_token),
               "tokens_per_s": run["tokens_per_s"], "achieved_gflops": round(achieved, 1),
               "mfu_bf16": round(achieved / peak_bf16, 4), "mfu_fp32": round(achieved / peak_fp32, 4),
               "conventional_4n_gflops": round(conventional, 1), "conventional_4n_mfu_bf16": round(conventional / peak_bf16, 4),
               "train": run}
    print(json.dumps({k: v for k, v in payload.items() if k != "train"}, indent=1))
    save(payload, RESULTS, args.quick)


if __name__ == "__main__":
    main()
