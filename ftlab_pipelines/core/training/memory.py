"""A model that cannot fit in memory fails before it loads, with what to change."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from ftlab_pipelines.core.modeling.device import placement
from ftlab_pipelines.core.modeling.safetensors_check import parameter_count

log = logging.getLogger(__name__)

BYTES_PER_PARAM = {"none": 4.0, "4bit": 0.5}  # fp32 weights; NF4 packs two weights in a byte
TRAINING_OVERHEAD = 1.5  # weights + activations, LoRA gradients and optimizer state on top (measured ~1.3 for MiniLM)
FULL_TRAINING_OVERHEAD = 4.5  # every weight trained: its gradient and AdamW's two moments, then activations


class InsufficientMemory(RuntimeError):
    """The model would not fit in the memory available for training."""


def available_memory_mb(on_gpu: bool, limit_mb: float | None = None) -> float:
    """Free GPU memory, or RAM available to this process (the cgroup limit counts); `limit_mb` (the settings'
    FTLAB_MEMORY_LIMIT_MB) caps it, for a machine shared with other jobs."""
    if on_gpu:
        import torch

        free = torch.cuda.mem_get_info()[0] / 2**20
    else:
        import psutil

        free = psutil.virtual_memory().available / 2**20
        free = min(free, _cgroup_free_mb())
    return min(free, limit_mb) if limit_mb else free


def _cgroup_free_mb() -> float:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return math.inf
    return math.inf if limit == "max" else (int(limit) - used) / 2**20


def check_memory(model_name: str, model_dir: str, quantization: str, num_processes: int = 1,
                 limit_mb: float | None = None, full: bool = False) -> dict | None:
    """Fail before loading when params x bytes/param x overhead (x processes) exceeds the memory available.
    `full`: every weight is trained (peft.method full), not a LoRA adapter."""
    if not Path(model_dir).is_dir():
        log.info("model %s is a hub id: no memory estimate before download", model_name)
        return None
    params = parameter_count(Path(model_dir))
    if params is None:
        return None
    on_gpu = placement().on_gpu
    overhead = FULL_TRAINING_OVERHEAD if full else TRAINING_OVERHEAD
    need = params * BYTES_PER_PARAM[quantization] * overhead * (1 if on_gpu else num_processes) / 2**20
    free = available_memory_mb(on_gpu, limit_mb)
    if need > free:
        raise InsufficientMemory(
            f"model.name {model_name!r}: training needs about {need:,.0f} MB ({params / 1e6:,.1f}M parameters x "
            f"{BYTES_PER_PARAM[quantization]:g} bytes x {overhead} overhead"
            f"{f' x {num_processes} processes' if num_processes > 1 and not on_gpu else ''}), but only "
            f"{free:,.0f} MB is available on the {'GPU' if on_gpu else 'machine'}; use a smaller model, "
            f"{'peft.method: lora' if full else 'model.quantization: 4bit (CUDA)'}, fewer train.num_processes, "
            f"or free memory"
        )
    return {"params": params, "need_mb": round(need, 1), "available_mb": round(free, 1)}
