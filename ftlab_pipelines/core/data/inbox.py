"""New-data drops: which files in a lab's inbox are new, by content hash (not by mtime or name).

The sensor keeps a `InboxState` as its cursor. A file is hashed again only when its size or mtime
changed; it triggers a run only when its content hash was never seen, so touching, renaming or
copying a file that was already trained on does nothing.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path

from ftlab_pipelines.core.artifacts import file_sha256
from ftlab_pipelines.core.config.settings import Settings


def inbox_dir(settings: Settings, lab: str) -> Path:
    return settings.inbox_dir / lab


@dataclass
class InboxState:
    """Hashes already seen (each starts one run), and a stat cache so unchanged files are not re-read."""

    seen: dict[str, str] = field(default_factory=dict)  # sha256 -> file name that introduced it
    stats: dict[str, list] = field(default_factory=dict)  # file name -> [size, mtime_ns, sha256]

    @classmethod
    def from_cursor(cls, cursor: str | None) -> InboxState:
        if not cursor:
            return cls()
        raw = json.loads(cursor)
        return cls(seen=raw.get("seen", {}), stats=raw.get("stats", {}))

    def to_cursor(self) -> str:
        return json.dumps({"seen": self.seen, "stats": self.stats}, sort_keys=True)


@dataclass(frozen=True)
class NewFile:
    path: Path
    sha256: str


def scan(folder: Path, patterns: list[str], state: InboxState) -> tuple[list[NewFile], InboxState]:
    """The files with content not seen before (oldest first), and the updated state."""
    if not folder.is_dir():
        return [], state
    candidates = [p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and any(fnmatch.fnmatch(p.name, g) for g in patterns)]
    candidates.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
    stats, seen, new = {}, dict(state.seen), []
    for path in candidates:
        info = path.stat()
        cached = state.stats.get(path.name)
        if cached and cached[:2] == [info.st_size, info.st_mtime_ns]:
            sha = cached[2]
        else:
            sha = file_sha256(path)
        stats[path.name] = [info.st_size, info.st_mtime_ns, sha]
        if sha not in seen:
            seen[sha] = path.name
            new.append(NewFile(path, sha))
    return new, InboxState(seen=seen, stats=stats)


class InboxFileChanged(ValueError):
    """The file changed between the sensor's look and the run: train on what the sensor saw, or nothing."""


def verify(path: Path, expected_sha256: str) -> None:
    if not path.is_file():
        raise InboxFileChanged(f"{path}: the inbox file that requested this run is gone; drop it into the inbox again")
    actual = file_sha256(path)
    if actual != expected_sha256:
        raise InboxFileChanged(
            f"{path}: content changed since the sensor requested this run (sha256 {expected_sha256[:12]} -> "
            f"{actual[:12]}); nothing was trained on it. The sensor requests a new run for the new content")
