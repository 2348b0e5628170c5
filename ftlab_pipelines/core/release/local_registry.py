"""The offline registry: $FTLAB_HOME/registry/<lab>.json lists a lab's releases and marks its champion."""

from __future__ import annotations

import json

from ftlab_pipelines.core import artifacts
from ftlab_pipelines.core.config.settings import Settings


def update_local_registry(settings: Settings, lab: str, entry: dict) -> list[dict]:
    """Append a release to FTLAB_HOME/registry/<lab>.json (the offline registry)."""
    registry = settings.registry_dir
    registry.mkdir(parents=True, exist_ok=True)
    path = registry / f"{lab}.json"
    entries = json.loads(path.read_text()) if path.is_file() else []
    entries = [e for e in entries if e.get("path") != entry["path"]] + [entry]
    if entry.get("champion"):
        for e in entries:
            e["champion"] = e["path"] == entry["path"]
    artifacts.write_json(path, entries)
    return entries


def local_champion(settings: Settings, lab: str) -> dict | None:
    path = settings.registry_dir / f"{lab}.json"
    if not path.is_file():
        return None
    entries = json.loads(path.read_text())
    champions = [e for e in entries if e.get("champion")]
    return champions[-1] if champions else (entries[-1] if entries else None)


def set_local_champion(settings: Settings, lab: str, mlflow_version: int) -> dict | None:
    """Mark the local release of an MLflow version as champion (after a manual promotion); None if not here."""
    path = settings.registry_dir / f"{lab}.json"
    entries = json.loads(path.read_text()) if path.is_file() else []
    target = [e for e in entries if e.get("mlflow_version") == mlflow_version]
    if not target:
        return None
    for e in entries:
        e["champion"] = e is target[-1]
    artifacts.write_json(path, entries)
    return target[-1]
