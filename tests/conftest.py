"""Shared fixtures: a throwaway FTLAB_HOME per session, tiny labs, and one real pipeline run."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Converted base models (SmolLM2 GGUF -> safetensors, ~20 s) are shared by every test of the session.
os.environ.setdefault("FTLAB_MODEL_CACHE", str(REPO / ".ftlab" / "test-model-cache"))


def shared_data_dir() -> Path | None:
    from ftlab_pipelines.core.config.settings import Settings

    return Settings.from_env().data_dir


requires_data = pytest.mark.skipif(
    shared_data_dir() is None or not (shared_data_dir() / "sms_spam" / "sms_spam.csv").is_file(),
    reason="real datasets not found: set FTLAB_DATA_DIR or put ../shared/data beside the repo",
)


@pytest.fixture(autouse=True)
def ftlab_home(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own FTLAB_HOME (artifacts, MLflow sqlite store, registry)."""
    home = tmp_path_factory.mktemp("ftlab_home")
    monkeypatch.setenv("FTLAB_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home


def tiny_lab(base: str, **overrides) -> dict:
    """A reference lab shrunk for tests: a stratified subsample and a few training steps."""
    raw = yaml.safe_load((REPO / "labs" / f"{base}.yaml").read_text())
    raw["source"]["max_rows"] = overrides.pop("max_rows", 400)
    raw["train"].update({"epochs": 1, "max_steps": 12, "save_steps": 6, "logging_steps": 3, "batch_size": 16})
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        if field:
            raw.setdefault(section, {})[field] = value
        else:
            raw[key] = value
    return raw


def write_labs(directory: Path, labs: dict[str, dict]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, raw in labs.items():
        (directory / f"{name}.yaml").write_text(yaml.safe_dump({**raw, "name": name}))
    return directory


@contextlib.contextmanager
def materialized_labs(root: Path, labs: dict[str, dict]):
    """Materialize every asset of `labs` once through a real Dagster instance, with FTLAB_HOME = root/home."""
    import dagster as dg

    from ftlab_pipelines.definitions import build_definitions
    from ftlab_pipelines.defs.resources import default_resources

    home = root / "home"
    labs_dir = write_labs(root / "labs", labs)
    saved = os.environ.get("FTLAB_HOME")
    os.environ["FTLAB_HOME"] = str(home)
    try:
        defs = build_definitions(str(labs_dir))
        (root / "dagster").mkdir()
        with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
            result = dg.materialize(list(defs.assets), instance=instance, resources=default_resources(),
                                    raise_on_error=False)
            yield {"result": result, "home": home, "instance": instance, "defs": defs, "labs": labs_dir}
    finally:
        if saved is None:
            os.environ.pop("FTLAB_HOME", None)
        else:
            os.environ["FTLAB_HOME"] = saved


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory):
    """Materialize the whole tiny sms_spam chain once, through Dagster, with a real MLflow store."""
    root = tmp_path_factory.mktemp("pipeline")
    with materialized_labs(root, {"sms_spam": tiny_lab("sms_spam")}) as run:
        yield run
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pipeline(pipeline_run, monkeypatch):
    """The session's pipeline run, with FTLAB_HOME pointing at its home."""
    monkeypatch.setenv("FTLAB_HOME", str(pipeline_run["home"]))
    return pipeline_run
