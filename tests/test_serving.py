"""`ftlab serve` against a real server: MLflow's scoring app on a free loopback port, started and stopped here.

Good payloads in every format MLflow accepts give the same answers as `ftlab predict`; each bad request gets a
4xx whose message names the problem, and the server goes on answering the next good one."""

from __future__ import annotations

import json
import os
import subprocess

import pandas as pd
import pytest
import requests
from conftest import REPO, copy_run_root, release_model, requires_data
from uis import free_port, serve

pytestmark = requires_data
BIN = REPO / ".venv" / "bin"
TEXTS = ["Ok, see you at home tonight", "URGENT! You won a FREE prize, call 09061701461 now", "lunch at 1?"]


@pytest.fixture(scope="module")
def server(tiny_spam_run, tmp_path_factory):
    """`ftlab serve sms_spam` on a copy of the session's tiny run (serving caches the model under FTLAB_HOME)."""
    root = copy_run_root(tiny_spam_run["root"], tmp_path_factory.mktemp("serve") / "run")
    home, port = root / "home", free_port()
    url = f"http://127.0.0.1:{port}"
    # Empty MLFLOW_* (no store inherited from the test process): the server's FTLAB_HOME decides.
    env = {"FTLAB_HOME": str(home), "FTLAB_LABS_DIR": str(root / "labs"), "MLFLOW_TRACKING_URI": "",
           "MLFLOW_REGISTRY_URI": ""}
    with serve([str(BIN / "ftlab"), "serve", "sms_spam", "--port", str(port)], f"{url}/ping", root / "serve.log", env):
        yield {"url": url, "home": home, "log": root / "serve.log"}


def invoke(server, payload, content_type: str = "application/json", **kwargs) -> requests.Response:
    data = payload if isinstance(payload, str | bytes) else json.dumps(payload)
    return requests.post(f"{server['url']}/invocations", data=data, headers={"Content-Type": content_type},
                         timeout=60, **kwargs)


@pytest.fixture(scope="module")
def expected(server):
    """What the same model answers in-process (the path `ftlab predict` takes)."""
    return release_model(server["home"], "sms_spam").predict(pd.DataFrame({"text": TEXTS}))


def predictions(response: requests.Response) -> pd.DataFrame:
    assert response.status_code == 200, response.text
    return pd.DataFrame(response.json()["predictions"])


@pytest.mark.parametrize("payload", [
    {"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}},
    {"dataframe_records": [{"text": t} for t in TEXTS]},
    {"inputs": {"text": TEXTS}},
], ids=["dataframe_split", "dataframe_records", "inputs"])
def test_every_payload_format_answers_like_ftlab_predict(server, expected, payload):
    served = predictions(invoke(server, payload))
    assert served.label.tolist() == expected.label.tolist()
    assert (served[["score", "prob_ham", "prob_spam"]] - expected[["score", "prob_ham", "prob_spam"]]).abs().max().max() < 1e-6


GOOD = {"dataframe_records": [{"text": "see you soon"}]}
BAD_REQUESTS = {
    "not_json": ("this is not json", "json"),
    "missing_text_column": ({"dataframe_records": [{"message": "hi"}]}, "text"),
    "wrong_type": ({"dataframe_records": [{"text": 12345}]}, "text"),
    "empty_batch": ({"dataframe_split": {"columns": ["text"], "data": []}}, "no rows"),
    "five_megabyte_text": ({"dataframe_records": [{"text": "spam " * 1_000_000}]}, "characters"),
    "unknown_param": ({**GOOD, "params": {"temperature": 0.5}}, "unknown params ['temperature']"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_a_4xx_naming_the_problem_and_the_server_keeps_serving(server, case):
    payload, named = BAD_REQUESTS[case]
    response = invoke(server, payload)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    assert named.lower() in response.text.lower(), response.text[:1000]
    assert len(response.content) < 100_000  # the error does not echo a 5 MB request back
    assert predictions(invoke(server, GOOD)).label.isin(["ham", "spam"]).all()


def test_serve_refuses_a_version_that_does_not_exist(tiny_spam):
    done = subprocess.run([str(BIN / "ftlab"), "serve", "sms_spam", "--version", "99", "--port", str(free_port())],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "FTLAB_HOME": str(tiny_spam["home"])})
    assert done.returncode == 2 and "models:/ftlab-sms_spam/99" in done.stderr and "ftlab models" in done.stderr


def test_a_version_promoted_by_hand_is_what_serve_serves(trained_home):
    """`ftlab promote` moves the alias; `ftlab serve` without --version then serves that version."""
    from ftlab_pipelines.cli import main
    from ftlab_pipelines.core.config.settings import Settings
    from ftlab_pipelines.core.release import mlflow_registry
    from ftlab_pipelines.core.tracking import Tracker

    client = Tracker(Settings.from_env()).client
    champion = mlflow_registry.champion(client, "ftlab-sms_spam")
    worse = mlflow_registry.register_and_gate(client, "ftlab-sms_spam", champion.source, champion.run_id, "f1",
                                              0.0, 0.0, release_key="by-hand")
    assert not worse.promoted
    assert main(["promote", "sms_spam", str(worse.version)]) == 0
    env = {**os.environ, "MLFLOW_TRACKING_URI": "", "MLFLOW_REGISTRY_URI": ""}
    process = subprocess.Popen([str(BIN / "ftlab"), "serve", "sms_spam", "--port", str(free_port())], env=env,
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        first = process.stdout.readline()
    finally:
        process.kill()  # only its first line matters; a graceful stop waits for the model load (slow when loaded)
        process.wait(timeout=30)
    assert first.startswith(f"ftlab: serving ftlab-sms_spam v{worse.version} (models:/ftlab-sms_spam@champion)"), first
