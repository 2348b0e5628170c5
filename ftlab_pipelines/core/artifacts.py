"""The artifact store: content-keyed directories written atomically under FTLAB_HOME/artifacts."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

from ftlab_pipelines.core.config.settings import Settings


def stage_dir(settings: Settings, lab: str, stage: str, key: str) -> Path:
    """Final location of one stage's output for one cache key."""
    return settings.artifacts_dir / lab / stage / key


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temp directory next to `final`; rename it into place only if the block succeeds.

    A reader never sees a half-written directory, and a crash leaves the previous result intact.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(final)
    tmp = final.parent / f"{_tmp_prefix(final)}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if final.exists():
            old = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _tmp_prefix(final: Path) -> str:
    return f".tmp-{final.name}-{socket.gethostname()}-"


def remove_orphans(final: Path) -> list[Path]:
    """Delete temp dirs for `final` left by killed processes of this host, so a re-run starts clean.

    The temp name carries host and pid; a temp dir of a live process (a concurrent writer) is left alone."""
    prefix, removed = _tmp_prefix(final), []
    for tmp in final.parent.glob(f"{glob.escape(prefix)}*"):
        pid = tmp.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def write_json(path: Path, payload: object) -> Path:
    """Write JSON atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
