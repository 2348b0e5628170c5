"""MLflow tracking: one run per asset materialization, nested under one parent run per Dagster run.

Uses `MlflowClient` with explicit run ids rather than the fluent API, so several assets in one
process (in-process executor) or in parallel processes never share a global "active run".
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from ftlab_pipelines.core.config.settings import REPO_ROOT, Settings

log = logging.getLogger(__name__)

PARENT_TAG = "ftlab.role"
MAX_PARAM_CHARS = 6000
DATABASE_SCHEMES = {"sqlite", "postgresql", "mysql", "mssql"}


def flatten(prefix: str, value: object) -> dict[str, str]:
    """{'train': {'epochs': 3}} -> {'train.epochs': '3'}; lists as JSON."""
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for key, inner in value.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), inner))
        return out
    text = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return {prefix: text[:MAX_PARAM_CHARS]}


STORE_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@contextlib.contextmanager
def using_store(tracking_uri: str):
    """MLflow's process-wide store set to `tracking_uri` for the block. Logging a model and registering a
    `models:/<model_id>` source go through it (not through a client's store), so both happen inside.

    `mlflow.set_tracking_uri` also writes MLFLOW_TRACKING_URI into os.environ (for subprocesses); the block
    puts MLflow's globals and those variables back exactly as they were, so nothing leaks into later runs."""
    import os

    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved = tracking_utils._tracking_uri, registry_utils._registry_uri, {k: os.environ.get(k) for k in STORE_ENV}
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved[0])
        registry_utils._registry_uri = saved[1]
        for key, value in saved[2].items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@functools.cache
def git_commit() -> str | None:
    """The commit of the checkout ftlab runs from (None outside a git checkout, or without git)."""
    import subprocess

    if not (REPO_ROOT / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def source_tags() -> dict[str, str]:
    commit = git_commit()
    return {"mlflow.source.git.commit": commit} if commit else {}


class AssetRun:
    """Handle on one MLflow run, passed to plain-Python stage code."""

    def __init__(self, client, run_id: str, scratch: Path, tracking_uri: str = ""):
        self.client = client
        self.run_id = run_id
        self.scratch = scratch
        self.tracking_uri = tracking_uri

    def log_params(self, params: Mapping[str, object]) -> None:
        from mlflow.entities import Param

        flat = flatten("", dict(params))
        items = [Param(k, v) for k, v in flat.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, object], step: int | None = None, model_id: str | None = None,
                    dataset: tuple[str, str] | None = None) -> None:
        """The numeric, finite entries of `metrics` (others are skipped); with `model_id` and `dataset` (name,
        digest) each is linked to that logged model and dataset, as MLflow's model page shows them."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        name, digest = dataset or (None, None)
        items = [Metric(k, float(v), now, step or 0, model_id=model_id, dataset_name=name, dataset_digest=digest)
                 for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool) and v == v]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        target = self.scratch / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        self.log_artifact(target, str(Path(name).parent) if Path(name).parent != Path(".") else None)

    def set_tags(self, tags: Mapping[str, object]) -> None:
        from mlflow.entities import RunTag

        if tags:  # one store round-trip, not one per tag
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def artifact_uri(self, artifact_path: str = "") -> str:
        base = self.client.get_run(self.run_id).info.artifact_uri
        return f"{base}/{artifact_path}" if artifact_path else base


@functools.lru_cache(maxsize=16)
def client_for(tracking_uri: str, locks: Path):
    """One MlflowClient per store and process: creating one opens and checks the store (~0.4 s for sqlite), and
    every asset of a run asks for it."""
    from mlflow import MlflowClient

    if not tracking_uri.startswith("sqlite:"):
        return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    from filelock import FileLock

    # The first client creates the tables of a new sqlite store; two processes doing it at once (two labs in
    # parallel on a fresh FTLAB_HOME) fail in MLflow's schema migration, so they take turns.
    locks.mkdir(parents=True, exist_ok=True)
    Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(locks / "mlflow-store.lock")):
        return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


class Tracker:
    """Creates per-lab experiments and the parent/child run tree in one MLflow store."""

    def __init__(self, settings: Settings, tracking_uri: str | None = None):
        self.settings = settings
        self.tracking_uri = tracking_uri or settings.mlflow_tracking_uri
        self.locks = settings.home / "locks"
        self.client = client_for(self.tracking_uri, self.locks)

    def experiment_id(self, lab: str) -> str:
        name = f"ftlab/{lab}"
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        # A database store (sqlite, postgresql, ...) has no server to pick an artifact root; MLflow would
        # default to ./mlruns in the working directory. An http server decides for itself.
        if self.tracking_uri.split(":", 1)[0].split("+")[0] in DATABASE_SCHEMES:
            location = f"{self.settings.mlflow_artifact_root}/{lab}"
        try:
            return self.client.create_experiment(name, artifact_location=location, tags={"lab": lab})
        except Exception:  # noqa: BLE001 - another process created it first
            return self.client.get_experiment_by_name(name).experiment_id

    def parent_run_id(self, lab: str, dagster_run_id: str, experiment: str) -> str:
        from filelock import FileLock

        self.locks.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.locks / f"mlflow-{dagster_run_id}-{lab}.lock")):
            found = self.client.search_runs(
                [experiment],
                filter_string=f"tags.dagster_run_id = '{dagster_run_id}' and tags.`{PARENT_TAG}` = 'parent'",
                max_results=1,
            )
            if found:
                return found[0].info.run_id
            run = self.client.create_run(
                experiment,
                run_name=f"{lab} dagster:{dagster_run_id[:8]}",
                tags={"dagster_run_id": dagster_run_id, "lab": lab, PARENT_TAG: "parent"},
            )
            return run.info.run_id

    @contextlib.contextmanager
    def asset_run(self, lab: str, asset: str, dagster_run_id: str, tags: Mapping[str, str]) -> Iterator[AssetRun]:
        """A child run for one asset; FINISHED on success, FAILED (and re-raised) on error."""
        experiment = self.experiment_id(lab)
        parent = self.parent_run_id(lab, dagster_run_id, experiment)
        run = self.client.create_run(
            experiment,
            run_name=asset,
            tags={"mlflow.parentRunId": parent, "dagster_run_id": dagster_run_id, "lab": lab, "asset": asset,
                  PARENT_TAG: "asset", "mlflow.source.name": f"ftlab {lab}/{asset}", **source_tags(),
                  **{k: str(v) for k, v in tags.items()}},
        )
        status = "FAILED"
        with tempfile.TemporaryDirectory(prefix="ftlab-mlflow-") as scratch:
            try:
                yield AssetRun(self.client, run.info.run_id, Path(scratch), self.tracking_uri)
                status = "FINISHED"
            finally:
                self.client.set_terminated(run.info.run_id, status)
                self.client.set_terminated(parent, status)
