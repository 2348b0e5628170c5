"""The production profile on a real PostgreSQL: a throwaway server, deploy/dagster.yaml and MLflow both on it.

Needs the server binaries (initdb, pg_ctl): in PATH or Debian's /usr/lib/postgresql/*/bin. Without them the
tests skip, unless FTLAB_REQUIRE_POSTGRES=1 (set by .ci/run), where they fail instead.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, requires_data, tiny_lab, write_labs
from uis import free_port, stop_server

pytestmark = [pytest.mark.postgres, requires_data]

DATA_STAGES = ["raw_dataset", "validated_dataset", "splits"]
SUPERUSER = "ftlab"


def server_bin_dir() -> Path | None:
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                    key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0, reverse=True)
    return next((d for d in debian if (d / "initdb").is_file() and (d / "pg_ctl").is_file()), None)


@dataclass
class Postgres:
    port: int
    user: str = SUPERUSER
    host: str = "127.0.0.1"

    def url(self, db: str) -> str:
        """SQLAlchemy URL, as MLflow takes it: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3."""
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{db}"


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server on 127.0.0.1 (trust auth) with databases dagster, mlflow and mlflow_server."""
    bin_dir = server_bin_dir()
    if bin_dir is None:
        reason = "PostgreSQL server binaries (initdb, pg_ctl) not found in PATH or /usr/lib/postgresql/*/bin"
        if os.environ.get("FTLAB_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    # initdb refuses to run as root: as root, run the server binaries as the `postgres` OS user.
    as_user = {}
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` OS user to run initdb as")
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    root = Path(tempfile.mkdtemp(prefix="ftlab-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    if as_user:
        for path in (root, sockets):
            os.chown(path, as_user["user"], as_user["group"])

    def pg(*args: str) -> None:
        done = subprocess.run([str(bin_dir / args[0]), *args[1:]], check=False, cwd=root, capture_output=True,
                              text=True, **as_user)
        if done.returncode:
            log = root / "server.log"
            raise RuntimeError(f"{args[0]} failed:\n{done.stdout}{done.stderr}"
                               f"{log.read_text() if log.is_file() else ''}")

    port = free_port()
    started = False
    try:
        pg("initdb", "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{sockets}'\n"
                       "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
        pg("pg_ctl", "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "start")
        started = True

        import psycopg2

        server = Postgres(port)
        admin = psycopg2.connect(host=server.host, port=port, user=SUPERUSER, dbname="postgres")
        with contextlib.closing(admin) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                for db in ("dagster", "mlflow", "mlflow_server"):
                    cur.execute(f"CREATE DATABASE {db}")
        yield server
    finally:
        try:
            if started:
                pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(root, ignore_errors=True)


def test_data_stages_on_postgres(postgres, ftlab_home, tmp_path, monkeypatch):
    """A lab's data stages with the deploy/dagster.yaml instance and MLflow's store both in Postgres."""
    import dagster as dg
    from dagster_postgres import (
        PostgresEventLogStorage,
        PostgresRunStorage,
        PostgresScheduleStorage,
    )
    from mlflow import MlflowClient

    from ftlab_pipelines.core.stages import CONTRACT_CHECK
    from ftlab_pipelines.definitions import build_definitions
    from ftlab_pipelines.defs.resources import default_resources

    for name, value in {"HOST": postgres.host, "PORT": str(postgres.port), "USER": postgres.user,
                        "PASSWORD": "", "DB": "dagster"}.items():
        monkeypatch.setenv(f"DAGSTER_PG_{name}", value)
    tracking_uri = postgres.url("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", dagster_home / "dagster.yaml")
    defs = build_definitions(str(write_labs(tmp_path / "labs", {"sms_spam": tiny_lab("sms_spam")})))
    keys = [dg.AssetKey(["sms_spam", stage]) for stage in DATA_STAGES]

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)

        result = dg.materialize(list(defs.assets), selection=keys, instance=instance,
                                resources=default_resources(), raise_on_error=False)
        assert result.success, [e.message for e in result.all_events if e.is_failure]

        assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS
        for key in keys:
            event = instance.get_latest_materialization_event(key)
            assert event is not None and event.run_id == result.run_id, key
        check_key = dg.AssetCheckKey(keys[1], CONTRACT_CHECK)
        check = instance.event_log_storage.get_latest_asset_check_execution_by_key([check_key])[check_key]
        assert check.run_id == result.run_id and check.status.value == "SUCCEEDED"
        assert check.event.dagster_event.event_specific_data.passed

        # The pool default of deploy/dagster.yaml, initialised in Postgres as a training step's slot claim does.
        instance.event_log_storage.initialize_concurrency_limit_to_default("ftlab_training")
        assert instance.event_log_storage.get_concurrency_info("ftlab_training").slot_count == 1

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("ftlab/sms_spam")
    assert experiment.artifact_location.startswith(ftlab_home.as_uri())
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("ftlab.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("ftlab.role") == "asset"]
    assert len(parents) == 1 and parents[0].data.tags["dagster_run_id"] == result.run_id
    assert sorted(r.data.tags["asset"] for r in children) == sorted(DATA_STAGES)
    for run in children:
        assert run.data.tags["lab"] == "sms_spam" and run.data.tags["dagster_run_id"] == result.run_id
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.info.status == "FINISHED"


def test_mlflow_server_script(postgres, tmp_path):
    """deploy/mlflow-server.sh serves a Postgres store and proxies artifacts to its destination."""
    from ftlab_pipelines.core.config.settings import Settings
    from ftlab_pipelines.core.tracking import Tracker

    port = free_port()
    destination = tmp_path / "artifacts"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_PG_HOST": postgres.host, "MLFLOW_PG_PORT": str(postgres.port), "MLFLOW_PG_USER": postgres.user,
           "MLFLOW_PG_DB": "mlflow_server", "MLFLOW_ARTIFACTS_DESTINATION": str(destination),
           "MLFLOW_PORT": str(port), "MLFLOW_WORKERS": "1"}
    log = tmp_path / "mlflow-server.log"
    with log.open("w") as out:
        server = subprocess.Popen(["sh", str(REPO / "deploy" / "mlflow-server.sh")], env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, f"mlflow server exited:\n{log.read_text()}"
            with contextlib.suppress(OSError), \
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    break
            assert time.monotonic() < deadline, f"mlflow server not healthy after 180 s:\n{log.read_text()}"
            time.sleep(0.25)

        tracker = Tracker(Settings.from_env(), f"http://127.0.0.1:{port}")
        with tracker.asset_run("server_check", "raw_dataset", "dagster-run-1", {"config_hash": "x"}) as run:
            run.log_text("hello", "note.txt")
        experiment = tracker.client.get_experiment_by_name("ftlab/server_check")
        assert experiment.artifact_location.startswith("mlflow-artifacts:")
        assert [p.read_text() for p in destination.rglob("note.txt")] == ["hello"]
    finally:
        stop_server(server)
