"""The bad-input corpus (tests/bad_inputs/README.md): every case fails with an error that names the file, the
column/row/key and what to do; nothing downstream of the failure materializes; the published champion of the
same lab is untouched."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import dagster as dg
import pytest
from conftest import REPO, tiny_lab, write_labs

from ftlab_pipelines.core.config.labs import LabConfigError
from ftlab_pipelines.definitions import build_definitions
from ftlab_pipelines.defs.resources import default_resources

CORPUS = Path(__file__).parent / "bad_inputs"
LAB = "sms_spam"  # every case runs under the champion's lab name, in the champion's FTLAB_HOME
STAGES = ["raw_dataset", "validated_dataset", "splits", "tokenized", "adapter", "evaluation", "published_adapter"]


@pytest.fixture
def lab_on(tiny_models):
    """make(source, **overrides): the sms_spam lab on `source`, training the tiny BERT for two steps."""
    def make(source: str | Path, **overrides) -> dict:
        lab = tiny_lab("sms_spam", tiny_models.classifier, **overrides)
        lab["source"] = {"local_path": str(source)}
        lab["train"].update(max_steps=2, save_steps=2)
        lab["eval"]["baselines"] = ["tfidf_logreg"]
        return lab
    return make


def materialize(root: Path, lab: dict, champion: dict, upto: str = "published_adapter"):
    """Materialize the lab's chain up to `upto` in the champion's Dagster instance; (result, materialized stages,
    error text)."""
    labs = write_labs(root / "labs", {LAB: lab})
    defs = build_definitions(str(labs))
    selected = [a for a in defs.assets if a.key.path[-1] in STAGES[: STAGES.index(upto) + 1]]
    result = dg.materialize(selected, instance=champion["instance"], resources=default_resources(),
                            raise_on_error=False)
    done = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    errors = [e.step_failure_data.error for e in result.all_events if e.is_step_failure]
    text = "\n".join(message for err in errors for message in error_chain(err))
    text += "\n".join(c.description or "" for c in result.get_asset_check_evaluations() if not c.passed)
    return result, done, text


def error_chain(error) -> list[str]:
    """Dagster wraps the stage's exception: its message is in the chain of causes."""
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return messages


def snapshot(home: Path) -> dict[str, str]:
    """Content hashes of the champion's files: adapter, evaluation, release and the local registry."""
    files = [p for p in (home / "artifacts" / LAB).rglob("*") if p.is_file()
             and p.parts[len((home / "artifacts" / LAB).parts)] in ("adapter", "evaluation", "published_adapter")]
    files.append(home / "registry" / f"{LAB}.json")
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def champion_version(home: Path) -> str:
    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(f"ftlab-{LAB}", "champion").version


@pytest.fixture
def champion(trained_home, monkeypatch, tmp_path):
    """A copy of the session's trained tiny sms_spam run: its release is the champion every bad case must leave
    alone (checked after the test); the cases run in its FTLAB_HOME and Dagster instance."""
    champion_home = trained_home["home"]
    contracts = tmp_path / "contracts"
    shutil.copytree(REPO / "data_contracts", contracts)
    shutil.copy(CORPUS / "permissive_contract.yaml", contracts / "permissive.yaml")
    monkeypatch.setenv("FTLAB_CONTRACTS_DIR", str(contracts))
    before = snapshot(champion_home), champion_version(champion_home)
    yield trained_home
    assert (snapshot(champion_home), champion_version(champion_home)) == before, "the champion was touched"


def binary_csv(tmp_path: Path) -> Path:
    path = tmp_path / "photo.csv"
    path.write_bytes(bytes(range(256)) * 40)  # NUL bytes and everything else: an image renamed .csv, say
    return path


# id, source file (or a callable making it), lab overrides, stages that may materialize, fragments of the error
PIPELINE_CASES = [
    ("missing_label_column", "missing_label.csv", {}, {"raw_dataset", "validated_dataset"},
     ["missing_label.csv", "column 'label' is missing", "Fix the data in"]),
    ("missing_text_column", "missing_text.csv", {}, {"raw_dataset", "validated_dataset"},
     ["missing_text.csv", "column 'text' is missing", "the data has columns: label, body", "Fix the data in"]),
    ("empty_file", "empty.csv", {}, set(), ["empty.csv", "the file is empty", "point the lab at a file"]),
    ("header_only", "header_only.csv", {}, set(), ["header_only.csv", "no data rows", "add rows"]),
    ("wrong_delimiter", "semicolon.csv", {}, set(),
     ["semicolon.csv", "line 1", "semicolon-delimited", "re-save it comma-separated"]),
    ("non_utf8_bytes", "latin1.csv", {}, set(),
     ["latin1.csv", "bytes at offset 180 are not valid utf-8 (line 5, data row 4", "set source.encoding"]),
    ("binary_file_named_csv", binary_csv, {}, set(), ["photo.csv", "NUL byte at offset 0", "point source.local_path"]),
    ("nan_labels", "nan_labels.csv", {}, {"raw_dataset", "validated_dataset"},
     ["nan_labels.csv", "label: 3 of 150 rows are null", "row 5: null", "Fix the data in"]),
    ("label_outside_contract", "unknown_label.csv", {}, {"raw_dataset", "validated_dataset"},
     ["unknown_label.csv", "label: 1 of 150 rows not in {ham, spam}", "row 12: 'maybe'", "Fix the data in"]),
    ("one_class_contract_bounds", "one_class.csv", {}, {"raw_dataset", "validated_dataset"},
     ["one_class.csv", "share of 'spam' is 0.000", "Fix the data in"]),
    ("one_class_no_bounds", "one_class.csv", {"contract": "permissive"}, {"raw_dataset", "validated_dataset"},
     ["one_class.csv", "column 'label': only class ['ham']", "add rows of the other classes"]),
    ("train_empty_after_overlap", "overlap_test.csv",
     {"contract": "permissive", "source": {"test_local_path": "overlap_test.csv"},
      "split": {"train": 0.875, "validation": 0.125, "test": 0.0}}, {"raw_dataset", "validated_dataset"},
     ["overlap_test.csv", "no rows left after removing duplicates and test-set overlap", "train split would be empty",
      "source.test_local_path"]),
    ("test_source_other_columns", "good.csv", {"source": {"test_local_path": "test_other_columns.csv"},
                                              "split": {"train": 0.875, "validation": 0.125, "test": 0.0}}, set(),
     ["test_other_columns.csv", "missing ['text'], extra ['body']", "good.csv", "give both files the same columns"]),
    ("model_path_missing", "good.csv", {"model": {"name": "/nonexistent/models/minilm"}},
     {"raw_dataset", "validated_dataset", "splits"},
     ["model.name '/nonexistent/models/minilm'", "is not a model directory (no config.json)", "fix the path"]),
]


def apply(lab: dict, overrides: dict, source_dir: Path) -> dict:
    for section, values in overrides.items():
        if not isinstance(values, dict):
            lab[section] = values
            continue
        values = {k: str(source_dir / v) if k == "test_local_path" else v for k, v in values.items()}
        lab.setdefault(section, {}).update(values)
    return lab


@pytest.mark.parametrize("case", PIPELINE_CASES, ids=[c[0] for c in PIPELINE_CASES])
def test_bad_input_fails_cleanly_and_leaves_the_champion(case, champion, lab_on, tmp_path):
    _, source, overrides, may_materialize, fragments = case
    path = source(tmp_path) if callable(source) else CORPUS / source
    result, done, error = materialize(tmp_path, apply(lab_on(path), overrides, CORPUS), champion)
    assert not result.success
    assert done == may_materialize  # nothing downstream of the failure
    for fragment in fragments:
        assert fragment in error, f"{fragment!r} not in the error:\n{error}"


@pytest.mark.parametrize("name, fragments", [
    ("unknown_key", ["unknown_key.yaml", "unknown key 'train.epochz'", "remove it or fix its spelling"]),
    ("wrong_type", ["wrong_type.yaml", "key 'train.epochs'", "'three'", "Fix these keys in"]),
    ("missing_contract", ["missing_contract.yaml", "key 'contract'", "sms_spam_v9.yaml", "add it or fix the name"]),
])
def test_bad_lab_file_is_refused_before_any_asset_exists(name, fragments, champion, tmp_path):
    labs = tmp_path / "labs"
    labs.mkdir()
    shutil.copy(CORPUS / f"{name}.yaml", labs / f"{name}.yaml")
    with pytest.raises(LabConfigError) as error:
        build_definitions(str(labs))
    for fragment in fragments:
        assert fragment in str(error.value)
    assert not (champion["home"] / "artifacts" / name).exists()


def test_model_too_big_for_memory_fails_the_adapter_before_loading(champion, lab_on, tiny_models, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setenv("FTLAB_MEMORY_LIMIT_MB", "5")  # a machine shared with other jobs: 5 MB for us
    result, done, error = materialize(tmp_path, lab_on(CORPUS / "good.csv", train__seed=7), champion)  # a new adapter
    assert not result.success and done == {"raw_dataset", "validated_dataset", "splits", "tokenized"}
    # The tiny BERT: 2.06M parameters x 4 bytes x 1.5 = 12 MB
    for fragment in [f"model.name '{tiny_models.classifier}'", "training needs about 12 MB", "only 5 MB is available",
                     "use a smaller model"]:
        assert fragment in error


def test_megabyte_text_is_truncated_by_max_length(champion, lab_on, tmp_path):
    import pandas as pd

    from ftlab_pipelines.core.text import tokenize

    frame = pd.read_csv(CORPUS / "good.csv")
    frame.loc[3, "text"] = "spam " * 210_000  # one 1 MB message
    frame.to_csv(tmp_path / "huge.csv", index=False)
    result, done, _ = materialize(tmp_path, lab_on(tmp_path / "huge.csv", contract="permissive"), champion,
                                 upto="tokenized")
    assert result.success and done == {"raw_dataset", "validated_dataset", "splits", "tokenized"}
    tokenized = result.asset_value(dg.AssetKey([LAB, "tokenized"]))
    lengths = [n for split in tokenize.load_tokenized(tokenized.dataset_path).values() for n in split["length"]]
    assert max(lengths) == 128  # model.max_length: the 1 MB text was cut, not fed whole
    for event in result.get_asset_materialization_events():  # no stage copies the megabyte into the event log
        metadata = event.step_materialization_data.materialization.metadata
        assert sum(len(str(v.value)) for v in metadata.values()) < 100_000, event.asset_key


def test_duplicates_across_train_and_test_are_removed_and_reported(champion, lab_on, tmp_path):
    import pandas as pd

    overrides = {"contract": "permissive", "source": {"test_local_path": "overlap_test.csv"},
                 "split": {"train": 0.875, "validation": 0.125, "test": 0.0}}
    result, done, _ = materialize(tmp_path, apply(lab_on(CORPUS / "overlap_train.csv"), overrides, CORPUS),
                                  champion, upto="splits")
    assert result.success
    splits = result.asset_value(dg.AssetKey([LAB, "splits"]))
    assert splits.test_overlap_removed == 8
    metadata = next(e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "splits")
    assert metadata.step_materialization_data.materialization.metadata["test_overlap_removed"].value == 8
    test_texts = set(pd.read_parquet(splits.split_path("test"))["text"])
    for name in ("train", "validation"):
        assert not test_texts & set(pd.read_parquet(splits.split_path(name))["text"])


def test_corrupt_adapter_is_refused_with_the_file_and_what_to_do(tmp_path):
    from ftlab_pipelines.core.modeling import safetensors_check

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(safetensors_check.UnsafeWeights, match=r"adapter_model.safetensors: adapter weights are corrupt "
                                                   r"\(not a safetensors file.*delete .*adapter and re-materialize"):
        safetensors_check.require_safetensors(adapter, "adapter_model", "adapter")
    (adapter / "adapter_model.safetensors").unlink()
    (adapter / "adapter_model.bin").write_bytes(b"pickle")  # safetensors only: a pickle is never loaded
    with pytest.raises(safetensors_check.UnsafeWeights, match=r"only in adapter_model.bin \(a pickle.*convert it"):
        safetensors_check.require_safetensors(adapter, "adapter_model", "adapter")


def test_corrupt_checkpoint_is_refused_and_a_half_written_one_set_aside(tmp_path):
    from ftlab_pipelines.core.training import checkpoints

    folder = tmp_path / "checkpoints"
    good, corrupt, partial = (folder / f"checkpoint-{n}" for n in (2, 4, 6))
    for directory in (good, corrupt, partial):
        directory.mkdir(parents=True)
    (good / "trainer_state.json").write_text("{}")
    (corrupt / "trainer_state.json").write_text("{}")
    (corrupt / "adapter_model.safetensors").write_bytes(b"\xff" * 64)  # e.g. a disk that filled up
    (partial / "adapter_model.safetensors").write_bytes(b"")  # killed while saving: no trainer_state.json yet
    with pytest.raises(checkpoints.CheckpointError, match=r"checkpoint-4/adapter_model.safetensors: corrupt checkpoint "
                                                     r"weights .*delete .*checkpoint-4 to resume from the previous"):
        checkpoints.resumable_checkpoint(folder)
    assert (folder / "incomplete-checkpoint-6").is_dir() and not partial.exists()
    shutil.rmtree(corrupt)
    assert checkpoints.resumable_checkpoint(folder) == str(good)
