"""Champion promotion in a real MLflow registry (sqlite): only a better model moves the alias."""

from __future__ import annotations

from mlflow import MlflowClient

from ftlab_pipelines.core.config.settings import Settings
from ftlab_pipelines.core.release import hub, local_registry, mlflow_registry


def _client():
    uri = Settings.from_env().mlflow_tracking_uri
    return MlflowClient(uri, registry_uri=uri)


def test_champion_moves_only_on_improvement(tmp_path):
    client = _client()
    experiment = client.create_experiment("promo", artifact_location=(tmp_path / "art").as_uri())
    source = (tmp_path / "release").as_uri()

    def release(value, margin=0.0, key=None, greater_is_better=True, name="ftlab-promo"):
        run = client.create_run(experiment)
        return mlflow_registry.register_and_gate(client, name, source, run.info.run_id, "f1", value, margin,
                                          greater_is_better, release_key=key or f"release-{value}")

    first = release(0.90)
    assert first.promoted and first.passed and first.version == 1
    worse = release(0.85)
    assert not worse.promoted and not worse.passed and worse.champion_version == 1
    assert "the champion is unchanged" in worse.reason
    better = release(0.93)
    assert better.promoted and better.previous_champion_value == 0.90
    not_enough = release(0.935, margin=0.01)
    assert not not_enough.promoted
    assert str(client.get_model_version_by_alias("ftlab-promo", "champion").version) == "3"
    again = release(0.93, key="release-0.93")  # the same release published again: no new version
    assert again.version == 3 and again.reused_version and again.passed and not again.promoted
    assert len(mlflow_registry.versions(client, "ftlab-promo")) == 4
    moved = client.get_model_version("ftlab-promo", "3")
    assert moved.tags["promotion"] == "gate" and "beats" in moved.tags["promotion_reason"]

    assert release(2.0, name="ftlab-loss", greater_is_better=False).promoted
    assert not release(2.1, name="ftlab-loss", greater_is_better=False).promoted
    assert release(1.5, name="ftlab-loss", greater_is_better=False).promoted


def test_local_registry_tracks_one_champion(monkeypatch):
    local_registry.update_local_registry(Settings.from_env(), "lab", {"path": "/a", "champion": True, "test_f1": 0.9})
    local_registry.update_local_registry(Settings.from_env(), "lab", {"path": "/b", "champion": False, "test_f1": 0.8})
    assert local_registry.local_champion(Settings.from_env(), "lab")["path"] == "/a"
    local_registry.update_local_registry(Settings.from_env(), "lab", {"path": "/c", "champion": True, "test_f1": 0.95})
    assert local_registry.local_champion(Settings.from_env(), "lab")["path"] == "/c"


def test_hub_push_is_skipped_with_reason(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert hub.push_to_hub(tmp_path, None).startswith("skipped: publish.hub_repo is not set")
    assert "HF_TOKEN is not set" in hub.push_to_hub(tmp_path, "me/repo")


def test_release_without_the_metric_is_registered_but_never_promoted(tmp_path):
    client = _client()
    experiment = client.create_experiment("nometric", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(experiment)
    verdict = mlflow_registry.register_and_gate(client, "ftlab-nometric", (tmp_path / "r").as_uri(), run.info.run_id,
                                         "f1", None, 0.0, release_key="k")
    assert verdict.version == 1 and not verdict.promoted and verdict.champion_version is None
    assert "no test_f1 value" in verdict.reason and mlflow_registry.champion(client, "ftlab-nometric") is None
