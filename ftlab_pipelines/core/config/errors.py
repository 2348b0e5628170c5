"""Pydantic validation errors as messages a user can act on: the file, the key, and what to do."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError


def format_validation_errors(path: Path, error: ValidationError, what: str = "lab config", hint: str = "") -> str:
    """One line per bad key, naming the file and the key (shared by lab files and data contracts)."""
    lines = [f"{path}: invalid {what}"]
    for err in error.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  - unknown key '{key}': remove it or fix its spelling")
        else:
            lines.append(f"  - key '{key}': {err['msg'].removeprefix('Value error, ')} (got {err.get('input')!r})")
    if hint:
        lines.append(hint)
    return "\n".join(lines)
