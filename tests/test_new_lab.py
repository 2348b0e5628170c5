"""`ftlab new-lab` on CSVs the tests write: what it infers, what it refuses, and a new lab run end to end."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ftlab_pipelines.core.config.loading import load_lab
from ftlab_pipelines.core.config.settings import Settings
from ftlab_pipelines.core.data import new_lab
from ftlab_pipelines.core.data.contracts import load_contract
from ftlab_pipelines.core.stages.pipeline import STAGES

BIN = os.path.dirname(sys.executable)
WORDS = {"billing": ["invoice", "charged", "refund", "payment", "card", "twice"],
         "tech": ["crash", "error", "login", "app", "update", "password"],
         "shipping": ["parcel", "delivery", "courier", "tracking", "late", "address"]}


def tickets(classes: dict[str, int], seed: int = 0) -> pd.DataFrame:
    """Support tickets whose words give their topic away, so a few training steps learn something."""
    rng = random.Random(seed)
    rows = [(" ".join(rng.choice(WORDS[topic]) for _ in range(6)) + f" (ticket {topic[:2]}{i})", topic)
            for topic, n in classes.items() for i in range(n)]
    rng.shuffle(rows)
    return pd.DataFrame({"ticket_id": range(len(rows)), "message": [r[0] for r in rows], "topic": [r[1] for r in rows]})


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("FTLAB_LABS_DIR", str(tmp_path / "labs"))
    monkeypatch.setenv("FTLAB_CONTRACTS_DIR", str(tmp_path / "contracts"))
    return tmp_path


def test_binary_minority_class_is_positive_and_upsampled(dirs):
    csv = dirs / "mail.csv"
    tickets({"billing": 380, "tech": 20}).to_csv(csv, index=False)
    lab_path, contract_path, found = new_lab.write_new_lab(Settings.from_env(), "mail", csv, "message", "topic")
    lab = load_lab(lab_path)
    assert found.task == "binary" and lab.labels == ["billing", "tech"] and lab.positive_label == "tech"
    assert lab.split.balance == "upsample" and lab.eval.primary_metric == "f1"
    assert lab.source.local_path == str(csv) and lab.source.text_column == "message"
    assert 32 <= lab.model.max_length <= 64
    contract = load_contract(contract_path)
    assert contract.label.share_bounds["tech"] == (0.025, 0.1)
    assert contract.text.column == "message" and contract.text.max_length >= 2 * found.text_chars[1]


def test_multiclass_balanced_data_is_left_alone(dirs):
    csv = dirs / "t.csv"
    tickets({"billing": 40, "tech": 40, "shipping": 40}).to_csv(csv, index=False)
    lab = load_lab(new_lab.write_new_lab(Settings.from_env(), "t", csv, "message", "topic")[0])
    assert lab.labels == ["billing", "shipping", "tech"] and lab.positive_label is None
    assert lab.split.balance == "none" and lab.eval.primary_metric == "macro_f1"


@pytest.mark.parametrize("frame, args, message", [
    (tickets({"billing": 40, "tech": 40}), ("message", "label"), "no column 'label'; its columns are ticket_id"),
    (tickets({"billing": 60, "tech": 5}), ("message", "topic"), "class 'tech' has only 5 rows"),
    (tickets({"billing": 60}), ("message", "topic"), "one value only"),
    (tickets({"billing": 20, "tech": 20}), ("message", "topic"), "40 rows: too few"),
    (tickets({"billing": 40, "tech": 40}).assign(topic=lambda f: f.topic.mask(f.index == 7)), ("message", "topic"),
     "1 rows have no 'message' or no 'topic' (first at line 9)"),
])
def test_unusable_data_is_a_clear_error(dirs, frame, args, message):
    frame.to_csv(dirs / "bad.csv", index=False)
    with pytest.raises(new_lab.NewLabError, match=re.escape(message)):
        new_lab.write_new_lab(Settings.from_env(), "bad", dirs / "bad.csv", *args)
    assert not (dirs / "labs" / "bad.yaml").exists()


def test_existing_lab_is_not_overwritten_without_force(dirs):
    csv = dirs / "t.csv"
    tickets({"billing": 40, "tech": 40}).to_csv(csv, index=False)
    new_lab.write_new_lab(Settings.from_env(), "t", csv, "message", "topic")
    with pytest.raises(new_lab.NewLabError, match="exists; pick another name or pass --force"):
        new_lab.write_new_lab(Settings.from_env(), "t", csv, "message", "topic")
    new_lab.write_new_lab(Settings.from_env(), "t", csv, "message", "topic", force=True)


def ftlab(*args, env):
    return subprocess.run([f"{BIN}/ftlab", *args], capture_output=True, text=True, timeout=900,
                          env={**os.environ, **env})


def test_new_lab_from_a_csv_runs_end_to_end(tmp_path, ftlab_home, tiny_models, monkeypatch, capsys):
    """The README's bring-your-own-data path: new-lab, then run, then predict; no code change (a quick run on the
    tiny BERT). `ftlab run` runs as its own process (it loads the labs when it starts); new-lab and predict run
    in this one (their entry point is tested in test_cli)."""
    from ftlab_pipelines import cli

    csv = tmp_path / "tickets.csv"
    tickets({"billing": 100, "tech": 100, "shipping": 100}).to_csv(csv, index=False)
    env = {"FTLAB_LABS_DIR": str(tmp_path / "labs"), "FTLAB_CONTRACTS_DIR": str(tmp_path / "contracts"),
           "FTLAB_HOME": str(ftlab_home), "DAGSTER_HOME": str(tmp_path / "dagster")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["new-lab", "tickets", "--csv", str(csv), "--text", "message", "--label", "topic"]) == 0
    made = capsys.readouterr().out
    assert "multi-class classification, 300 rows" in made and "ftlab run tickets" in made

    lab_file = tmp_path / "labs" / "tickets.yaml"
    raw = yaml.safe_load(lab_file.read_text())
    assert raw["model"]["name"] == "all-minilm-l6-v2"
    raw["model"]["name"] = str(tiny_models.classifier)  # a quick run, same chain
    raw["train"].update({"max_steps": 12, "logging_steps": 4, "save_steps": 12})
    lab_file.write_text(yaml.safe_dump(raw))

    run = ftlab("run", "tickets", env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "lab tickets materialized" in run.stdout
    # Each stage's wall time, then the total (`make demo` ends with them).
    times = dict(re.findall(r"^ {4}(\w+) +([\d.]+) s$", run.stdout, flags=re.M))
    stages = list(STAGES)
    assert sorted(times) == sorted([*stages, "total"]), run.stdout[-2000:]
    assert abs(sum(float(times[s]) for s in stages) - float(times["total"])) < 0.1 * len(stages)
    assert float(times["adapter"]) > 0
    registry = json.loads((ftlab_home / "registry" / "tickets.json").read_text())
    assert registry[-1]["champion"] and (Path(registry[-1]["path"]) / "adapter_model.safetensors").is_file()

    assert cli.main(["predict", "tickets", "my parcel is late, where is the courier tracking"]) == 0
    prediction = json.loads(capsys.readouterr().out.splitlines()[0])
    probabilities = prediction["probabilities"]
    assert sorted(probabilities) == ["billing", "shipping", "tech"]
    assert probabilities[prediction["label"]] == max(probabilities.values())  # multi-class: argmax, no threshold
