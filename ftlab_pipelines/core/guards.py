"""Training guards: a non-finite loss stops training, checkpoints are checked before a resume, a model that
cannot fit in memory fails before it loads, and weights come from safetensors files only."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import struct
from pathlib import Path

log = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"  # the Trainer writes it last: a checkpoint without it is half-written
BYTES_PER_PARAM = {"none": 4.0, "4bit": 0.5}  # fp32 weights; NF4 packs two weights in a byte
TRAINING_OVERHEAD = 1.5  # weights + activations, LoRA gradients and optimizer state on top (measured ~1.3 for MiniLM)


class NonFiniteLoss(RuntimeError):
    """The training loss became nan or inf."""


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be resumed from; the message names it and says what to delete."""


class InsufficientMemory(RuntimeError):
    """The model would not fit in the memory available for training."""


class UnsafeWeights(ValueError):
    """Weights in a pickle-based format (.bin, .pt) where only safetensors are accepted."""


# --- safetensors -------------------------------------------------------------------------------------------

def safetensors_header(path: Path) -> dict:
    """The header of a safetensors file (tensor names, dtypes, shapes), read without loading any tensor.

    Raises ValueError when the file is not a complete safetensors file (garbage, truncated)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) < 8:
            raise ValueError("shorter than a safetensors header")
        length = struct.unpack("<Q", raw)[0]
        if length > min(size - 8, 100 * 2**20):
            raise ValueError("not a safetensors file (header length is out of range)")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError("not a safetensors file (header is not JSON)") from None
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    end = max((v["data_offsets"][1] for v in tensors.values()), default=0)
    if 8 + length + end > size:
        raise ValueError(f"truncated: the header promises {8 + length + end} bytes, the file has {size}")
    return tensors


def require_safetensors(directory: Path, stem: str, what: str) -> Path:
    """`<stem>.safetensors` in `directory`, checked; refuses a directory that only has pickle weights."""
    path = Path(directory) / f"{stem}.safetensors"
    if not path.is_file():
        pickles = [p.name for p in Path(directory).glob(f"{stem}.*") if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
        if pickles:
            raise UnsafeWeights(f"{directory}: {what} weights are only in {pickles[0]} (a pickle, which can run code "
                                f"when loaded); ftlab loads safetensors only: convert it to {path.name}")
        raise UnsafeWeights(f"{directory}: no {path.name}; {what} weights must be a safetensors file")
    try:
        safetensors_header(path)
    except ValueError as exc:
        raise UnsafeWeights(f"{path}: {what} weights are corrupt ({exc}); delete {directory} and re-materialize "
                            f"the asset that wrote it") from None
    return path


# --- checkpoints -------------------------------------------------------------------------------------------

def checkpoints_newest_first(checkpoint_dir: Path) -> list[Path]:
    if not checkpoint_dir.is_dir():
        return []
    found = [p for p in checkpoint_dir.iterdir() if p.is_dir() and CHECKPOINT.match(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT.match(p.name).group(1)), reverse=True)


def set_aside(checkpoint: Path, reason: str) -> None:
    """Rename a checkpoint out of the Trainer's sight (it only looks at checkpoint-N); kept for inspection."""
    target = checkpoint.with_name(f"{reason}-{checkpoint.name}")
    try:
        os.replace(checkpoint, target)
    except FileNotFoundError:  # another rank of a distributed run moved it first
        return
    except OSError:  # a leftover of an earlier run has that name already
        import shutil

        shutil.rmtree(target, ignore_errors=True)
        os.replace(checkpoint, target)
    log.warning("checkpoint %s set aside as %s (%s)", checkpoint, target.name, reason)


def check_checkpoint(checkpoint: Path) -> None:
    """Raise CheckpointError naming the first unusable file of a complete checkpoint."""
    state = checkpoint / TRAINER_STATE
    advice = (f"delete {checkpoint} to resume from the previous checkpoint, or delete {checkpoint.parent} "
              f"to train from scratch")
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{state}: corrupt checkpoint state ({exc}); {advice}") from None
    for weights in sorted(checkpoint.glob("*.safetensors")):
        try:
            safetensors_header(weights)
        except ValueError as exc:
            raise CheckpointError(f"{weights}: corrupt checkpoint weights ({exc}); {advice}") from None


def resumable_checkpoint(checkpoint_dir: Path) -> str | None:
    """The newest complete checkpoint, checked; half-written ones (a process killed while saving) are set aside.

    The Trainer writes trainer_state.json after the weights, optimizer and RNG state, and only then deletes
    older checkpoints; so a checkpoint without it is the interrupted save, and its predecessor is intact."""
    for checkpoint in checkpoints_newest_first(Path(checkpoint_dir)):
        if not (checkpoint / TRAINER_STATE).is_file():
            set_aside(checkpoint, "incomplete")
            continue
        check_checkpoint(checkpoint)
        return str(checkpoint)
    return None


def weights_are_finite(checkpoint: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    return all(bool(torch.isfinite(t.float()).all()) for f in checkpoint.glob("*.safetensors")
               for t in load_file(str(f)).values())


def keep_last_good_checkpoint(checkpoint_dir: Path, failed_step: int) -> Path | None:
    """Set aside the checkpoints from step `failed_step - 1` on (their weights led to the nan) and any with nan/inf
    weights; return the newest remaining one, which a re-run resumes from."""
    for checkpoint in checkpoints_newest_first(Path(checkpoint_dir)):
        if int(CHECKPOINT.match(checkpoint.name).group(1)) < failed_step - 1 and weights_are_finite(checkpoint):
            return checkpoint
        set_aside(checkpoint, "nonfinite")
    return None


def stop_on_nonfinite_loss(trainer, checkpoint_dir: Path) -> None:
    """Check every training step's loss; a nan or inf stops training with the step (the Trainer's own
    `logging_nan_inf_filter` would only leave it out of the logged average and carry on)."""
    import torch

    step = trainer.training_step

    def training_step(model, inputs, *args, **kwargs):
        loss = step(model, inputs, *args, **kwargs)
        if not bool(torch.isfinite(loss.detach()).all()):
            raise nonfinite_error(float(loss.detach().float().mean()), trainer.state.global_step + 1,
                                  trainer.args.learning_rate, checkpoint_dir)
        return loss

    trainer.training_step = training_step


def nonfinite_error(value: float, step: int, learning_rate: float, checkpoint_dir: Path) -> NonFiniteLoss:
    kept = keep_last_good_checkpoint(checkpoint_dir, step)
    where = (f"the last good checkpoint {kept} is kept and a re-run resumes from it" if kept
             else "no good checkpoint was written before it")
    return NonFiniteLoss(
        f"training loss is {value} at step {step}: training stopped; {where}. Lower train.learning_rate "
        f"(now {learning_rate:g}), set train.bf16: off, or look for broken rows in the data"
    )


# --- memory --------------------------------------------------------------------------------------------------

def parameter_count(model_dir: Path) -> int | None:
    """Parameters of a local model, from its safetensors headers (no weights loaded); None when unknown."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        total += sum(math.prod(t["shape"]) for t in safetensors_header(path).values())
    return total


def available_memory_mb(on_gpu: bool) -> float:
    """Free GPU memory, or RAM available to this process (the cgroup limit counts); FTLAB_MEMORY_LIMIT_MB caps it
    (a machine shared with other jobs)."""
    if on_gpu:
        import torch

        free = torch.cuda.mem_get_info()[0] / 2**20
    else:
        import psutil

        free = psutil.virtual_memory().available / 2**20
        free = min(free, _cgroup_free_mb())
    cap = os.environ.get("FTLAB_MEMORY_LIMIT_MB")
    return min(free, float(cap)) if cap else free


def _cgroup_free_mb() -> float:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return math.inf
    return math.inf if limit == "max" else (int(limit) - used) / 2**20


def check_memory(model_name: str, model_dir: str, quantization: str, num_processes: int = 1) -> dict | None:
    """Fail before loading when params x bytes/param x overhead (x processes) exceeds the memory available."""
    import torch

    if not Path(model_dir).is_dir():
        log.info("model %s is a hub id: no memory estimate before download", model_name)
        return None
    params = parameter_count(Path(model_dir))
    if params is None:
        return None
    on_gpu = torch.cuda.is_available()
    need = params * BYTES_PER_PARAM[quantization] * TRAINING_OVERHEAD * (1 if on_gpu else num_processes) / 2**20
    free = available_memory_mb(on_gpu)
    if need > free:
        raise InsufficientMemory(
            f"model.name {model_name!r}: training needs about {need:,.0f} MB ({params / 1e6:,.1f}M parameters x "
            f"{BYTES_PER_PARAM[quantization]:g} bytes x {TRAINING_OVERHEAD} overhead"
            f"{f' x {num_processes} processes' if num_processes > 1 and not on_gpu else ''}), but only "
            f"{free:,.0f} MB is available on the {'GPU' if on_gpu else 'machine'}; use a smaller model, "
            f"model.quantization: 4bit (CUDA), fewer train.num_processes, or free memory"
        )
    return {"params": params, "need_mb": round(need, 1), "available_mb": round(free, 1)}
