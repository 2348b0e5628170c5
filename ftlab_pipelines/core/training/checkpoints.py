"""Resumable checkpoints: the newest complete one is checked before a resume; bad ones are set aside."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from ftlab_pipelines.core.modeling.safetensors_check import safetensors_header

log = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"  # the Trainer writes it last: a checkpoint without it is half-written


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be resumed from; the message names it and says what to delete."""


def step_of(checkpoint: str | Path) -> int:
    """The global step a checkpoint directory (checkpoint-N) was saved at."""
    return int(CHECKPOINT.match(Path(checkpoint).name).group(1))


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


def rng_files_missing(checkpoint: Path, world_size: int) -> list[str]:
    """Every rank saves its own RNG state (rng_state_<rank>.pth) without waiting for rank 0, which writes
    trainer_state.json: a rank lost while saving leaves a checkpoint that looks complete but would resume that
    rank with a fresh RNG (other dropout masks than the uninterrupted run)."""
    if world_size <= 1:
        return []
    return [name for r in range(world_size) if not (checkpoint / (name := f"rng_state_{r}.pth")).is_file()]


def resumable_checkpoint(checkpoint_dir: Path, world_size: int = 1) -> str | None:
    """The newest complete checkpoint, checked; half-written ones (a process killed while saving) are set aside.

    The Trainer writes trainer_state.json after the weights, optimizer and rank 0's RNG state, and only then
    deletes older checkpoints; so a checkpoint without it (or, in a distributed run, without every rank's RNG
    state) is the interrupted save, and its predecessor is intact."""
    for checkpoint in checkpoints_newest_first(Path(checkpoint_dir)):
        if not (checkpoint / TRAINER_STATE).is_file() or rng_files_missing(checkpoint, world_size):
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
