"""Raw data loading: formats, errors that name the file, content hashing."""

from __future__ import annotations

import pandas as pd
import pytest

from ftlab_pipelines.core.config.labs import SourceConfig
from ftlab_pipelines.core.data.sources import (
    SourceError,
    content_hash,
    load_raw,
    read_table,
)

FRAME = pd.DataFrame({"label": ["ham", "spam", "ham"], "text": ["hi there", "WIN now", "see you, later"]})


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".jsonl", ".parquet"])
def test_every_format_reads_to_the_same_content(tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    if suffix == ".csv":
        FRAME.to_csv(path, index=False)
    elif suffix == ".tsv":
        FRAME.to_csv(path, sep="\t", index=False)
    elif suffix == ".json":
        FRAME.to_json(path, orient="records")
    elif suffix == ".jsonl":
        FRAME.to_json(path, orient="records", lines=True)
    else:
        FRAME.to_parquet(path, index=False)
    frame, origin = load_raw(SourceConfig(local_path=str(path)), None)
    assert origin == str(path)
    assert content_hash(frame[["label", "text"]]) == content_hash(FRAME)


def test_empty_file_names_the_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(SourceError, match="empty.csv: the file is empty"):
        read_table(path)


def test_header_only(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("label,text\n")
    with pytest.raises(SourceError, match="header.csv: has a header but no data rows"):
        read_table(path)


def test_non_utf8_names_file_offset_and_fix(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("label,text\nham,caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(SourceError, match=r"latin.csv: bytes at offset \d+ are not valid utf-8.*source.encoding"):
        read_table(path)
    assert read_table(path, encoding="latin-1")["text"][0] == "café au lait"


def test_missing_mirror_without_hub_id_says_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(SourceError, match=f"not found under FTLAB_DATA_DIR={tmp_path}; set FTLAB_DATA_DIR"):
        load_raw(SourceConfig(local_path="nowhere/data.csv"), tmp_path)


def test_rename_label_names_and_subsample(tmp_path):
    path = tmp_path / "hub_like.csv"
    pd.DataFrame({"sms": [f"m{i}" for i in range(100)], "label": [0] * 80 + [1] * 20}).to_csv(path, index=False)
    frame, _ = load_raw(SourceConfig(local_path=str(path), rename={"sms": "text"}, label_names={0: "ham", 1: "spam"},
                                     max_rows=50), None)
    assert list(frame.columns) == ["text", "label"]
    assert frame["label"].value_counts().to_dict() == {"ham": 40, "spam": 10}


def test_content_hash_changes_with_one_cell():
    changed = FRAME.copy()
    changed.loc[1, "text"] = "WIN now!"
    assert content_hash(changed) != content_hash(FRAME)
