"""Isolation: a run that fails at evaluation or publish leaves the champion alone; a secret in the environment
appears in no MLflow param, tag or artifact, no Dagster event and no printed output; two labs materialized in
parallel with the multiprocess executor share no written path."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml
from conftest import REPO, tiny_lab, write_labs

from ftlab_pipelines.definitions import build_definitions
from ftlab_pipelines.defs.resources import default_resources

CORPUS = Path(__file__).parent / "bad_inputs"
CANARY = "hf_CANARY7f3a9c2e5b1d4x8q"
SECRET_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MLFLOW_TRACKING_PASSWORD", "AWS_SECRET_ACCESS_KEY")


def lab(name: str = "sms_spam", **overrides) -> dict:
    raw = tiny_lab("sms_spam", **overrides)
    raw["source"] = {"local_path": str(CORPUS / "good.csv")}
    raw["train"].update(max_steps=2, save_steps=2)
    raw["eval"]["baselines"] = overrides.get("eval__baselines", ["tfidf_logreg"])
    return raw


def run(root: Path, name: str, config: dict, instance):
    defs = build_definitions(str(write_labs(root / name, {"sms_spam": config})))
    result = dg.materialize(list(defs.assets), instance=instance, resources=default_resources(), raise_on_error=False)
    done = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    failures = [e.step_failure_data.error for e in result.all_events if e.is_step_failure]
    messages = []
    for error in failures:
        while error is not None:
            messages.append(error.message)
            error = error.cause
    return result, done, "\n".join(messages)


def champion_state(home: Path) -> tuple:
    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version_by_alias("ftlab-sms_spam", "champion")
    registry = (home / "registry" / "sms_spam.json").read_text()
    # The champion's own release directory; a failed publish of another config may leave its own release beside it.
    release = Path(next(e["path"] for e in json.loads(registry) if e["champion"]))
    files = {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(release.rglob("*")) if p.is_file()}
    # What models:/ftlab-sms_spam@champion serves: the logged model's files.
    served = Path(client.get_logged_model(version.source.removeprefix("models:/")).artifact_location
                  .removeprefix("file://"))
    model = {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(served.rglob("*"))
             if p.is_file() and p.name != "registered_model_meta"}
    assert model, served
    return version.version, version.source, files, registry, model


def mlflow_texts(home: Path) -> list[str]:
    """Every param, tag and metric name of every MLflow run, and every registered model version's tags."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    texts = []
    for experiment in client.search_experiments():
        for r in client.search_runs([experiment.experiment_id], max_results=1000):
            texts += [f"{k}={v}" for k, v in {**r.data.params, **r.data.tags}.items()] + list(r.data.metrics)
    for model in client.search_registered_models():
        for version in client.search_model_versions(f"name = '{model.name}'"):
            texts += [f"{k}={v}" for k, v in version.tags.items()] + [version.source or ""]
    return texts


def files_containing(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_failed_evaluation_or_publish_keeps_the_champion_and_no_secret_leaks(trained_home, monkeypatch, capfd):
    """On a copy of the trained tiny sms_spam home, with secrets in the environment: a retrained challenger goes
    through training, evaluation and publish; then a failing evaluation and a failing publish leave the
    champion alone."""
    home, instance, root = trained_home["home"], trained_home["instance"], trained_home["root"]
    for var in SECRET_VARS:
        monkeypatch.setenv(var, CANARY)
    session_lab = yaml.safe_load((trained_home["labs"] / "sms_spam.yaml").read_text())

    def variant(**changes) -> dict:
        raw = copy.deepcopy(session_lab)
        for key, value in changes.items():
            section, field = key.split("__")
            raw.setdefault(section, {})[field] = value
        return raw

    # A challenger: the same data, another training seed, so every training and release step runs again.
    result, done, _ = run(root, "challenger", variant(train__seed=7), instance)
    assert result.success and done == {"raw_dataset", "validated_dataset", "splits", "tokenized", "adapter",
                                       "evaluation", "published_adapter"}
    before = champion_state(home)

    # Evaluation fails (a baseline that needs numeric columns, on text data) after the adapter is reused.
    result, done, error = run(root, "bad_eval", variant(eval__baselines=["logreg_features"]), instance)
    assert not result.success and "evaluation" not in done and "published_adapter" not in done
    assert "eval.baselines has logreg_features, but the data has no numeric columns; remove it" in error
    assert champion_state(home) == before

    # Publish fails: the Hub push is refused offline, with the token set; the champion must not move.
    result, done, error = run(root, "bad_publish", variant(publish__hub_repo="ftlab-test/never"), instance)
    assert not result.success and "published_adapter" not in done and "evaluation" in done
    assert "publish.hub_repo 'ftlab-test/never': push of" in error and "the champion is unchanged" in error
    assert champion_state(home) == before

    events = [str(e) for r in instance.get_runs() for e in instance.all_logs(r.run_id)]
    assert len(events) > 100
    printed = capfd.readouterr()
    assert CANARY not in printed.out + printed.err
    assert not [e for e in events if CANARY in e]
    assert not [t for t in mlflow_texts(home) if CANARY in t]
    assert not list(home.rglob(".tmp-*")) and not list(home.rglob(".old-*"))  # failed stages left no temp dirs
    # Every file ftlab or Dagster wrote: MLflow artifacts and store, releases, registry, event log, compute logs.
    assert not files_containing(home, CANARY.encode()) and not files_containing(root / "dagster", CANARY.encode())


SHARED_BY_DESIGN = ("mlflow.db", "locks/mlflow-store.lock")  # one MLflow database, and the lock that creates it


def shared_paths(home: Path, labs: set[str]) -> list[str]:
    """Files under FTLAB_HOME whose path names no lab, or both."""
    shared = []
    for path in home.rglob("*"):
        if not path.is_file() or str(path.relative_to(home)).startswith(SHARED_BY_DESIGN):
            continue
        parts = set(path.relative_to(home).parts) | {path.stem, *path.stem.split("-")}
        if len(parts & labs) != 1:
            shared.append(str(path.relative_to(home)))
    return shared


@pytest.mark.slow
def test_two_labs_in_parallel_with_the_multiprocess_executor_share_no_path(tmp_path):
    labs = {"spam_a": lab(), "spam_b": lab(train__seed=7, split__seed=3)}
    labs_dir = write_labs(tmp_path / "labs", labs)
    home, dagster_home = tmp_path / "home", tmp_path / "dagster"
    dagster_home.mkdir()
    env = {**os.environ, "FTLAB_HOME": str(home), "FTLAB_LABS_DIR": str(labs_dir), "DAGSTER_HOME": str(dagster_home)}
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "--select", "*", "-m",
               "ftlab_pipelines.definitions"]
    completed = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    log = completed.stdout + completed.stderr
    assert completed.returncode == 0, log[-4000:]
    assert "Executing steps using multiprocess executor" in log
    for name in labs:
        assert len(list((home / "artifacts" / name / "published_adapter").iterdir())) == 1
        assert (home / "registry" / f"{name}.json").is_file()
    assert shared_paths(home, set(labs)) == []
    assert not list(home.rglob(".tmp-*")) and not list(home.rglob(".old-*"))
    written = {name: {p.relative_to(home / "artifacts" / name) for p in (home / "artifacts" / name).rglob("*")}
               for name in labs}
    print(f"\nparallel labs: {len(written['spam_a'])} + {len(written['spam_b'])} artifact paths, none shared; "
          f"files outside the labs' own paths: {SHARED_BY_DESIGN}")
