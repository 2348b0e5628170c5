"""Where a loaded model runs: the GPU when there is one (bf16 where it supports it), else the CPU in fp32.

ftlab's own runs decide this in core/modeling/device.py, which also times bf16 on the CPU; a served model
cannot carry that probe, and fp32 is the safe choice on a CPU whose bf16 may be emulated."""

from __future__ import annotations

import contextlib


def pick():
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda"), torch.cuda.is_bf16_supported()
    return torch.device("cpu"), False


def autocast(device, bf16: bool):
    import torch

    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
