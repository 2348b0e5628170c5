"""Real UI servers on loopback and a real chromium, for tests/test_browser.py."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import REPO

BIN = Path(sys.executable).parent
CHROMIUM = Path("/usr/bin/chromium")
# From ../shared/NOTES.md: no sandbox as root, no GPU, and nothing that reaches for the network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]
STARTUP_DEADLINE_S = 180  # a readiness deadline on a shared 2-core box, not a speed check


def browser_missing() -> str | None:
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} not found: apt-get install -y chromium"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install -e '.[dev]'"
    return None


def require_browser() -> None:
    """Skip without chromium or playwright; with FTLAB_REQUIRE_BROWSER=1 (CI) fail instead: a missing browser
    there is a broken setup, not a reason to pass."""
    reason = browser_missing()
    if reason and os.environ.get("FTLAB_REQUIRE_BROWSER") == "1":
        pytest.fail(f"FTLAB_REQUIRE_BROWSER=1 but {reason}")
    if reason:
        pytest.skip(reason)


@contextlib.contextmanager
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url}: not up after {STARTUP_DEADLINE_S}s:\n{log.read_text()[-3000:]}")


STOP_GRACE_S = 3  # throwaway servers: SIGTERM, then SIGKILL (uvicorn waits for open browser connections)


def start_server(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """A server in its own process group, started without waiting for it (`wait_until_up`)."""
    with log.open("w") as out:
        return subprocess.Popen(command, cwd=REPO, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop_server(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def serve(command: list[str], ready_url: str, log: Path, env: dict[str, str]):
    """Run a server in its own process group until the block ends, then stop the whole group."""
    process = start_server(command, log, env)
    try:
        wait_until_up(ready_url, process, log)
        yield process
    finally:
        stop_server(process)


def dagster_home(directory: Path) -> Path:
    """The repo's dagster.yaml, but runs launched from the UI start at once: the QueuedRunCoordinator would
    leave them waiting for a `dagster-daemon` this test does not run."""
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    config["run_coordinator"] = {"module": "dagster.core.run_coordinator", "class": "DefaultRunCoordinator"}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "dagster.yaml").write_text(yaml.safe_dump(config))
    return directory


def dagster_webserver(port: int) -> list[str]:
    return [str(BIN / "dagster-webserver"), "-m", "ftlab_pipelines.definitions", "-h", "127.0.0.1", "-p", str(port)]


# What `make ui` and deploy/mlflow-server.sh set: MLflow's server-side job runner (GenAI judges, trace rollups; ftlab
# uses neither) would start 8 more processes.
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def mlflow_server(store: Path, port: int) -> list[str]:
    """Start it with MLFLOW_SERVER_ENV."""
    return [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{store}", "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1"]


def screenshot_dir(tmp: Path) -> Path:
    """docs/img when FTLAB_SCREENSHOT_DIR says so (`make screenshots`), else a temp dir: a plain test run must not
    rewrite committed images."""
    configured = os.environ.get("FTLAB_SCREENSHOT_DIR")
    path = (REPO / configured) if configured else tmp
    path.mkdir(parents=True, exist_ok=True)
    return path
