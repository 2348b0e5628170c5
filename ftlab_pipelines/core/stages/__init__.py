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
class CheckOutcome:
    """Verdict of a check the stage ran on its own output (e.g. the data contract)."""

    name: str
    passed: bool
    description: str | None
    report: Markdown
    failures: int
    blocks_downstream: bool = False  # an error that stops the run (data contract), else a warning


@dataclass
class StageResult:
    manifest: dict
    metadata: dict = field(default_factory=dict)
    data_version: str | None = None
    checks: list[CheckOutcome] = field(default_factory=list)
