"""A CSV that breaks its contract fails the blocking check, and nothing downstream materializes."""

from __future__ import annotations

import dagster as dg
import pandas as pd
from conftest import tiny_lab, write_labs

from ftlab_pipelines.definitions import build_definitions
from ftlab_pipelines.defs.resources import default_resources


def test_bad_labels_block_everything_downstream(tmp_path):
    bad = tmp_path / "bad_sms.csv"
    rows = [("ham", f"see you at {i}") for i in range(150)] + [("spam", f"WIN {i}") for i in range(30)]
    rows[7] = ("maybe", "an unknown label")
    pd.DataFrame(rows, columns=["label", "text"]).to_csv(bad, index=False)
    lab = tiny_lab("sms_spam")
    lab["source"] = {"local_path": str(bad)}
    defs = build_definitions(str(write_labs(tmp_path / "labs", {"bad_spam": lab})))
    with dg.instance_for_test() as instance:
        result = dg.materialize(list(defs.assets), instance=instance, resources=default_resources(),
                                raise_on_error=False)
        materialized = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
        checks = result.get_asset_check_evaluations()
    assert not result.success
    assert materialized == {"raw_dataset", "validated_dataset"}
    assert len(checks) == 1 and checks[0].check_name == "data_contract" and not checks[0].passed
    report = checks[0].metadata["report"].value
    assert "ExpectColumnValuesToBeInSet" in report and "maybe" in report and "7" in report
    assert "bad_sms.csv" in checks[0].description


def test_splits_refuses_failed_data_even_when_run_alone():
    import pytest

    from ftlab_pipelines.core.stages.results import ValidatedDataset
    from ftlab_pipelines.core.stages.validate import ContractFailed, require_valid

    failed = ValidatedDataset(key="k", dir="/v", origin="bad.csv", contract="sms_spam", passed=False, failures=3)
    with pytest.raises(ContractFailed, match="bad.csv: data contract 'sms_spam' failed .see /v/contract_report.md"):
        require_valid(failed)
