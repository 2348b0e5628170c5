"""The CLI, the README contract, and the Dagster CLI on the real workspace."""

from __future__ import annotations

import argparse
import os
import re
import shlex
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


def readme_commands() -> list[str]:
    """Every command line in the README's ```bash blocks, comments dropped, `a && b` split."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    lines = [line.split("  #")[0].split(" # ")[0].strip() for block in blocks for line in block.splitlines()]
    return [part.strip() for line in lines if line and not line.startswith("#") for part in line.split("&&")]


def test_every_readme_command_exists_in_the_cli_or_makefile():
    from ftlab_pipelines.cli import build_parser

    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    targets = set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), flags=re.M))
    commands = readme_commands()
    assert any(c.startswith(".venv/bin/ftlab new-lab") for c in commands), "the README shows how to bring a CSV"
    for command in commands:
        words = shlex.split(command)
        if words[0] in ("ftlab", ".venv/bin/ftlab"):
            assert words[1] in subcommands, f"README: {command!r}: no `ftlab {words[1]}`"
        elif words[0] == "make":
            assert all(w in targets or "=" in w for w in words[1:]), f"README: {command!r}: no such make target"
        else:
            pytest.fail(f"README: {command!r} is neither an ftlab nor a make command")


@pytest.mark.parametrize("command", [[], ["run"], ["predict"], ["chat"], ["serve"], ["models"], ["promote"],
                                     ["labs"], ["new-lab"]])
def test_every_command_has_help(command):
    out = run(f"{BIN}/ftlab", *command, "--help")
    assert out.returncode == 0 and "usage: ftlab" in out.stdout


def test_labs_lists_reference_labs():
    out = run(f"{BIN}/ftlab", "labs")
    assert out.returncode == 0
    assert "sms_spam" in out.stdout and "financial_sentiment" in out.stdout


def test_predict_without_release_fails_with_advice(capsys):
    """In-process (the autouse fixture gives an empty FTLAB_HOME); the subprocess path is the test below."""
    from ftlab_pipelines.cli import main

    assert main(["predict", "sms_spam", "hello"]) == 2
    err = capsys.readouterr().err
    assert "models:/ftlab-sms_spam@champion" in err and "ftlab run sms_spam" in err


@requires_data
def test_predict_with_published_release(tiny_spam):
    import json

    published = tiny_spam["result"].output_for_node("sms_spam__published_adapter")
    out = run(f"{BIN}/ftlab", "predict", "sms_spam", "Call now to claim your prize", "--version", "1",
              env={"FTLAB_HOME": str(tiny_spam["home"])})
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.splitlines()  # one JSON line per text, nothing else on stdout
    prediction = json.loads(line)
    threshold = json.loads((published.path / "threshold.json").read_text())["threshold"]
    assert prediction["text"] == "Call now to claim your prize"
    spam = prediction["probabilities"]["spam"]  # rounded to 4 places: a tiny model can sit within that of the threshold
    assert prediction["label"] == ("spam" if spam >= threshold else "ham") or abs(spam - threshold) <= 5e-5


def test_dagster_validates_the_workspace_with_every_lab_asset():
    from ftlab_pipelines.definitions import build_definitions

    validate = run(f"{BIN}/dagster", "definitions", "validate", "-w", "workspace.yaml")
    assert validate.returncode == 0, validate.stderr[-2000:]
    assert "ftlab_pipelines.definitions" in (REPO / "workspace.yaml").read_text()  # the module the CLI loaded
    keys = {"/".join(key.path) for asset in build_definitions().assets for key in asset.keys}
    stages = ["raw_dataset", "validated_dataset", "splits", "tokenized", "adapter", "evaluation", "published_adapter"]
    assert keys == {f"{p.stem}/{stage}" for p in (REPO / "labs").glob("*.yaml") for stage in stages}


@requires_data
def test_run_only_some_assets(tmp_path, ftlab_home):
    env = {"FTLAB_HOME": str(ftlab_home), "DAGSTER_HOME": str(tmp_path / "dagster")}
    out = run(f"{BIN}/ftlab", "run", "sms_spam", "--only", "raw_dataset", "validated_dataset", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "assets raw_dataset, validated_dataset of lab sms_spam materialized" in out.stdout
    assert list((ftlab_home / "artifacts" / "sms_spam").iterdir())
    assert not (ftlab_home / "artifacts" / "sms_spam" / "splits").exists()


def test_new_lab_with_a_missing_file_fails_nonzero(tmp_path):
    out = run(f"{BIN}/ftlab", "new-lab", "mine", "--csv", str(tmp_path / "nope.csv"), "--text", "t", "--label", "l",
              env={"FTLAB_LABS_DIR": str(tmp_path), "FTLAB_CONTRACTS_DIR": str(tmp_path)})
    assert out.returncode == 2 and "nope.csv" in out.stderr and not list(tmp_path.glob("*.yaml"))


def test_run_unknown_lab_fails_nonzero(tmp_path, capsys, monkeypatch):
    from ftlab_pipelines.cli import main

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))  # `ftlab run` sets it; restored after the test
    assert main(["run", "no_such_lab"]) == 2
    err = capsys.readouterr().err
    assert "no lab 'no_such_lab'" in err and "sms_spam" in err
