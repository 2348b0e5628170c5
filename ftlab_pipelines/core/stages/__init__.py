"""One function per pipeline asset: plain Python that the Dagster assets call.

Each stage takes the lab config, upstream manifests and an MLflow `AssetRun`, writes its
artifacts atomically under FTLAB_HOME, and returns a `StageResult`: a JSON-able manifest for
downstream stages plus metadata for the UI.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class Markdown(str):
    """Metadata text to render as markdown (tables, inline images)."""


@dataclass
class StageResult:
    manifest: dict
    metadata: dict = field(default_factory=dict)
    data_version: str | None = None
