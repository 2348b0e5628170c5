"""Reading lab files: YAML -> a validated `LabConfig`, with errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from ftlab_pipelines.core.config.errors import format_validation_errors
from ftlab_pipelines.core.config.labs import LabConfig, LabConfigError
from ftlab_pipelines.core.config.settings import Settings


def load_lab(path: str | Path, contracts_dir: Path | None = None) -> LabConfig:
    """Read and validate a lab file; its data contract must exist in `contracts_dir` (default: the settings')."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise LabConfigError(f"{path}: lab file not found") from exc
    except yaml.YAMLError as exc:
        raise LabConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise LabConfigError(f"{path}: a lab file must be a YAML mapping of keys to values")
    raw.setdefault("name", path.stem)
    try:
        lab = LabConfig.model_validate(raw)
    except ValidationError as exc:
        raise LabConfigError(format_validation_errors(
            path, exc, hint=f"Fix these keys in {path}; each key and its type is documented in "
                            f"ftlab_pipelines/core/config/labs.py (LabConfig).")) from None
    if lab.name != path.stem:
        raise LabConfigError(f"{path}: key 'name' is {lab.name!r} but must match the file name {path.stem!r}")
    contracts_dir = contracts_dir or Settings.from_env().contracts_dir
    contract = contracts_dir / f"{lab.contract}.yaml"
    if not contract.is_file():
        raise LabConfigError(f"{path}: key 'contract' refers to {contract}, which does not exist; add it or fix the name")
    return lab


def load_labs(directory: str | Path | None = None, settings: Settings | None = None) -> dict[str, LabConfig]:
    settings = settings or Settings.from_env()
    directory = Path(directory) if directory else settings.labs_dir
    return {p.stem: load_lab(p, settings.contracts_dir) for p in sorted(directory.glob("*.yaml"))}
