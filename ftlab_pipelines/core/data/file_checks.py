"""Diagnose a data file that pandas cannot read sensibly: binary content, a wrong delimiter, bad bytes.

Each function returns an error message naming the file, where in it, and what to do (or None); the caller
raises it as its own error type.
"""

from __future__ import annotations

import codecs
from pathlib import Path

SNIFF_BYTES = 8192
OTHER_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}


def binary_problem(path: Path, fmt: str) -> str | None:
    """A text format (csv/tsv/json/jsonl) whose first bytes hold NUL bytes or a Parquet/zip signature."""
    if fmt == "parquet":
        return None
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if head.startswith(b"PAR1"):
        return f"{path}: is a Parquet file, not {fmt} text; rename it to .parquet or set source.format: parquet"
    nul = head.find(b"\x00")
    if nul < 0:
        return None
    return (f"{path}: binary content where {fmt} text was expected (a NUL byte at offset {nul}); point "
            f"source.local_path at a {fmt} text file (UTF-16 text also has NUL bytes: re-save it as UTF-8)")


def delimiter_problem(path: Path, fmt: str, encoding: str) -> str | None:
    """A CSV/TSV whose header line has none of the expected delimiter but another one (e.g. ';' from Excel)."""
    if fmt not in ("csv", "tsv"):
        return None
    with open(path, encoding=encoding, errors="replace") as handle:
        header = handle.readline().rstrip("\r\n")
    expected = "\t" if fmt == "tsv" else ","
    found = [(char, name) for char, name in OTHER_DELIMITERS.items() if char != expected and char in header]
    if expected in header or not found:
        return None
    char, name = found[0]
    fix = "set source.format: tsv" if char == "\t" else f"re-save it comma-separated ({name}s are not read)"
    return (f"{path}: line 1 (the header {header[:80]!r}) has no {'tab' if fmt == 'tsv' else 'comma'}: the file looks "
            f"{name}-delimited, but {fmt} is read {'tab' if fmt == 'tsv' else 'comma'}-separated; {fix}")


def decode_problem(path: Path, encoding: str) -> str | None:
    """The first bytes that are not valid `encoding`, by line and byte offset."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset, line = 0, 1
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                bad = offset + exc.start
                line += chunk[: exc.start].count(b"\n")
                return (f"{path}: bytes at offset {bad} are not valid {encoding} (line {line}, data row {line - 1}: "
                        f"{chunk[exc.start:exc.start + 4]!r}); re-save the file as UTF-8 or set source.encoding in "
                        f"the lab (e.g. latin-1)")
            line += chunk.count(b"\n")
            offset += len(chunk)
    return None
