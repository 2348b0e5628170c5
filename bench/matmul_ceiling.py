"""The MFU ceiling of ftlab's training on this CPU: the matmuls of real training steps, timed alone.

Trains `steps` steps of a case of bench/train_throughput.py the way the adapter asset does (`train.train_adapter`),
recording every matmul it runs (aten mm, addmm, bmm: shapes, strides, dtypes; forward and backward, LoRA and
attention included). Then runs exactly those matmuls again on random tensors of the same layout, nothing else
between them, and times them (median of 3 replays). If everything outside the matmuls took no time, training could
go no faster than that, so the MFU it gives (the case's FLOPs per real token as train_throughput counts them: 4N
with a frozen base, 6N trained whole; over the bf16 peak measured here) is the most this model's shapes reach on
this CPU. Also reported: the rate the matmuls themselves run at (all their FLOPs, padding and LoRA included) and the
share of matmul FLOPs a real token needs.
Calls of the same layout share their random inputs, which may sit warmer in cache than training's: if anything
the ceiling is high.
Writes bench/results/matmul_ceiling.json (a run of some cases keeps the others' results, each with its own peak
and date).

    python bench/matmul_ceiling.py [--cases minilm_sms_spam smollm2_psychology] [--steps N] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save, use_quick_labs  # noqa: E402
from quality import machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "matmul_ceiling.json"


def record_matmuls(case: str, data: Path, steps: int) -> tuple[list, int]:
    """Train `steps` steps as train_throughput's ftlab variant does; return every matmul call (op, argument
    layouts) and the real tokens trained on."""
    import torch
    import train_throughput
    from torch.utils._python_dispatch import TorchDispatchMode

    matmuls = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default}
    calls: list = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in matmuls:
                calls.append((func, [(a.shape, a.stride(), a.dtype) if isinstance(a, torch.Tensor) else a
                                     for a in args]))
            return func(*args, **(kwargs or {}))

    lab, tokenizer, dataset, model = train_throughput.load_variant_inputs(train_throughput.CASES[case][0], data)
    counter = {"tokens": 0}
    with tempfile.TemporaryDirectory() as out, Record():
        train_throughput.train_ftlab(lab, model, tokenizer, dataset, steps, Path(out), counter)
    return calls, counter["tokens"]


def matmul_flops(func, layouts: list) -> int:
    shapes = [layout[0] for layout in layouts if isinstance(layout, tuple)]
    if func.__name__.startswith("addmm"):
        shapes = shapes[1:]  # the bias
    *batch, m, k = shapes[0]
    return 2 * (batch[0] if batch else 1) * m * k * shapes[1][-1]


def replay_seconds(calls: list, repeats: int = 3) -> float:
    """The recorded matmuls once more, on random tensors of the same shapes, strides and dtypes: median seconds."""
    import torch

    @functools.cache  # one tensor per layout: a tensor per call would hold every step's activations at once
    def tensor(layout):
        shape, stride, dtype = layout  # strides may be 0 (an expanded tensor): fill the storage, then view it
        storage = max(1, 1 + sum((size - 1) * step for size, step in zip(shape, stride)))
        return torch.randn(storage, dtype=dtype).as_strided(shape, stride)

    ready = [(func, [tensor(a) if isinstance(a, tuple) else a for a in layouts]) for func, layouts in calls]
    for func, args in ready[: min(len(ready), 300)]:  # warm the kernels' caches
        func(*args)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for func, args in ready:
            func(*args)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run_case(case: str, steps: int, peak_bf16: float) -> dict:
    import train_throughput

    with tempfile.TemporaryDirectory(prefix="bench-ceiling-") as tmp:
        data = train_throughput.prepare(train_throughput.CASES[case][0], Path(tmp) / "home")
        flops_per_token = train_throughput.flops_per_token(case, data)
        calls, tokens = record_matmuls(case, data, steps)
    seconds = replay_seconds(calls)
    all_flops = sum(matmul_flops(func, layouts) for func, layouts in calls)
    return {"date": dt.date.today().isoformat(), "peak_bf16_gflops": round(peak_bf16, 1), "steps": steps,
            "real_tokens": tokens, "matmul_calls": len(calls), "matmul_seconds": round(seconds, 3),
            "matmul_gflop": round(all_flops / 1e9, 1), "matmul_gflops_rate": round(all_flops / seconds / 1e9, 1),
            "matmul_share_of_peak": round(all_flops / seconds / 1e9 / peak_bf16, 4),
            "needed_share_of_matmul_flops": round(flops_per_token * tokens / all_flops, 4),
            "ceiling_tokens_per_s": round(tokens / seconds, 1),
            "ceiling_mfu": round(flops_per_token * tokens / seconds / 1e9 / peak_bf16, 4)}


def main() -> None:
    import train_throughput
    from mfu import matmul_gflops

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(train_throughput.CASES), choices=train_throughput.CASES)
    parser.add_argument("--steps", type=int, help="training steps recorded (default: the case's throughput steps, "
                                                   "at most 30)")
    parser.add_argument("--quick", action="store_true", help="2 steps on tiny models, nothing written (CI smoke)")
    args = parser.parse_args()
    if args.quick:
        use_quick_labs()
    size, rounds = (256, 2) if args.quick else (2048, 10)
    peak = matmul_gflops("bfloat16", size, rounds)
    cases = {}
    for case in args.cases:
        steps = 2 if args.quick else args.steps or min(train_throughput.CASES[case][1], 30)
        cases[case] = run_case(case, steps, peak)
        print(case, cases[case], flush=True)
    command = "python bench/matmul_ceiling.py" + (f" --cases {' '.join(args.cases)}" if args.cases != list(
        train_throughput.CASES) else "") + (f" --steps {args.steps}" if args.steps else "")
    if RESULTS.is_file() and not args.quick:
        cases = {**json.loads(RESULTS.read_text())["cases"], **cases}
    save({"benchmark": "matmul_ceiling", "machine": machine(), "date": dt.date.today().isoformat(),
          "command": command, "cases": cases}, RESULTS, args.quick)


if __name__ == "__main__":
    main()
