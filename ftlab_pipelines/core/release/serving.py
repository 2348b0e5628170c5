"""Using a release's MLflow model: find it in the registry, load it, or serve it over HTTP.

`ftlab predict`, `ftlab chat` and `ftlab serve` all go through the pyfunc model, so there is one inference
path. Serving is MLflow's own scoring app (the one `mlflow models serve` runs) with one addition: a request
with a param the model does not declare is refused with a 400, where MLflow would drop it with a log warning.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ftlab_pipelines.core.release.mlflow_registry import CHAMPION

MODEL_PATH_ENV = "FTLAB_SERVE_MODEL_PATH"


def model_uri(registry_name: str, version: int | None = None) -> str:
    return f"models:/{registry_name}/{version}" if version is not None else f"models:/{registry_name}@{CHAMPION}"


def load(uri: str, lab: str | None = None):
    """The pyfunc model at `uri`; a missing model or version gets a message that says what to do."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as exc:
        first = str(getattr(exc, "message", exc)).splitlines()[0][:300]
        advice = f"run `ftlab run {lab}` first, or list its versions with `ftlab models {lab}`" if lab else \
            "check the URI"
        raise ValueError(f"{uri}: cannot be loaded ({first}); {advice}") from None


def is_generator(model) -> bool:
    """A generation model answers with a `reply` (a classifier with a `label`), whatever its input columns."""
    return model.metadata.signature.outputs.input_names() == ["reply"]


def download(uri: str, into: Path) -> Path:
    """A local copy of the model, reused when that version was fetched before (versions never change)."""
    import mlflow

    if not (into / "MLmodel").is_file():
        into.parent.mkdir(parents=True, exist_ok=True)
        tmp = into.with_name(into.name + ".partial")
        tmp.mkdir(exist_ok=True)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp)))
        local.rename(into) if local != tmp else tmp.rename(into)
    return into


def server_command(model_dir: Path, host: str, port: int, workers: int = 1) -> tuple[list[str], dict]:
    """uvicorn running the scoring app on `model_dir`, with this interpreter (its bin/ need not be on PATH)."""
    env = {**os.environ, MODEL_PATH_ENV: str(model_dir)}
    return ([sys.executable, "-m", "uvicorn", "--factory", "ftlab_pipelines.core.release.scoring_app:from_env",
             "--host", host, "--port", str(port), "--workers", str(workers), "--log-level", "warning"], env)
