"""One module per pipeline asset: plain Python that the Dagster assets hand to the stage runner.

pipeline.py declares what each stage reads; runner.py runs any stage (key, reuse, atomic write, MLflow);
results.py holds the typed results that stages hand downstream.
"""

from __future__ import annotations

from dataclasses import dataclass

# Names of the checks stages run on their own output (Dagster asset checks of the same name).
CONTRACT_CHECK = "data_contract"
MERGE_PARITY_CHECK = "merge_parity"
PROMOTION_GATE_CHECK = "promotion_gate"


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
