"""Every release is a self-contained MLflow pyfunc model: registered as such, equal to what was evaluated, loadable
in a process that has only the model's declared requirements, with its lineage in MLflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, release_model, requires_data

pytestmark = requires_data


def client_for(home: Path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def output(run, asset: str):
    return run["result"].output_for_node(f"sms_spam__{asset}")


def test_registered_version_is_the_logged_pyfunc_model(tiny_spam):
    release = output(tiny_spam, "published_adapter")
    version = client_for(tiny_spam["home"]).get_model_version_by_alias("ftlab-sms_spam", "champion")
    assert version.source == release.model_uri == f"models:/{release.model_id}"
    linked = json.loads(client_for(tiny_spam["home"]).get_logged_model(release.model_id).tags["mlflow.modelVersions"])
    assert [(v["name"], int(v["version"])) for v in linked] == [("ftlab-sms_spam", 1)]
    champion, pinned = release_model(tiny_spam["home"], "sms_spam"), release_model(tiny_spam["home"], "sms_spam", 1)
    assert champion.metadata.model_id == pinned.metadata.model_id == release.model_id
    signature = champion.metadata.signature
    assert signature.inputs.input_names() == ["text"]
    assert signature.outputs.input_names() == ["label", "score", "prob_ham", "prob_spam"]
    assert champion.metadata.saved_input_example_info is not None


def test_pyfunc_equals_base_plus_adapter_and_ftlab_predict_on_every_test_row(tiny_spam, tmp_path, capsys):
    """The merged pyfunc scores the test split as the evaluated base + adapter did, and `ftlab predict --csv`
    prints the same labels."""
    from ftlab_pipelines.cli import main
    from ftlab_pipelines.core.config.labs import ModelConfig
    from ftlab_pipelines.core.evaluation import inference
    from ftlab_pipelines.core.modeling import models

    test = output(tiny_spam, "splits").frames()["test"]
    release, evaluation = output(tiny_spam, "published_adapter"), output(tiny_spam, "evaluation")
    served = release_model(tiny_spam["home"], "sms_spam").predict(test[["text"]])
    info = json.loads((release.path / "ftlab_model.json").read_text())
    base = ModelConfig.model_validate(info["model"])
    evaluated = inference.predict_texts(models.load_adapter_classifier(release.path, base, ["ham", "spam"]),
                                        models.load_tokenizer(base), test["text"].tolist(), base.template,
                                        base.max_length)
    assert np.abs(served[["prob_ham", "prob_spam"]].to_numpy() - evaluated).max() < 1e-4
    near = np.abs(evaluated[:, 1] - evaluation.threshold) < 1e-4  # a tiny model's scores crowd the threshold
    expected = np.where(evaluated[:, 1] >= evaluation.threshold, "spam", "ham")
    assert (served.label.to_numpy() == expected)[~near].all()

    csv = tmp_path / "test.csv"
    test.to_csv(csv, index=False)
    assert main(["predict", "sms_spam", "--csv", str(csv)]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [p["label"] for p in printed] == served.label.tolist()
    assert [p["text"] for p in printed] == test["text"].tolist()


FRESH_PROCESS = r"""
import json, sys, importlib.metadata as md
from pathlib import Path
import mlflow

model_dir = sys.argv[1]
model = mlflow.pyfunc.load_model(model_dir)
import pandas as pd
out = model.predict(pd.DataFrame({"text": ["Free prize! Call now", "see you at lunch"]}))

# Which installed distributions did loading and predicting import?
top = {name.split(".")[0] for name in sys.modules}
owners = md.packages_distributions()
used = {d.lower().replace("_", "-") for name in top for d in owners.get(name, [])}

def closure(names):
    seen, todo = set(), [n.lower().replace("_", "-") for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for req in requires:
            if "extra ==" in req:
                continue
            dep = req.split(";")[0].strip()
            for sep in "<>=!~[ (":
                dep = dep.split(sep)[0]
            todo.append(dep.lower().replace("_", "-"))
    return seen

declared = [line.split("==")[0] for line in (Path(model_dir) / "requirements.txt").read_text().split() if line]
print(json.dumps({"labels": out["label"].tolist(), "declared": declared,
                  "undeclared": sorted(used - closure(declared)),
                  "ftlab_or_peft": sorted(m for m in top if m in ("ftlab_pipelines", "peft", "dagster"))}))
"""


def test_model_loads_in_a_fresh_process_with_only_its_declared_requirements(tiny_spam, tmp_path):
    """No network, no ftlab, no model cache: the model directory alone, in a new interpreter (-I: no PYTHONPATH,
    no cwd on sys.path). Every distribution it imports is a declared requirement or one of theirs."""
    import mlflow

    from ftlab_pipelines.core.tracking import using_store

    with using_store(f"sqlite:///{tiny_spam['home'] / 'mlflow.db'}"):
        local = Path(mlflow.artifacts.download_artifacts("models:/ftlab-sms_spam/1", dst_path=str(tmp_path / "m")))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FTLAB_", "MLFLOW_", "PYTHONPATH"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "no-hf-cache"),
               FTLAB_MODEL_CACHE=str(tmp_path / "no-model-cache"))
    done = subprocess.run([sys.executable, "-I", "-c", FRESH_PROCESS, str(local)], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result["labels"]) <= {"ham", "spam"} and len(result["labels"]) == 2
    assert {"mlflow", "torch", "transformers", "pandas"} <= set(result["declared"])
    assert result["ftlab_or_peft"] == []
    # transformers imports what it finds installed (accelerate, ...); what matters is nothing of ftlab's own stack
    print("imported but not declared:", result["undeclared"])
    assert not set(result["undeclared"]) & {"peft", "dagster", "datasets", "scikit-learn", "bitsandbytes",
                                            "great-expectations", "ftlab-pipelines", "ftlab"}, result["undeclared"]
    assert (local / "artifacts" / "merged" / "model.safetensors").is_file()
    assert not list(local.rglob("adapter_model.safetensors"))  # merged: no adapter, no peft


def test_release_run_shows_datasets_model_and_linked_metrics(tiny_spam):
    from ftlab_pipelines.core.tracking import git_commit

    client = client_for(tiny_spam["home"])
    release, splits = output(tiny_spam, "published_adapter"), output(tiny_spam, "splits")
    version = client.get_model_version_by_alias("ftlab-sms_spam", "champion")
    run = client.get_run(version.run_id)
    datasets = {(d.dataset.name, d.dataset.digest): {t.key: t.value for t in d.tags} for d in run.inputs.dataset_inputs}
    assert datasets == {(f"sms_spam.{s}", splits.key): {"mlflow.data.context": c}
                        for s, c in (("train", "training"), ("validation", "validation"), ("test", "testing"))}
    assert [m.model_id for m in run.outputs.model_outputs] == [release.model_id]
    linked = {m.key: m for m in client.get_logged_model(release.model_id).metrics}
    f1 = output(tiny_spam, "evaluation").metrics["fine_tuned"]["f1"]
    assert linked["test_f1"].value == pytest.approx(f1)
    assert (linked["test_f1"].dataset_name, linked["test_f1"].dataset_digest) == ("sms_spam.test", splits.key)
    expected = git_commit()
    if (REPO / ".git").exists():
        assert expected and len(expected) == 40
    assert run.data.tags.get("mlflow.source.git.commit") == expected


@pytest.mark.parametrize("before", [None, "sqlite:////somewhere/else.db"])
def test_using_store_leaves_mlflow_and_the_environment_as_it_found_them(before, monkeypatch, tmp_path):
    """MLflow's set_tracking_uri writes MLFLOW_TRACKING_URI into os.environ; after the block nothing has moved,
    so a later subprocess (a DDP rank, `ftlab serve`) never inherits a store it was not given."""
    import mlflow

    from ftlab_pipelines.core.tracking import using_store

    if before is None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", before)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    outside = mlflow.get_tracking_uri()
    inside = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with using_store(inside):
        assert mlflow.get_tracking_uri() == mlflow.get_registry_uri() == inside
    assert os.environ.get("MLFLOW_TRACKING_URI") == before and "MLFLOW_REGISTRY_URI" not in os.environ
    assert mlflow.get_tracking_uri() == outside
