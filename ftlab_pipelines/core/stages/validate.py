"""validated_dataset: run the lab's data contract (GX 1.x) on the raw data."""

from __future__ import annotations

import pandas as pd

from ftlab_pipelines.core import artifacts
from ftlab_pipelines.core.config import settings
from ftlab_pipelines.core.config.labs import LabConfig
from ftlab_pipelines.core.data import contracts
from ftlab_pipelines.core.stages import CheckOutcome, Markdown, StageResult
from ftlab_pipelines.core.tracking import AssetRun

CONTRACT_CHECK = "data_contract"


class ContractFailed(ValueError):
    """Downstream stages refuse data whose contract failed."""


def contract_path(lab: LabConfig):
    return settings.contracts_dir() / f"{lab.contract}.yaml"


def validate_dataset(lab: LabConfig, raw: dict, run: AssetRun) -> StageResult:
    """Validate; the manifest records the verdict so no later stage can train on failed data."""
    frame = pd.read_parquet(raw["path"])
    spec = contracts.load_contract(contract_path(lab))
    reports = [contracts.run_contract(frame, spec, source=raw["origin"])]
    if raw.get("test_path"):
        reports.append(contracts.run_contract(pd.read_parquet(raw["test_path"]), contracts.for_test_source(spec),
                                              source=raw["test_origin"]))
    report = combined(reports)
    out = artifacts.stage_dir(lab.name, "validated_dataset", raw["data_hash"])
    with artifacts.atomic_dir(out) as tmp:
        (tmp / "contract_report.md").write_text(report.to_markdown(), encoding="utf-8")
    run.set_tags({"data_hash": raw["data_hash"], "contract": lab.contract})
    run.log_params({"contract": lab.contract, "contract_file": str(contract_path(lab))})
    run.log_metrics({"contract_passed": float(report.success), "failed_expectations": len(report.failures),
                     "rows": len(frame)})
    run.log_artifact(out / "contract_report.md")
    manifest = {**raw, "contract": lab.contract, "contract_passed": report.success,
                "report_path": str(out / "contract_report.md")}
    metadata = {"contract": lab.contract, "passed": report.success, "failed_expectations": len(report.failures),
                "report": Markdown(report.to_markdown())}
    check = CheckOutcome(CONTRACT_CHECK, report.success, None if report.success else report.error_message()[:2000],
                         Markdown(report.to_markdown()), len(report.failures), blocks_downstream=True)
    return StageResult(manifest, metadata, data_version=raw["data_hash"], checks=[check])


class CombinedReport:
    """The contract verdicts of the main and the test source, read as one."""

    def __init__(self, reports: list):
        self.reports = reports
        self.success = all(r.success for r in reports)
        self.failures = [f for r in reports for f in r.failures]

    def to_markdown(self) -> str:
        return "\n\n".join(r.to_markdown() for r in self.reports)

    def error_message(self) -> str:
        return "\n".join(r.error_message() for r in self.reports if not r.success)


def combined(reports: list):
    return reports[0] if len(reports) == 1 else CombinedReport(reports)


def require_valid(validated: dict) -> None:
    if not validated.get("contract_passed"):
        raise ContractFailed(
            f"{validated.get('origin')}: data contract {validated.get('contract')!r} failed "
            f"(see {validated.get('report_path')}); fix the data and re-materialize validated_dataset"
        )
