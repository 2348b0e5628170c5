"""Turn plain-Python stage metadata into Dagster metadata values."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from ftlab_pipelines.core.stages import Markdown


def to_dagster(metadata: dict) -> dict:
    out = {}
    for key, value in metadata.items():
        if value is None:
            continue
        if isinstance(value, Markdown):
            out[key] = dg.MetadataValue.md(str(value))
        elif isinstance(value, Path):
            out[key] = dg.MetadataValue.path(str(value))
        elif isinstance(value, dict | list):
            out[key] = dg.MetadataValue.json(value)
        elif isinstance(value, bool):
            out[key] = dg.MetadataValue.bool(value)
        elif isinstance(value, int | float | str):
            out[key] = value
        else:
            out[key] = str(value)
    return out
