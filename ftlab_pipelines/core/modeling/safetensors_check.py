"""Weights come from safetensors files only: header checks that read no tensor, and a parameter count."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path


class UnsafeWeights(ValueError):
    """Weights in a pickle-based format (.bin, .pt) where only safetensors are accepted."""


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


def parameter_count(model_dir: Path) -> int | None:
    """Parameters of a local model, from its safetensors headers (no weights loaded); None when unknown."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        total += sum(math.prod(t["shape"]) for t in safetensors_header(path).values())
    return total
