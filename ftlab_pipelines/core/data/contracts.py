"""Data contracts: one YAML file per dataset (`ContractSpec`), checked with Great Expectations 1.x.

`run_contract` validates a DataFrame and returns a `ContractReport`, which renders as a markdown
table (for asset metadata) or as a plain-text error message naming failing rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ftlab_pipelines.core.config.base import Strict as _Strict
from ftlab_pipelines.core.config.errors import format_validation_errors

MAX_EXAMPLES = 5
Label = str | int


class ContractError(ValueError):
    """A contract file that cannot be used; the message names the file and the key."""


class TextRule(_Strict):
    column: str = Field(description="Column holding the text.")
    min_length: int = Field(1, ge=0, description="Minimum text length in characters, inclusive.")
    max_length: int = Field(description="Maximum text length in characters, inclusive.")

    @field_validator("max_length")
    @classmethod
    def _not_below_min(cls, value: int, info: ValidationInfo) -> int:
        if value < info.data.get("min_length", 0):
            raise ValueError(f"max_length {value} is below min_length {info.data['min_length']}")
        return value


class LabelRule(_Strict):
    column: str = Field(description="Column holding the class label.")
    values: list[Label] = Field(min_length=1, description="Allowed label values.")
    share_bounds: dict[Label, tuple[float, float]] = Field(
        default_factory=dict, description="Per-class share of all rows, inclusive [min, max], each within [0, 1]."
    )

    test_share_bounds: dict[Label, tuple[float, float]] | None = Field(
        None, description="Per-class share bounds for a lab's explicit test source (e.g. the natural fraud rate); "
                          "default: share_bounds."
    )

    @field_validator("share_bounds", "test_share_bounds")
    @classmethod
    def _bounds_make_sense(cls, bounds: dict | None, info: ValidationInfo) -> dict | None:
        if bounds is None:
            return None
        allowed = info.data.get("values", [])
        for label, (low, high) in bounds.items():
            if label not in allowed:
                raise ValueError(f"class {label!r} is not in label.values {allowed}")
            if not 0 <= low <= high <= 1:
                raise ValueError(f"bounds for {label!r} must satisfy 0 <= min <= max <= 1, got [{low}, {high}]")
        return bounds


class ExtraExpectation(_Strict):
    type: str = Field(description="GX 1.x expectation class name, e.g. ExpectColumnValuesToMatchRegex.")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of that expectation.")

    @model_validator(mode="after")
    def _builds(self) -> ExtraExpectation:
        _build_expectation(self.type, self.kwargs)  # fail at load time, not mid-pipeline
        return self


class ContractSpec(_Strict):
    description: str = Field("", description="What the dataset is; shown in reports.")
    columns: list[str] = Field(min_length=1, description="Required columns; each must exist and be non-null.")
    text: TextRule | None = Field(None, description="Length rule for the text column.")
    texts: list[TextRule] = Field(
        default_factory=list, description="Length rules for further text columns (e.g. prompt and reply)."
    )
    label: LabelRule | None = Field(None, description="Allowed labels and per-class share bounds.")
    min_rows: int = Field(1, ge=0, description="Minimum number of rows.")
    numeric_columns: list[str] = Field(
        default_factory=list, description="Columns that must hold numbers (int or float dtype)."
    )
    distinct_columns: list[tuple[str, str]] = Field(
        default_factory=list, description="Column pairs whose values must differ in every row "
                                          "(e.g. the chosen and the rejected reply of a preference pair)."
    )
    extra_expectations: list[ExtraExpectation] = Field(
        default_factory=list, description="Any further GX 1.x expectations, by class name and kwargs."
    )
    _path: str = PrivateAttr("<inline contract>")  # set by load_contract, shown in reports

    @field_validator("text", "texts", "label")
    @classmethod
    def _column_is_required(cls, rule, info: ValidationInfo):
        rules = rule if isinstance(rule, list) else [rule] if rule is not None else []
        for r in rules:
            if "columns" in info.data and r.column not in info.data["columns"]:
                raise ValueError(f"column {r.column!r} must also be listed in 'columns'")
        return rule

    @field_validator("distinct_columns")
    @classmethod
    def _pairs_are_required(cls, pairs: list, info: ValidationInfo):
        for pair in pairs:
            missing = [c for c in pair if c not in info.data.get("columns", [])]
            if missing:
                raise ValueError(f"columns {missing} must also be listed in 'columns'")
        return pairs

    @property
    def text_rules(self) -> list[TextRule]:
        return ([self.text] if self.text else []) + self.texts


def _gx():
    # Imported lazily: importing GX takes ~3 s, which code that only loads contracts should not pay.
    import great_expectations

    return great_expectations


def _build_expectation(type_name: str, kwargs: dict):
    gx = _gx()
    cls = getattr(gx.expectations, type_name, None)
    if not (isinstance(cls, type) and issubclass(cls, gx.expectations.Expectation)):
        raise ValueError(f"{type_name!r} is not a GX expectation class (see great_expectations.expectations)")
    try:
        return cls(**kwargs)
    except Exception as exc:  # GX validates kwargs with pydantic v1: list its errors on one line
        errors = exc.errors() if hasattr(exc, "errors") else [{"loc": (), "msg": str(exc)}]
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'kwargs'}: {e['msg']}" for e in errors)
        raise ValueError(f"invalid kwargs for {type_name}: {problems}") from None


def _format_errors(path: Path, error: ValidationError) -> str:
    return format_validation_errors(
        path, error, "data contract",
        f"Fix {path}; the keys are documented by ContractSpec in ftlab_pipelines/core/data/contracts.py.",
    )


def load_contract(path: Path) -> ContractSpec:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ContractError(f"{path}: cannot read data contract: {exc}") from None
    if not isinstance(raw, dict):
        raise ContractError(f"{path}: a data contract must be a YAML mapping of keys, got {type(raw).__name__}")
    try:
        spec = ContractSpec.model_validate(raw)
    except ValidationError as exc:
        raise ContractError(_format_errors(path, exc)) from None
    spec._path = str(path)
    return spec


@dataclass
class ExpectationOutcome:
    expectation: str
    column: str | None
    success: bool
    summary: str
    examples: list[dict] = field(default_factory=list)


@dataclass
class ContractReport:
    contract: str
    source: str
    success: bool
    outcomes: list[ExpectationOutcome]

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    def _advice(self) -> str:
        return f"Fix the data in {self.source} or relax the contract {self.contract}."

    def to_markdown(self) -> str:
        verdict = "passed" if self.success else f"FAILED ({len(self.failures)} of {len(self.outcomes)} expectations)"
        lines = [f"**Data contract `{self.contract}` on `{self.source}`: {verdict}**", ""]
        lines += ["| status | expectation | column | summary |", "|---|---|---|---|"]
        for o in self.outcomes:
            status = "pass" if o.success else "**FAIL**"
            lines.append(f"| {status} | {o.expectation} | {_cell(o.column or '')} | {_cell(o.summary)} |")
        for o in self.failures:
            if o.examples:
                lines += ["", f"Failing rows of {o.expectation} on `{o.column}`:", "", "| row | value |", "|---|---|"]
                lines += [f"| {ex['row']} | {_cell(_show(ex['value']))} |" for ex in o.examples]
        lines += ["", self._advice() if not self.success else "Nothing to do."]
        return "\n".join(lines)

    def error_message(self) -> str:
        lines = [f"{self.source} fails data contract {self.contract}: {len(self.failures)} expectation(s) failed"]
        for o in self.failures:
            lines.append(f"  - {o.expectation}: {o.summary}")
            lines += [f"      row {ex['row']}: {_show(ex['value'])}" for ex in o.examples]
        lines.append(self._advice())
        return "\n".join(lines)


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str) and len(value) > 80:
        return f"{value[:77]!r}... ({len(value)} chars)"
    return repr(value)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _plain(value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value


@dataclass
class _Check:
    expectation: Any  # a GX Expectation instance
    column: str | None
    passed: str  # summary template; {rows}, {observed} and {detail} are filled from the GX result
    failed: str | None = None  # None: same as passed

    def summary(self, ok: bool, r: dict) -> str:
        observed = r.get("observed_value")
        rows = f"{r.get('unexpected_count')} of {r.get('element_count')} rows"
        shown = f"{observed:.3f}" if isinstance(observed, float) else ("n/a" if observed is None else str(observed))
        detail = f"{rows} unexpected" if "unexpected_count" in r else f"observed {shown}"
        template = self.passed if ok or self.failed is None else self.failed
        return template.replace("{rows}", rows).replace("{observed}", shown).replace("{detail}", detail)


def _column_checks(spec: ContractSpec, present: list) -> list[_Check]:
    E = _gx().expectations
    extra_cols = [e.kwargs["column"] for e in spec.extra_expectations if "column" in e.kwargs]
    has = "the data has columns: " + (", ".join(map(str, present)) or "(none)")
    checks = [
        _Check(E.ExpectColumnToExist(column=c), c, f"column '{c}' present", f"column '{c}' is missing; {has}")
        for c in dict.fromkeys([*spec.columns, *extra_cols])
    ]
    for c in (c for c in spec.columns if c in present):
        checks.append(_Check(E.ExpectColumnValuesToNotBeNull(column=c), c, f"{c}: no nulls", f"{c}: {{rows}} are null"))
    return checks


def _text_check(rule: TextRule) -> _Check:
    col, span = rule.column, f"[{rule.min_length}, {rule.max_length}] characters"
    exp = _gx().expectations.ExpectColumnValueLengthsToBeBetween(
        column=col, min_value=rule.min_length, max_value=rule.max_length
    )
    return _Check(exp, col, f"{col}: all lengths within {span}", f"{col}: {{rows}} have length outside {span}")


def _label_checks(rule: LabelRule, data: pd.DataFrame) -> list[_Check]:
    """Label set and per-class shares; adds the share indicator columns to `data` in place."""
    E = _gx().expectations
    col, allowed = rule.column, "{" + ", ".join(map(str, rule.values)) + "}"
    exp = E.ExpectColumnValuesToBeInSet(column=col, value_set=rule.values)
    checks = [_Check(exp, col, f"{col}: all values in {allowed}", f"{col}: {{rows}} not in {allowed}")]
    for i, (label, (low, high)) in enumerate(rule.share_bounds.items()):
        # GX has no per-class share expectation: the mean of a 0/1 indicator column is that share
        # (of all rows, so null labels count against every class).
        indicator = f"__ftlab_share_{i}"
        data[indicator] = (data[col] == label).astype(float)
        exp = E.ExpectColumnMeanToBeBetween(column=indicator, min_value=low, max_value=high)
        checks.append(_Check(exp, col, f"share of {label!r} is {{observed}}, allowed [{low}, {high}]"))
    return checks


NUMERIC_TYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32",
                 "float64", "Int64", "Float64"]


def _numeric_checks(spec: ContractSpec, present: list) -> list[_Check]:
    E = _gx().expectations
    return [_Check(E.ExpectColumnValuesToBeInTypeList(column=c, type_list=NUMERIC_TYPES), c, f"{c}: numeric",
                   f"{c}: not numeric ({{observed}}); fix the values or set source.dtype: infer")
            for c in spec.numeric_columns if c in present]


def _distinct_checks(spec: ContractSpec, data: pd.DataFrame) -> list[_Check]:
    """GX has no "columns differ" expectation: a 0/1 indicator column that must be all 1 (adds it to `data`)."""
    checks = []
    for i, (a, b) in enumerate(spec.distinct_columns):
        if a in data.columns and b in data.columns:
            indicator = f"__ftlab_{a}_differs_from_{b}"
            data[indicator] = (data[a].astype(str) != data[b].astype(str)).astype(int)
            exp = _gx().expectations.ExpectColumnValuesToBeInSet(column=indicator, value_set=[1])
            checks.append(_Check(exp, a, f"{a} differs from {b} in every row",
                                 f"{a} equals {b} in {{rows}}"))
    return checks


def _plan(spec: ContractSpec, data: pd.DataFrame) -> list[_Check]:
    # Expectations on a missing column are skipped: GX would only add a metric error for each.
    present = list(data.columns)
    row_count = _gx().expectations.ExpectTableRowCountToBeBetween(min_value=spec.min_rows)
    checks = [_Check(row_count, None, f"{{observed}} rows, need at least {spec.min_rows}")]
    checks += _column_checks(spec, present)
    checks += [_text_check(rule) for rule in spec.text_rules if rule.column in present]
    checks += _distinct_checks(spec, data)
    checks += _numeric_checks(spec, present)
    if spec.label and spec.label.column in present:
        checks += _label_checks(spec.label, data)
    for extra in spec.extra_expectations:
        col = extra.kwargs.get("column")
        if col is None or col in present:
            checks.append(_Check(_build_expectation(extra.type, extra.kwargs), col, f"{col or 'table'}: {{detail}}"))
    return checks


def _validate(data: pd.DataFrame, checks: list[_Check]) -> dict:
    """Run the checks as one GX suite; returns GX results keyed by expectation id."""
    gx = _gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # A fresh ephemeral context costs ~5 ms of a ~70 ms run (measured), so none is cached:
    # runs stay isolated and thread-safe without unique asset and suite names.
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),  # no temp data-docs site
        progress_bars=ProgressBarsConfig(globally=False),  # else tqdm bars on stderr
        analytics_enabled=False,
    )
    ctx = gx.get_context(project_config=config, mode="ephemeral")
    asset = ctx.data_sources.add_pandas("ftlab").add_dataframe_asset("frame")
    suite = ctx.suites.add(gx.ExpectationSuite(name="contract", expectations=[c.expectation for c in checks]))
    batch = asset.add_batch_definition_whole_dataframe("all")
    result = gx.ValidationDefinition(name="contract", data=batch, suite=suite).run(
        batch_parameters={"dataframe": data},
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES},
    )
    # Results do not come back in suite order; the ids suites.add() assigned match them up.
    return {r.expectation_config.id: r for r in result.results}


def _exception_message(result) -> str | None:
    info = result.exception_info or {}
    # A flat dict for expectation errors, or one dict per metric for metric errors.
    for entry in [info, *info.values()]:
        if isinstance(entry, dict) and entry.get("raised_exception"):
            return entry.get("exception_message") or "unknown error"
    return None


def _outcome(check: _Check, result) -> ExpectationOutcome:
    name, col = type(check.expectation).__name__, check.column
    if result is None:
        return ExpectationOutcome(name, col, False, "GX returned no result for this expectation")
    error = _exception_message(result)
    if error:
        return ExpectationOutcome(name, col, False, f"{col or 'table'}: GX could not evaluate it: {error}")
    ok, r = bool(result.success), result.result or {}
    pairs = zip(r.get("partial_unexpected_index_list") or [], r.get("partial_unexpected_list") or [])
    examples = [] if ok else [{"row": _plain(row), "value": _plain(value)} for row, value in pairs][:MAX_EXAMPLES]
    return ExpectationOutcome(name, col, ok, check.summary(ok, r), examples)


def for_test_source(spec: ContractSpec) -> ContractSpec:
    """The contract a lab's explicit test source must meet: the same, with the test share bounds."""
    if spec.label is None or spec.label.test_share_bounds is None:
        return spec
    label = spec.label.model_copy(update={"share_bounds": spec.label.test_share_bounds})
    test_spec = spec.model_copy(update={"label": label})
    test_spec._path = spec._path
    return test_spec


def run_contract(df: pd.DataFrame, contract: ContractSpec | Path, source: str = "dataset") -> ContractReport:
    """Validate `df` against a contract; example rows are 0-based positions in `df`."""
    spec = contract if isinstance(contract, ContractSpec) else load_contract(Path(contract))
    data = df.reset_index(drop=True)  # GX reports index labels: make them positions (new frame, df untouched)
    checks = _plan(spec, data)
    results = _validate(data, checks)
    outcomes = [_outcome(c, results.get(c.expectation.id)) for c in checks]
    return ContractReport(spec._path, source, all(o.success for o in outcomes), outcomes)
