"""Typed stage results: what each stage hands its direct downstream stages.

A result is stored as `result.json` in its stage directory; that file is written last, so its presence
means the directory is complete, and a re-run with the same key reads the result back instead of redoing it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ftlab_pipelines.core import artifacts

RESULT_FILE = "result.json"


@dataclass(frozen=True)
class StageResult:
    """Every result has the key it was stored under and its directory."""

    key: str
    dir: str


    @property
    def path(self) -> Path:
        return Path(self.dir)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, payload: dict):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in names})

    @classmethod
    def read(cls, directory: Path):
        return cls.from_json(artifacts.read_json(Path(directory) / RESULT_FILE))


@dataclass(frozen=True)
class RawDataset(StageResult):
    data_hash: str = ""  # content hash of the rows (and of the explicit test source)
    origin: str = ""
    rows: int = 0
    columns: list[str] = field(default_factory=list)
    test_origin: str | None = None
    test_rows: int | None = None

    @property
    def data_path(self) -> Path:
        return self.path / "data.parquet"

    @property
    def test_path(self) -> Path | None:
        return self.path / "test.parquet" if self.test_origin else None


@dataclass(frozen=True)
class ValidatedDataset(StageResult):
    """The raw data with its contract verdict; downstream stages refuse it when the contract failed."""

    data_path: str = ""
    test_path: str | None = None
    origin: str = ""
    test_origin: str | None = None
    contract: str = ""
    passed: bool = False
    failures: int = 0
    error: str | None = None

    @property
    def report_path(self) -> Path:
        return self.path / "contract_report.md"


@dataclass(frozen=True)
class Splits(StageResult):
    rows: dict[str, int] = field(default_factory=dict)
    distributions: dict[str, dict[str, int]] = field(default_factory=dict)
    duplicates_removed: int = 0
    test_overlap_removed: int = 0
    conflicting_duplicates: int = 0

    def split_path(self, split: str) -> Path:
        return self.path / f"{split}.parquet"

    def frames(self) -> dict:
        import pandas as pd

        return {name: pd.read_parquet(self.split_path(name)) for name in self.rows}


@dataclass(frozen=True)
class Tokenized(StageResult):
    stats: dict[str, dict] = field(default_factory=dict)
    render: dict | None = None  # tabular labs: the render section as applied, with its train-fitted bin edges

    @property
    def dataset_path(self) -> Path:
        return self.path / "dataset"


@dataclass(frozen=True)
class Adapter(StageResult):
    metrics: dict[str, float] = field(default_factory=dict)
    data_key: str = ""  # the tokenized data it was trained on


@dataclass(frozen=True)
class Evaluation(StageResult):
    metrics: dict[str, dict] = field(default_factory=dict)
    primary_metric: str = ""
    primary_value: float | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class Release(StageResult):
    """The release directory; registry verdicts are made at every materialization, so they are not stored here."""

    adapter_key: str = ""
    merge_parity: dict | None = None
    model_id: str = ""  # the logged MLflow pyfunc model
    model_uri: str = ""  # models:/<model_id>
