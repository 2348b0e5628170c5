"""Where models run and whether they compute in bf16: decided here, once per process, for every stage.

The hardware is probed once (it cannot change while the process runs); `placement(setting)` combines it with a
lab's `train.bf16` ("auto" / "on" / "off"). bf16 is only ever used where the hardware computes it natively: a
GPU that supports it, or a CPU with AVX-512 BF16 or AMX. Elsewhere torch emulates bf16 matmuls at ~1 GFLOP/s
(hundreds of times slower than fp32), so there nothing is autocast or quantized to bf16, even with "on".
Tests swap the probed hardware with `simulated(...)`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
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


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The flags of the first CPU in a /proc/cpuinfo text (x86 "flags", ARM "Features")."""
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def matmul_gflops(dtype: torch.dtype, size: int = 1024, repeats: int = 3) -> float:
    """This CPU's matmul rate in `dtype` (a fraction of a second)."""
    import time

    generator = torch.Generator().manual_seed(0)  # its own: probing must not move the process's RNG
    a, b = (torch.randn(size, size, dtype=dtype, generator=generator) for _ in range(2))
    a @ b  # warm-up: kernel selection
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


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
    faster = True
    if CPU_BF16_FLAGS & flags:
        fp32, bf16 = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
        faster = bf16 > fp32
        log.info("CPU matmul: bf16 %.0f vs fp32 %.0f GFLOP/s: bf16 autocast %s", bf16, fp32,
                 "on" if faster else "off (slower than fp32 here)")
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
