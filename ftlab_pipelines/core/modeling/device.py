"""Where models run and whether they compute in bf16: decided here, once per process, for every stage.

The hardware is probed once per process (it cannot change while the process runs); the one timing in the probe
(bf16 against fp32 matmuls, on a CPU with a bf16 flag) is taken once per CPU model and kept in $FTLAB_HOME/hardware/.
`placement(setting)` combines the hardware with a lab's `train.bf16` ("auto" / "on" / "off"). bf16 is only ever
used where the hardware computes it natively: a GPU that supports it, or a CPU with AVX-512 BF16 or AMX (and
measured at least BF16_MARGIN times as fast as fp32 there). Elsewhere torch emulates bf16 matmuls at ~1 GFLOP/s
(hundreds of times slower than fp32), so there nothing is autocast or quantized to bf16, even with "on".
Tests swap the probed hardware with `simulated(...)`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@dataclass(frozen=True)
class Hardware:
    cuda: bool
    cuda_bf16: bool = False
    cpu_flags: frozenset[str] = frozenset()
    # Measured at the probe: a CPU can have avx512_bf16 and still multiply bf16 slower than fp32 (seen here: a Xeon
    # with avx512_bf16 and no AMX, 138 vs 231 GFLOP/s at 2048^2), where autocast would only slow training down.
    cpu_bf16_faster: bool = True

    @property
    def native_bf16(self) -> bool:
        return self.cuda_bf16 if self.cuda else bool(CPU_BF16_FLAGS & self.cpu_flags) and self.cpu_bf16_faster


@dataclass(frozen=True)
class Placement:
    device: torch.device
    on_gpu: bool
    bf16: bool  # autocast to bf16 (the lab's setting where the hardware allows it)
    native_bf16: bool  # the hardware computes bf16 natively, whatever the setting

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype for computations that may pick one (e.g. 4-bit layers' matmuls)."""
        return torch.bfloat16 if self.native_bf16 else torch.float32


def cpuinfo_value(cpuinfo: str, *names: str) -> str | None:
    """The first CPU's value of the first of `names` in a /proc/cpuinfo text."""
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in names:
            return value.strip()
    return None


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The flags of the first CPU in a /proc/cpuinfo text (x86 "flags", ARM "Features")."""
    return frozenset((cpuinfo_value(cpuinfo, "flags", "Features") or "").split())


# bf16 autocast only where bf16 matmuls beat fp32 by this factor (AMX: 4-7x). A CPU whose two dtypes are close gains
# little from bf16, and a margin keeps a timing skewed by load from switching precision (measured in a loaded suite:
# fp32 63.9 against bf16 74.4 GFLOP/s on a CPU where fp32 is 131 idle).
BF16_MARGIN = 1.5


def measure_cpu_bf16(size: int = 1024, rounds: int = 5) -> dict:
    """bf16 against fp32 matmuls on one thread, alternating so that a burst of load slows both: the fastest of
    `rounds` products of each."""
    import time

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)  # its own: probing must not move the process's RNG
    a, b = (torch.randn(size, size, generator=generator) for _ in range(2))
    operands = {"fp32": (a, b), "bf16": (a.bfloat16(), b.bfloat16())}
    fastest = dict.fromkeys(operands, float("inf"))
    try:
        for x, y in operands.values():
            x @ y  # warm-up: kernel selection
        for _ in range(rounds):
            for dtype, (x, y) in operands.items():
                started = time.perf_counter()
                x @ y
                fastest[dtype] = min(fastest[dtype], time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    fp32, bf16 = (2 * size**3 / fastest[d] / 1e9 for d in ("fp32", "bf16"))
    return {"fp32_gflops": round(fp32, 1), "bf16_gflops": round(bf16, 1), "bf16_faster": bf16 > BF16_MARGIN * fp32}


def cpu_model(cpuinfo: str) -> str:
    return cpuinfo_value(cpuinfo, "model name") or "unknown"


# oneDNN's instruction-set cap: ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 on an AMX CPU makes bf16 10x slower (measured
# here: 219 against 2,225 GFLOP/s at 2048^2), so a timing taken under a cap holds for that cap only.
ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


def probe_file(cpuinfo: str, flags: frozenset[str]) -> Path:
    """Where the bf16 measurement of this CPU model, torch build and oneDNN ISA cap is kept: $FTLAB_HOME/hardware/."""
    import hashlib

    from ftlab_pipelines.core.config.settings import Settings

    caps = [f"{name}={os.environ[name]}" for name in ISA_CAPS if os.environ.get(name)]
    key = hashlib.sha256("\n".join([cpu_model(cpuinfo), " ".join(sorted(flags)), torch.__version__, *caps]).encode())
    return Settings.from_env().home / "hardware" / f"cpu-bf16-{key.hexdigest()[:16]}.json"


def cpu_bf16_faster(cpuinfo: str, flags: frozenset[str]) -> bool:
    """Whether bf16 matmuls beat fp32 on this CPU: measured once per CPU model and torch build, under a lock, and
    kept in $FTLAB_HOME/hardware/, so that every process (the ranks of a distributed run, a resumed run, the
    stages after it) computes in the same precision. A timing taken in each process flipped under load: one
    rank of a DDP run autocast to bf16 while the other did not. Delete the file to measure again."""
    import fcntl
    import json

    from ftlab_pipelines.core.artifacts import write_json

    path = probe_file(cpuinfo, flags)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # the other ranks wait for the first one's measurement
            with contextlib.suppress(FileNotFoundError, ValueError, KeyError):  # absent or unreadable: measure
                return bool(json.loads(path.read_text(encoding="utf-8"))["bf16_faster"])
            measured = {"cpu": cpu_model(cpuinfo), "torch": torch.__version__, **measure_cpu_bf16()}
            write_json(path, measured)
    except OSError as error:  # a read-only home: measure for this process only
        log.warning("cannot keep the CPU bf16 measurement in %s (%s); measuring in this process", path, error)
        measured = measure_cpu_bf16()
    log.info("CPU matmul: bf16 %.0f vs fp32 %.0f GFLOP/s: bf16 autocast %s", measured["bf16_gflops"],
             measured["fp32_gflops"], "on" if measured["bf16_faster"] else f"off (not {BF16_MARGIN}x fp32 here)")
    return measured["bf16_faster"]


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container or taskset narrows)."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def probe() -> Hardware:
    if torch.cuda.is_available():
        return Hardware(cuda=True, cuda_bf16=torch.cuda.is_bf16_supported())
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    flags = cpu_flags(cpuinfo)
    faster = cpu_bf16_faster(cpuinfo, flags) if CPU_BF16_FLAGS & flags else True
    return Hardware(cuda=False, cpu_flags=flags, cpu_bf16_faster=faster)


_simulated: Hardware | None = None


@functools.cache
def _probed() -> Hardware:
    return probe()


def hardware() -> Hardware:
    return _simulated or _probed()


@contextlib.contextmanager
def simulated(hw: Hardware) -> Iterator[Hardware]:
    """Tests: make this process see `hw` instead of its real hardware."""
    global _simulated
    saved, _simulated = _simulated, hw
    try:
        yield hw
    finally:
        _simulated = saved


def resolve(setting: str, hw: Hardware) -> Placement:
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"train.bf16 must be auto, on or off, not {setting!r}")
    if setting == "on" and not hw.native_bf16:
        _warn_no_native_bf16(hw)
    return Placement(device=torch.device("cuda" if hw.cuda else "cpu"), on_gpu=hw.cuda,
                     bf16=setting != "off" and hw.native_bf16, native_bf16=hw.native_bf16)


def placement(setting: str = "auto") -> Placement:
    """The process's device, and bf16 for a lab's `train.bf16` setting on this hardware."""
    return resolve(setting, hardware())


@functools.cache
def _warn_no_native_bf16(hw: Hardware) -> None:
    where = "this GPU" if hw.cuda else "this CPU (no avx512_bf16 or amx_bf16 flag)"
    log.warning("train.bf16 is on, but %s does not compute bf16 natively; running in fp32", where)
