"""Retraining automation: schedules, the inbox sensor, staleness, no-op re-runs, the promotion gate, the CLI."""

from __future__ import annotations

import os
import shutil

import dagster as dg
import pandas as pd
import pytest
import yaml
from conftest import REPO, requires_data, tiny_lab, write_labs
from mlflow import MlflowClient

from ftlab_pipelines import cli
from ftlab_pipelines.core.config.labs import LabConfig
from ftlab_pipelines.core.config.loading import load_lab
from ftlab_pipelines.core.config.settings import Settings
from ftlab_pipelines.core.data import inbox
from ftlab_pipelines.core.release import local_registry, mlflow_registry
from ftlab_pipelines.definitions import build_definitions
from ftlab_pipelines.defs.assets import TRAINING_POOL, stage_code_versions
from ftlab_pipelines.defs.automation import inbox_run_requests


def test_every_lab_with_a_schedule_block_gets_a_stopped_schedule():
    defs = build_definitions()
    schedules = {s.name: s for s in defs.schedules}
    with_block = {p.stem: yaml.safe_load(p.read_text())["schedule"] for p in (REPO / "labs").glob("*.yaml")
                  if "schedule" in yaml.safe_load(p.read_text())}
    assert {"sms_spam", "financial_sentiment", "creditcard_fraud", "persona_chat", "psychology_instruct"} <= set(with_block)
    assert set(schedules) == {f"{lab}_retrain_schedule" for lab in with_block}
    for lab, block in with_block.items():
        schedule = schedules[f"{lab}_retrain_schedule"]
        assert schedule.cron_schedule == block["cron"] and schedule.execution_timezone == block["timezone"]
        assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
        assert schedule.job_name == f"{lab}_pipeline"


def test_enabled_schedule_runs_and_bad_cron_is_a_clear_error(tmp_path):
    lab = tiny_lab("sms_spam", schedule={"cron": "30 2 * * *", "timezone": "Europe/Paris", "enabled": True})
    defs = build_definitions(str(write_labs(tmp_path / "labs", {"nightly": lab})))
    (schedule,) = defs.schedules
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    with pytest.raises(ValueError, match="schedule.cron must have 5 fields"):
        LabConfig.model_validate({**lab, "name": "x", "schedule": {"cron": "nightly"}})
    with pytest.raises(ValueError, match="not an IANA timezone"):
        LabConfig.model_validate({**lab, "name": "x", "schedule": {"cron": "0 1 * * *", "timezone": "Mars/Base"}})


def test_training_runs_in_a_pool_limited_to_one_by_dagster_yaml(tmp_path):
    defs = build_definitions()
    adapter = defs.resolve_assets_def(dg.AssetKey(["sms_spam", "adapter"]))
    assert adapter.op.pool == TRAINING_POOL
    assert defs.resolve_assets_def(dg.AssetKey(["sms_spam", "splits"])).op.pool is None
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1


def _lab() -> LabConfig:
    return LabConfig.model_validate({**tiny_lab("sms_spam"), "name": "sms_spam"})


def test_inbox_sensor_fires_once_per_new_content(tmp_path):
    lab = _lab()
    folder = inbox.inbox_dir(Settings.from_env(), lab.name)
    folder.mkdir(parents=True)
    requests, cursor = inbox_run_requests(lab, None)
    assert requests == []
    (folder / "drop1.csv").write_text("label,text\nham,hello\n")
    (folder / "notes.txt").write_text("not data")
    requests, cursor = inbox_run_requests(lab, cursor)
    assert len(requests) == 1 and requests[0].tags["ftlab/inbox_file"] == "drop1.csv"
    config = requests[0].run_config["ops"]["sms_spam__raw_dataset"]["config"]
    assert config["inbox_file"] == str(folder / "drop1.csv")
    assert requests[0].run_key == f"sms_spam:{config['inbox_sha256']}"
    assert inbox_run_requests(lab, cursor)[0] == []  # same file: nothing
    os.utime(folder / "drop1.csv", ns=(1, 1))  # touched, content unchanged: nothing
    shutil.copy(folder / "drop1.csv", folder / "drop1-copy.csv")  # same bytes under a new name: nothing
    requests, cursor = inbox_run_requests(lab, cursor)
    assert requests == []
    (folder / "drop1.csv").write_text("label,text\nham,hello again\n")  # new content: one run
    requests, cursor = inbox_run_requests(lab, cursor)
    assert [r.tags["ftlab/inbox_file"] for r in requests] == ["drop1.csv"]


def test_sensor_definition_keeps_its_cursor_between_ticks(tmp_path):
    lab_raw = tiny_lab("sms_spam")
    defs = build_definitions(str(write_labs(tmp_path / "labs", {"sms_spam": lab_raw})))
    sensor = next(s for s in defs.sensors if s.name == "sms_spam_inbox_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    (inbox.inbox_dir(Settings.from_env(), "sms_spam")).mkdir(parents=True)
    (inbox.inbox_dir(Settings.from_env(), "sms_spam") / "a.csv").write_text("label,text\nspam,WIN\n")
    with dg.instance_for_test() as instance:
        first = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
        second = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=first.cursor, definitions=defs))
    assert len(first.run_requests) == 1 and sensor.job_name == "sms_spam_pipeline"
    assert second.run_requests == [] and second.skip_message.startswith("no new files")


def test_code_version_changes_only_for_the_stages_whose_config_changed():
    """A few edits a user makes, spelled out; tests/test_stage_versions.py checks every field."""
    settings = Settings.from_env()
    base = stage_code_versions(_lab(), settings)

    def changed(**edits) -> set[str]:
        raw = tiny_lab("sms_spam")
        for path, value in edits.items():
            section, field = path.split("__")
            raw.setdefault(section, {})[field] = value
        versions = stage_code_versions(LabConfig.model_validate({**raw, "name": "sms_spam"}), settings)
        return {stage for stage in base if versions[stage] != base[stage]}

    assert changed(train__learning_rate=2e-4) == {"adapter"}
    assert changed(publish__min_improvement=0.01) == {"published_adapter"}
    assert changed(eval__primary_metric="accuracy") == {"evaluation", "published_adapter"}
    assert changed(split__seed=7) == {"splits", "evaluation"}  # evaluation seeds its TF-IDF baseline with it
    assert changed(source__max_rows=300) == {"raw_dataset"}
    assert changed(model__max_length=64) == {"tokenized", "adapter", "evaluation", "published_adapter"}
    assert changed(schedule__cron="0 1 * * *") == set()  # retraining cadence is not part of any artifact


# --- the session's tiny sms_spam lab, copied per test, then re-run, fed a bad inbox file, promoted by hand ------


@pytest.fixture
def lab_home(trained_home):
    """A private copy of the trained tiny sms_spam home, its Dagster instance and lab files."""
    return trained_home


def _client() -> MlflowClient:
    uri = Settings.from_env().mlflow_tracking_uri
    return MlflowClient(uri, registry_uri=uri)


def _checks(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def _materialized(result) -> set[str]:
    return {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}


def _execute(run, **kwargs):
    job = run["defs"].resolve_job_def("sms_spam_pipeline")
    return job.execute_in_process(instance=run["instance"], raise_on_error=False, **kwargs)


@requires_data
def test_first_release_passes_the_gate_and_becomes_champion(lab_home):
    result = lab_home["result"]
    assert result.success
    assert _checks(result) == {"data_contract": True, "promotion_gate": True, "merge_parity": True}
    assert int(mlflow_registry.champion(_client(), "ftlab-sms_spam").version) == 1


@requires_data
def test_unchanged_rerun_trains_nothing_and_reuses_the_release(lab_home):
    champion_path = local_registry.local_champion(Settings.from_env(), "sms_spam")["path"]
    result = _execute(lab_home)
    assert result.success
    adapter = result.asset_materializations_for_node("sms_spam__adapter")[0].metadata
    evaluation = result.asset_materializations_for_node("sms_spam__evaluation")[0].metadata
    published = result.asset_materializations_for_node("sms_spam__published_adapter")[0].metadata
    assert adapter["reused"].value is True and evaluation["reused"].value is True
    assert published["reused"].value is True
    client = _client()
    (adapter_run,) = client.search_runs(
        [client.get_experiment_by_name("ftlab/sms_spam").experiment_id],
        filter_string=f"tags.dagster_run_id = '{result.run_id}' and tags.asset = 'adapter'")
    assert adapter_run.data.tags["reused"] == "True"
    assert client.get_metric_history(adapter_run.info.run_id, "loss") == []  # not one training step logged
    assert _checks(result)["promotion_gate"] is True
    assert "already the champion" in published["promotion_gate"].value
    assert [int(v.version) for v in mlflow_registry.versions(client, "ftlab-sms_spam")] == [1]
    assert local_registry.local_champion(Settings.from_env(), "sms_spam")["path"] == champion_path


@requires_data
def test_inbox_file_failing_the_contract_stops_the_run_and_keeps_the_champion(lab_home):
    release = local_registry.local_champion(Settings.from_env(), "sms_spam")["path"]
    before = sorted((p.name, p.stat().st_mtime_ns) for p in os.scandir(release))
    folder = inbox.inbox_dir(Settings.from_env(), "sms_spam")
    folder.mkdir(parents=True, exist_ok=True)
    rows = [("ham", f"see you at {i}") for i in range(120)] + [("phishing", f"click link {i}") for i in range(30)]
    pd.DataFrame(rows, columns=["label", "text"]).to_csv(folder / "bad_drop.csv", index=False)
    (request,), _ = inbox_run_requests(load_lab(lab_home["labs"] / "sms_spam.yaml"), None)
    result = _execute(lab_home, run_config=request.run_config, tags=request.tags)
    assert not result.success
    assert _checks(result) == {"data_contract": False}
    assert _materialized(result) == {"raw_dataset", "validated_dataset"}
    raw = result.asset_materializations_for_node("sms_spam__raw_dataset")[0].metadata
    assert raw["origin"].value == str(folder / "bad_drop.csv") and raw["rows"].value == 150
    assert int(mlflow_registry.champion(_client(), "ftlab-sms_spam").version) == 1
    assert local_registry.local_champion(Settings.from_env(), "sms_spam")["path"] == release
    assert sorted((p.name, p.stat().st_mtime_ns) for p in os.scandir(release)) == before


@requires_data
def test_inbox_file_changed_after_the_sensor_saw_it_is_refused(lab_home):
    folder = inbox.inbox_dir(Settings.from_env(), "sms_spam")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "late.csv").write_text("label,text\nham,first version\n")
    requests, _ = inbox_run_requests(load_lab(lab_home["labs"] / "sms_spam.yaml"), None)
    request = next(r for r in requests if r.tags["ftlab/inbox_file"] == "late.csv")
    (folder / "late.csv").write_text("label,text\nham,edited after the sensor looked\n")
    result = _execute(lab_home, run_config=request.run_config, asset_selection=[dg.AssetKey(["sms_spam", "raw_dataset"])])
    assert not result.success and _materialized(result) == set()
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "content changed since the sensor requested this run" in failure.event_specific_data.error.to_string()


@requires_data
def test_gate_keeps_the_champion_and_promote_moves_it_by_hand(lab_home, capsys):
    client = _client()
    champion = mlflow_registry.champion(client, "ftlab-sms_spam")
    value = float(champion.tags["test_f1"])
    run = client.create_run(client.get_experiment_by_name("ftlab/sms_spam").experiment_id)
    worse = mlflow_registry.register_and_gate(client, "ftlab-sms_spam", champion.source, run.info.run_id, "f1",
                                       value - 0.05, 0.0, release_key="challenger")
    assert not worse.passed and not worse.promoted and "the champion is unchanged" in worse.reason
    assert int(mlflow_registry.champion(client, "ftlab-sms_spam").version) == 1

    assert cli.main(["models", "sms_spam"]) == 0
    listing = capsys.readouterr().out
    assert "v1" in listing and "champion" in listing and "v2" in listing and f"f1={value:.4f}" in listing

    assert cli.main(["promote", "sms_spam", "v2", "--reason", "rollback drill"]) == 0
    promoted = mlflow_registry.champion(client, "ftlab-sms_spam")
    assert int(promoted.version) == 2
    assert promoted.tags["promotion"] == "manual" and promoted.tags["promotion_reason"] == "rollback drill"
    assert promoted.tags["promoted_at"] and promoted.tags["promoted_by"]
    assert cli.main(["promote", "sms_spam", "9"]) == 2
    assert "has no version 9" in capsys.readouterr().err
    assert cli.main(["promote", "sms_spam", "1"]) == 0
    assert int(mlflow_registry.champion(client, "ftlab-sms_spam").version) == 1
