"""The offline registry: $FTLAB_HOME/registry/<lab>.json lists a lab's releases and marks its champion."""

from __future__ import annotations

import json
from pathlib import Path

from ftlab_pipelines.core import artifacts
from ftlab_pipelines.core.config.settings import Settings


def registry_file(settings: Settings, lab: str) -> Path:
    return settings.registry_dir / f"{lab}.json"


def releases(settings: Settings, lab: str) -> list[dict]:
    """The lab's releases, oldest first (none before its first publish)."""
    path = registry_file(settings, lab)
    return json.loads(path.read_text()) if path.is_file() else []


def update_local_registry(settings: Settings, lab: str, entry: dict) -> list[dict]:
    """Append a release to FTLAB_HOME/registry/<lab>.json (the offline registry)."""
    entries = [e for e in releases(settings, lab) if e.get("path") != entry["path"]] + [entry]
    if entry.get("champion"):
        for e in entries:
            e["champion"] = e["path"] == entry["path"]
    settings.registry_dir.mkdir(parents=True, exist_ok=True)
    artifacts.write_json(registry_file(settings, lab), entries)
    return entries


def local_champion(settings: Settings, lab: str) -> dict | None:
    entries = releases(settings, lab)
    champions = [e for e in entries if e.get("champion")]
    return champions[-1] if champions else (entries[-1] if entries else None)


def set_local_champion(settings: Settings, lab: str, mlflow_version: int) -> dict | None:
    """Mark the local release of an MLflow version as champion (after a manual promotion); None if not here."""
    entries = releases(settings, lab)
    target = [e for e in entries if e.get("mlflow_version") == mlflow_version]
    if not target:
        return None
    for e in entries:
        e["champion"] = e is target[-1]
    artifacts.write_json(registry_file(settings, lab), entries)
    return target[-1]
