"""The CLI, the README contract, and the Dagster CLI on the real workspace."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO, requires_data

BIN = os.path.dirname(sys.executable)


def run(*args, env=None, timeout=300):
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_readme_commands_exist_in_makefile():
    readme = (REPO / "README.md").read_text()
    makefile = (REPO / "Makefile").read_text()
    for command in ["demo", "test", "ui"]:
        assert f"make {command}" in readme
        assert f"\n{command}:" in makefile
    assert "make test" in (REPO / ".ci" / "run").read_text()


@pytest.mark.parametrize("command", [[], ["run"], ["predict"], ["chat"], ["models"], ["promote"], ["labs"]])
def test_every_command_has_help(command):
    out = run(f"{BIN}/ftlab", *command, "--help")
    assert out.returncode == 0 and "usage: ftlab" in out.stdout


def test_labs_lists_reference_labs():
    out = run(f"{BIN}/ftlab", "labs")
    assert out.returncode == 0
    assert "sms_spam" in out.stdout and "financial_sentiment" in out.stdout


def test_predict_without_release_fails_with_advice(tmp_path):
    out = run(f"{BIN}/ftlab", "predict", "sms_spam", "hello", env={"FTLAB_HOME": str(tmp_path)})
    assert out.returncode == 1 and "ftlab run sms_spam" in out.stderr


@requires_data
def test_predict_with_published_release(pipeline):
    published = pipeline["result"].output_for_node("sms_spam__published_adapter")
    out = run(f"{BIN}/ftlab", "predict", "sms_spam", "Call now to claim your prize", "--release", published["path"])
    assert out.returncode == 0, out.stderr
    assert '"label": ' in out.stdout


def test_dagster_validates_and_lists_every_lab_asset():
    validate = run(f"{BIN}/dagster", "definitions", "validate", "-w", "workspace.yaml")
    assert validate.returncode == 0, validate.stderr[-2000:]
    listed = run(f"{BIN}/dagster", "asset", "list", "-m", "ftlab_pipelines.definitions")
    assert listed.returncode == 0, listed.stderr[-2000:]
    labs = [p.stem for p in (REPO / "labs").glob("*.yaml")]
    for lab in labs:
        for asset in ["raw_dataset", "validated_dataset", "splits", "tokenized", "adapter", "evaluation",
                      "published_adapter"]:
            assert f"{lab}/{asset}" in listed.stdout


@requires_data
def test_run_only_some_assets(tmp_path):
    env = {"FTLAB_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "dagster")}
    out = run(f"{BIN}/ftlab", "run", "sms_spam", "--only", "raw_dataset", "validated_dataset", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "assets raw_dataset, validated_dataset of lab sms_spam materialized" in out.stdout
    assert list((tmp_path / "artifacts" / "sms_spam").iterdir())
    assert not (tmp_path / "artifacts" / "sms_spam" / "splits").exists()


def test_run_unknown_lab_fails_nonzero(tmp_path):
    out = run(f"{BIN}/ftlab", "run", "no_such_lab", env={"FTLAB_HOME": str(tmp_path)})
    assert out.returncode == 2 and "no lab 'no_such_lab'" in out.stderr and "sms_spam" in out.stderr
