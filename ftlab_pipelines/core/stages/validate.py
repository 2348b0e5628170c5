"""validated_dataset: run the lab's data contract (GX 1.x) on the raw data and its explicit test source."""

from __future__ import annotations

import pandas as pd

from ftlab_pipelines.core.data import contracts
from ftlab_pipelines.core.stages import CONTRACT_CHECK, CheckOutcome, Markdown
from ftlab_pipelines.core.stages.results import RawDataset, ValidatedDataset
from ftlab_pipelines.core.stages.runner import Prepared, Report, StageContext, Target


class ContractFailed(ValueError):
    """Downstream stages refuse data whose contract failed."""


def build(lab, upstream: dict, prepared: Prepared, target: Target, ctx: StageContext) -> ValidatedDataset:
    raw: RawDataset = upstream["raw_dataset"]
    spec = contracts.load_contract(ctx.settings.contract_path(lab.contract))
    reports = [contracts.run_contract(pd.read_parquet(raw.data_path), spec, source=raw.origin)]
    if raw.test_path is not None:
        reports.append(contracts.run_contract(pd.read_parquet(raw.test_path), contracts.for_test_source(spec),
                                              source=raw.test_origin))
    passed = all(r.success for r in reports)
    (target.tmp / "contract_report.md").write_text("\n\n".join(r.to_markdown() for r in reports), encoding="utf-8")
    return ValidatedDataset(
        key=target.key, dir=str(target.out), data_path=str(raw.data_path),
        test_path=str(raw.test_path) if raw.test_path else None, origin=raw.origin, test_origin=raw.test_origin,
        contract=lab.contract, passed=passed, failures=sum(len(r.failures) for r in reports),
        error=None if passed else "\n".join(r.error_message() for r in reports if not r.success)[:2000],
    )


def report(lab, upstream: dict, result: ValidatedDataset, ctx: StageContext, reused: bool,
           prepared: Prepared) -> Report:
    text = result.report_path.read_text(encoding="utf-8")
    ctx.run.set_tags({"contract": result.contract})
    ctx.run.log_params({"contract": result.contract, "contract_file": str(ctx.settings.contract_path(lab.contract))})
    ctx.run.log_metrics({"contract_passed": float(result.passed), "failed_expectations": result.failures})
    ctx.run.log_artifact(result.report_path)
    check = CheckOutcome(CONTRACT_CHECK, result.passed, result.error, Markdown(text), result.failures,
                         blocks_downstream=True)
    metadata = {"contract": result.contract, "passed": result.passed, "failed_expectations": result.failures,
                "report": Markdown(text)}
    return Report(metadata, [check])


def require_valid(validated: ValidatedDataset) -> None:
    if not validated.passed:
        raise ContractFailed(
            f"{validated.origin}: data contract {validated.contract!r} failed (see {validated.report_path}); "
            f"fix the data and re-materialize validated_dataset"
        )
