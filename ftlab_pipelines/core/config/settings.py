"""Where ftlab keeps things: FTLAB_HOME (state), FTLAB_DATA_DIR (local dataset mirror), labs."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]


def ftlab_home() -> Path:
    """Root of all ftlab state: Dagster instance, MLflow store, artifacts. Default `<repo>/.ftlab`."""
    home = Path(os.environ.get("FTLAB_HOME") or REPO_ROOT / ".ftlab").expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def data_dir() -> Path | None:
    """Local dataset mirror: FTLAB_DATA_DIR, else `../shared/data` beside the repo when it exists."""
    configured = os.environ.get("FTLAB_DATA_DIR")
    if configured:
        return Path(configured).expanduser().resolve()
    shared = REPO_ROOT.parent / "shared" / "data"
    return shared if shared.is_dir() else None


def labs_dir() -> Path:
    return Path(os.environ.get("FTLAB_LABS_DIR") or REPO_ROOT / "labs").expanduser().resolve()


def contracts_dir() -> Path:
    return Path(os.environ.get("FTLAB_CONTRACTS_DIR") or REPO_ROOT / "data_contracts").expanduser().resolve()


def artifacts_dir() -> Path:
    return ftlab_home() / "artifacts"


def model_cache_dir() -> Path:
    """Converted base models (e.g. GGUF dequantized to safetensors): FTLAB_MODEL_CACHE, else FTLAB_HOME/models."""
    configured = os.environ.get("FTLAB_MODEL_CACHE")
    return Path(configured).expanduser().resolve() if configured else ftlab_home() / "models"


def mlflow_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when set (a server in production), else a sqlite store in FTLAB_HOME."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{ftlab_home() / 'mlflow.db'}"


def mlflow_artifact_root() -> str:
    return (ftlab_home() / "mlartifacts").as_uri()
