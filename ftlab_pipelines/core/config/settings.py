"""Where ftlab keeps things, resolved once from the environment at the edge (CLI, Dagster resource) and passed in.

FTLAB_HOME (state), FTLAB_DATA_DIR (local dataset mirror), FTLAB_LABS_DIR, FTLAB_CONTRACTS_DIR,
FTLAB_MODEL_CACHE (converted base models; default ~/.cache/ftlab/models),
FTLAB_WORK_DIR (training checkpoints; default $FTLAB_HOME/work), MLFLOW_TRACKING_URI, FTLAB_MEMORY_LIMIT_MB,
FTLAB_RAY_ADDRESS (the Ray profile: runs go to that cluster's job server),
FTLAB_RAY_STEP_JOBS (1: with the Ray profile, each step of a run is a Ray job of its own).
Nothing here creates a directory: the code that writes into one creates it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
# What `Settings.from_env` reads: a process started elsewhere (a Ray job, a Ray Train worker) gets these passed on.
ENV_VARS = ("FTLAB_HOME", "FTLAB_DATA_DIR", "FTLAB_LABS_DIR", "FTLAB_CONTRACTS_DIR", "FTLAB_MODEL_CACHE",
            "FTLAB_WORK_DIR", "FTLAB_RAY_ADDRESS", "FTLAB_RAY_STEP_JOBS", "FTLAB_MEMORY_LIMIT_MB",
            "MLFLOW_TRACKING_URI")


def _path(value: str) -> Path:
    return Path(value).expanduser().resolve()


def user_model_cache(env: Mapping[str, str]) -> str:
    """Converted base models are derived from installed packages, not a lab's state: one cache per user, shared by
    every FTLAB_HOME and clone (as Hugging Face's hub cache is)."""
    return str(Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ftlab" / "models")


@dataclass(frozen=True)
class Settings:
    home: Path
    data_dir: Path | None
    labs_dir: Path
    contracts_dir: Path
    model_cache: Path
    mlflow_tracking_uri: str
    memory_limit_mb: float | None = None
    work_dir: Path | None = None  # None: $FTLAB_HOME/work
    ray_address: str | None = None  # a Ray cluster's job server (http://head:8265): Dagster runs go there
    ray_step_jobs: bool = False  # with ray_address: each step its own Ray job (else steps run in the run's job)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        home = _path(env.get("FTLAB_HOME") or str(REPO_ROOT / ".ftlab"))
        if env.get("FTLAB_DATA_DIR"):
            data = _path(env["FTLAB_DATA_DIR"])
        else:
            shared = REPO_ROOT.parent / "shared" / "data"
            data = shared if shared.is_dir() else None
        limit = env.get("FTLAB_MEMORY_LIMIT_MB")
        return cls(
            home=home,
            data_dir=data,
            labs_dir=_path(env.get("FTLAB_LABS_DIR") or str(REPO_ROOT / "labs")),
            contracts_dir=_path(env.get("FTLAB_CONTRACTS_DIR") or str(REPO_ROOT / "data_contracts")),
            model_cache=_path(env.get("FTLAB_MODEL_CACHE") or user_model_cache(env)),
            mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}",
            memory_limit_mb=float(limit) if limit else None,
            work_dir=_path(env["FTLAB_WORK_DIR"]) if env.get("FTLAB_WORK_DIR") else None,
            ray_address=env.get("FTLAB_RAY_ADDRESS") or None,
            ray_step_jobs=env.get("FTLAB_RAY_STEP_JOBS", "").lower() in ("1", "true", "yes"),
        )

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def scratch_dir(self) -> Path:
        """Scratch that must survive a crashed run (training checkpoints); on a cluster, a directory every node
        mounts (a shared volume, an object-store mount)."""
        return self.work_dir or self.home / "work"

    @property
    def registry_dir(self) -> Path:
        return self.home / "registry"

    @property
    def inbox_dir(self) -> Path:
        return self.home / "inbox"

    @property
    def mlflow_artifact_root(self) -> str:
        return (self.home / "mlartifacts").as_uri()

    def contract_path(self, contract: str) -> Path:
        return self.contracts_dir / f"{contract}.yaml"
