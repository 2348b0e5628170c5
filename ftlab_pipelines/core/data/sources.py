"""Load a lab's raw data (local mirror or hub) into a DataFrame, and hash its content."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from ftlab_pipelines.core.config.labs import SourceConfig
from ftlab_pipelines.core.config.settings import REPO_ROOT
from ftlab_pipelines.core.data import file_checks

FORMATS_BY_SUFFIX = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet"}


class SourceError(ValueError):
    """Raw data that cannot be read; the message names the file and what to do."""


def resolve_local_path(source: SourceConfig, data_dir: Path | None, local_path: str | None = None) -> Path | None:
    """The mirror file the lab points at, if it exists (absolute, or under `data_dir`, i.e. FTLAB_DATA_DIR)."""
    local_path = local_path or source.local_path
    if not local_path:
        return None
    path = Path(local_path).expanduser()
    if local_path.startswith("./"):
        path = REPO_ROOT / path  # data shipped with the project
    elif not path.is_absolute():
        if data_dir is None:
            return None
        path = data_dir / path
    return path if path.is_file() else None


def describe_source(source: SourceConfig, data_dir: Path | None) -> str:
    local = resolve_local_path(source, data_dir)
    if local is not None:
        return str(local)
    return f"hf://{source.hub_id}" + (f"/{source.hub_config}" if source.hub_config else "") + f"[{source.hub_split}]"


def read_table(path: Path, fmt: str = "auto", encoding: str = "utf-8", dtype: str = "str") -> pd.DataFrame:
    """Read CSV/TSV/JSON/JSONL/Parquet with errors that say which file and what went wrong."""
    fmt = FORMATS_BY_SUFFIX.get(path.suffix.lower(), "csv") if fmt == "auto" else fmt
    if path.stat().st_size == 0:
        raise SourceError(f"{path}: the file is empty; point the lab at a file with a header row and data rows")
    if problem := file_checks.binary_problem(path, fmt) or file_checks.delimiter_problem(path, fmt, encoding):
        raise SourceError(problem)
    try:
        if fmt in ("csv", "tsv"):
            frame = pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", encoding=encoding,
                                dtype=str if dtype == "str" else None,
                                keep_default_na=True, na_values=[""])
        elif fmt == "json":
            frame = pd.read_json(path, encoding=encoding, dtype=False)
        elif fmt == "jsonl":
            frame = pd.read_json(path, lines=True, encoding=encoding, dtype=False)
        else:
            frame = pd.read_parquet(path)
    except UnicodeDecodeError as exc:
        raise SourceError(file_checks.decode_problem(path, encoding) or (
            f"{path}: bytes at offset {exc.start} are not valid {encoding}; re-save the file as UTF-8 "
            f"or set source.encoding in the lab (e.g. latin-1)"
        )) from None
    except (pd.errors.ParserError, ValueError, OSError) as exc:
        raise SourceError(f"{path}: cannot be parsed as {fmt}: {exc}. Check the file format and delimiter") from None
    if frame.empty:
        raise SourceError(f"{path}: has a header but no data rows; add rows or point the lab at another file")
    return frame


def load_from_hub(source: SourceConfig, split: str | None = None) -> pd.DataFrame:
    import datasets  # heavy import, only needed online

    try:
        data = datasets.load_dataset(source.hub_id, source.hub_config, split=split or source.hub_split)
    except Exception as exc:  # noqa: BLE001 - any hub failure gets the same advice
        raise SourceError(
            f"cannot load hub dataset {source.hub_id!r} ({type(exc).__name__}: {exc}). Offline? Set FTLAB_DATA_DIR "
            f"to a local mirror that holds {source.local_path!r}"
        ) from None
    return data.to_pandas()


def load_raw(source: SourceConfig, data_dir: Path | None, inbox_file: Path | None = None,
             inbox_mode: str = "replace") -> tuple[pd.DataFrame, str]:
    """Return the raw frame (renamed, labels named, optionally subsampled) and where it came from.

    An inbox file (a new-data drop) replaces the configured source, or with inbox_mode append adds its rows.
    """
    if inbox_file is not None and inbox_mode == "replace":
        frame, origin = read_table(inbox_file, "auto", source.encoding, source.dtype), str(inbox_file)
    else:
        frame, origin = _read_source(source, data_dir)
    frame = _prepare(frame, source)
    if inbox_file is not None and inbox_mode == "append":
        frame, origin = _append(frame, origin, _prepare(read_table(inbox_file, "auto", source.encoding,
                                                                   source.dtype), source), inbox_file)
    if source.max_rows and len(frame) > source.max_rows:
        frame = stratified_sample(frame, source.label_column, source.max_rows, seed=0)
    return frame.reset_index(drop=True), origin


def _read_source(source: SourceConfig, data_dir: Path | None) -> tuple[pd.DataFrame, str]:
    local = resolve_local_path(source, data_dir)
    if local is not None:
        return read_table(local, source.format, source.encoding, source.dtype), str(local)
    if source.hub_id:
        return load_from_hub(source), describe_source(source, data_dir)
    raise SourceError(
        f"local mirror {source.local_path!r} not found under FTLAB_DATA_DIR={data_dir}; "
        f"set FTLAB_DATA_DIR to the folder that holds it, or give source.hub_id"
    )


def _append(frame: pd.DataFrame, origin: str, new: pd.DataFrame, new_path: Path) -> tuple[pd.DataFrame, str]:
    if sorted(map(str, new.columns)) != sorted(map(str, frame.columns)):
        raise SourceError(f"{new_path}: columns {list(new.columns)} differ from the lab's source {origin} "
                          f"{list(frame.columns)}; an appended inbox file needs the same columns")
    return pd.concat([frame, new[list(frame.columns)]], ignore_index=True), f"{origin} + {new_path}"


def load_test(source: SourceConfig, data_dir: Path | None, train_columns: list[str],
              train_origin: str) -> tuple[pd.DataFrame, str]:
    """The explicit test set; it must have exactly the main source's columns."""
    local = resolve_local_path(source, data_dir, source.test_local_path)
    if local is not None:
        frame, origin = read_table(local, source.format, source.encoding, source.dtype), str(local)
    elif source.hub_id and source.test_hub_split:
        frame, origin = load_from_hub(source, source.test_hub_split), f"hf://{source.hub_id}[{source.test_hub_split}]"
    else:
        raise SourceError(f"test source {source.test_local_path!r} not found under FTLAB_DATA_DIR="
                          f"{data_dir}; set FTLAB_DATA_DIR or source.test_hub_split")
    frame = _prepare(frame, source)
    missing = [c for c in train_columns if c not in frame.columns]
    extra = [c for c in frame.columns if c not in train_columns]
    if missing or extra:
        raise SourceError(
            f"{origin}: the test source's columns differ from {train_origin}: missing {missing}, extra {extra}; "
            f"give both files the same columns (or rename them with source.rename)"
        )
    frame = frame[train_columns]
    if source.test_max_rows and len(frame) > source.test_max_rows:
        frame = stratified_sample(frame, source.label_column, source.test_max_rows, seed=0)
    return frame.reset_index(drop=True), origin


def _prepare(frame: pd.DataFrame, source: SourceConfig) -> pd.DataFrame:
    """Renames and label names, the same for the main and the test source."""
    frame = frame.rename(columns=source.rename)
    if source.label_names and source.label_column in frame.columns:
        frame[source.label_column] = frame[source.label_column].map(
            lambda v: source.label_names.get(int(v), v) if pd.notna(v) and str(v).lstrip("-").isdigit() else v
        )
    return frame


def stratified_sample(frame: pd.DataFrame, label_column: str, n: int, seed: int) -> pd.DataFrame:
    """About `n` rows with the label shares of `frame` (every class keeps at least one row)."""
    if label_column not in frame.columns:
        return frame.sample(n=n, random_state=seed)
    share = n / len(frame)
    parts = [
        group.sample(n=max(1, round(len(group) * share)), random_state=seed)
        for _, group in frame.groupby(label_column, dropna=False, sort=True)
    ]
    return pd.concat(parts).sort_index()


def content_hash(frame: pd.DataFrame) -> str:
    """Hash of column names and cell values: equal data gives an equal hash, whatever the file format."""
    digest = hashlib.sha256("\x1f".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame.astype(str), index=False).values.tobytes())
    return digest.hexdigest()[:16]


def label_counts(frame: pd.DataFrame, label_column: str) -> dict[str, int]:
    if label_column not in frame.columns:
        return {}
    counts = frame[label_column].astype(str).value_counts(dropna=False).sort_index()
    return {str(k): int(v) for k, v in counts.items()}

