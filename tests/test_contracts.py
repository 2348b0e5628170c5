"""Data contracts, validated for real with Great Expectations (no mocks)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ftlab_pipelines.core.data.contracts import (
    ContractError,
    ContractSpec,
    load_contract,
    run_contract,
)

REPO = Path(__file__).resolve().parents[1]
SMS_CONTRACT = REPO / "data_contracts" / "sms_spam.yaml"
FIN_CONTRACT = REPO / "data_contracts" / "financial_sentiment.yaml"
DATA_DIR = Path(os.environ.get("FTLAB_DATA_DIR") or "/work/shared/data")


@pytest.fixture(scope="module")
def sms_spec() -> ContractSpec:
    return load_contract(SMS_CONTRACT)


def sms_frame(n_ham: int = 160, n_spam: int = 40) -> pd.DataFrame:
    """A small valid SMS frame: 200 rows, 20% spam, as the contract wants."""
    labels = ["ham"] * n_ham + ["spam"] * n_spam
    return pd.DataFrame({"label": labels, "text": [f"message number {i}" for i in range(len(labels))]})


def failure(report, expectation: str):
    found = [o for o in report.failures if o.expectation == expectation]
    assert found, f"expected a failing {expectation}, got:\n{report.error_message()}"
    return found[0]


def write_contract(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "contract.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("contract", "relative"),
    [
        (SMS_CONTRACT, "sms_spam/sms_spam.csv"),
        (FIN_CONTRACT, "financial_phrasebank/financial_phrasebank_50agree.csv"),
    ],
)
def test_real_data_passes_its_contract(contract, relative):
    csv = DATA_DIR / relative
    if not csv.is_file():
        pytest.skip(f"{csv} not available (set FTLAB_DATA_DIR)")
    df = pd.read_csv(csv)
    report = run_contract(df, contract, source=csv.name)
    assert report.success, report.error_message()
    assert len(report.outcomes) >= 8
    # A stratified ~300-row subsample must pass too (labs and tests use those).
    sample = df.groupby("label", group_keys=False).sample(frac=300 / len(df), random_state=0)
    assert run_contract(sample, contract, source="sample").success


def test_valid_frame_passes(sms_spec):
    report = run_contract(sms_frame(), sms_spec, source="ok.csv")
    assert report.success, report.error_message()
    assert report.failures == []
    assert report.contract == str(SMS_CONTRACT)


def test_label_outside_set_names_column_row_and_value(sms_spec):
    df = sms_frame()
    df.index = df.index + 1000  # examples must be 0-based positions, not index labels
    df.iloc[7, df.columns.get_loc("label")] = "spum"
    report = run_contract(df, sms_spec, source="bad.csv")
    assert not report.success
    outcome = failure(report, "ExpectColumnValuesToBeInSet")
    assert outcome.column == "label"
    assert outcome.examples == [{"row": 7, "value": "spum"}]
    assert "1 of 200 rows not in {ham, spam}" in outcome.summary
    assert [o.expectation for o in report.failures] == ["ExpectColumnValuesToBeInSet"]
    message = report.error_message()
    assert message.startswith("bad.csv fails data contract")
    assert "row 7: 'spum'" in message


def test_nan_label_fails_not_null_with_its_row(sms_spec):
    df = sms_frame()
    df.loc[11, "label"] = None
    report = run_contract(df, sms_spec, source="nan.csv")
    outcome = failure(report, "ExpectColumnValuesToNotBeNull")
    assert outcome.column == "label"
    assert outcome.examples == [{"row": 11, "value": None}]
    assert "row 11: null" in report.error_message()


def test_missing_column_is_reported_and_dependent_checks_skipped(sms_spec):
    df = sms_frame().rename(columns={"text": "body"})
    report = run_contract(df, sms_spec, source="renamed.csv")
    outcome = failure(report, "ExpectColumnToExist")
    assert outcome.column == "text"
    assert "column 'text' is missing" in outcome.summary and "label, body" in outcome.summary
    assert not any(o.column == "text" and o.expectation != "ExpectColumnToExist" for o in report.outcomes)
    assert len(report.failures) == 1
    assert "column 'text' is missing" in report.error_message()


def test_text_too_long_and_blank_fail_with_rows(sms_spec):
    df = sms_frame()
    df.loc[5, "text"] = "x" * 1200
    df.loc[9, "text"] = "   "
    report = run_contract(df, sms_spec, source="texts.csv")
    assert failure(report, "ExpectColumnValueLengthsToBeBetween").examples == [{"row": 5, "value": "x" * 1200}]
    assert failure(report, "ExpectColumnValuesToMatchRegex").examples == [{"row": 9, "value": "   "}]
    assert "(1200 chars)" in report.error_message()


def test_share_out_of_bounds(sms_spec):
    report = run_contract(sms_frame(n_ham=198, n_spam=2), sms_spec, source="rare_spam.csv")
    outcome = failure(report, "ExpectColumnMeanToBeBetween")
    assert outcome.column == "label"
    assert "share of 'spam' is 0.010, allowed [0.05, 0.4]" in [o.summary for o in report.failures]


def test_share_of_one_class_out_of_bounds():
    labels = ["negative"] * 4 + ["neutral"] * 120 + ["positive"] * 76
    df = pd.DataFrame({"label": labels, "text": [f"Sales rose {i} percent ." for i in range(200)]})
    report = run_contract(df, FIN_CONTRACT, source="fin.csv")
    assert [o.summary for o in report.failures] == ["share of 'negative' is 0.020, allowed [0.05, 0.25]"]


def test_only_one_class_fails_both_shares(sms_spec):
    report = run_contract(sms_frame(n_ham=200, n_spam=0), sms_spec, source="all_ham.csv")
    assert [o.summary for o in report.failures] == [
        "share of 'ham' is 1.000, allowed [0.6, 0.95]",
        "share of 'spam' is 0.000, allowed [0.05, 0.4]",
    ]


def test_too_few_rows(sms_spec):
    report = run_contract(sms_frame(n_ham=40, n_spam=10), sms_spec, source="tiny.csv")
    outcome = failure(report, "ExpectTableRowCountToBeBetween")
    assert outcome.summary == "50 rows, need at least 100"
    assert len(report.failures) == 1


def test_markdown_lists_failures_examples_and_advice(sms_spec):
    df = sms_frame()
    df.loc[3, "label"] = "spum"
    md = run_contract(df, sms_spec, source="bad.csv").to_markdown()
    assert "| **FAIL** | ExpectColumnValuesToBeInSet | label |" in md
    assert "| pass | ExpectColumnValuesToNotBeNull | text |" in md
    assert "| 3 | 'spum' |" in md
    assert md.rstrip().endswith(f"Fix the data in bad.csv or relax the contract {SMS_CONTRACT}.")


def test_unknown_key_raises_contract_error_naming_file_and_key(tmp_path):
    data = yaml.safe_load(SMS_CONTRACT.read_text())
    data["label"]["sharebounds"] = data["label"].pop("share_bounds")
    path = write_contract(tmp_path, data)
    with pytest.raises(ContractError) as exc:
        load_contract(path)
    assert str(path) in str(exc.value)
    assert "unknown key 'label.sharebounds'" in str(exc.value)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["label"]["share_bounds"].update(maybe=[0.0, 0.1]), "label.share_bounds"),
        (lambda d: d["text"].update(min_length=50, max_length=10), "text.max_length"),
        (lambda d: d.update(columns=["label"]), "key 'text'"),
        (lambda d: d["extra_expectations"].append({"type": "ExpectNothing"}), "'ExpectNothing' is not a GX"),
        (lambda d: d["extra_expectations"][0]["kwargs"].update(regexx="a"), "invalid kwargs"),
    ],
)
def test_invalid_contract_values_raise_contract_error(tmp_path, change, expected):
    data = yaml.safe_load(SMS_CONTRACT.read_text())
    change(data)
    path = write_contract(tmp_path, data)
    with pytest.raises(ContractError, match=str(path)) as exc:
        load_contract(path)
    assert expected in str(exc.value)


def test_missing_contract_file_raises_contract_error(tmp_path):
    with pytest.raises(ContractError, match="nope.yaml"):
        load_contract(tmp_path / "nope.yaml")


def test_run_contract_accepts_a_path_and_leaves_the_frame_alone():
    df = sms_frame()
    before = df.copy()
    report = run_contract(df, SMS_CONTRACT)
    assert report.success and report.source == "dataset"
    pd.testing.assert_frame_equal(df, before)


def test_no_progress_bars_on_stderr(sms_spec, capfd):
    run_contract(sms_frame(), sms_spec)
    assert "Calculating Metrics" not in capfd.readouterr().err


def test_distinct_columns_and_several_text_rules_name_the_failing_rows(tmp_path):
    path = write_contract(tmp_path, {
        "columns": ["question", "response_j", "response_k"],
        "texts": [{"column": "question", "min_length": 3, "max_length": 100},
                  {"column": "response_j", "min_length": 3, "max_length": 20}],
        "distinct_columns": [["response_j", "response_k"]],
    })
    frame = pd.DataFrame({"question": ["why?", "how so?", "what now?"],
                          "response_j": ["because", "same answer", "a reply far too long for the rule"],
                          "response_k": ["no", "same answer", "other"]})
    report = run_contract(frame, path, source="pairs.csv")
    assert not report.success
    message = report.error_message()
    assert "response_j equals response_k in 1 of 3 rows" in message and "row 1" in message
    assert "response_j: 1 of 3 rows have length outside [3, 20]" in message
    assert "row 2" in message


def test_distinct_columns_must_be_listed(tmp_path):
    path = write_contract(tmp_path, {"columns": ["a"], "distinct_columns": [["a", "b"]]})
    with pytest.raises(ContractError, match="distinct_columns.*'b'"):
        load_contract(path)
