"""Every lab file parses; bad lab files fail with the file and the key in the message."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import REPO

from ftlab_pipelines.core.config.labs import LabConfigError
from ftlab_pipelines.core.config.loading import load_lab, load_labs

LAB_FILES = sorted((REPO / "labs").glob("*.yaml"))


def test_there_are_reference_labs():
    assert {"sms_spam", "financial_sentiment"} <= {p.stem for p in LAB_FILES}


@pytest.mark.parametrize("path", LAB_FILES, ids=lambda p: p.stem)
def test_every_lab_parses(path):
    lab = load_lab(path)
    assert lab.name == path.stem
    assert (REPO / "data_contracts" / f"{lab.contract}.yaml").is_file()
    assert lab.split.train + lab.split.validation + lab.split.test == pytest.approx(1.0)


def _write(tmp_path: Path, raw: dict, name: str = "mylab") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _sms(**changes) -> dict:
    raw = yaml.safe_load((REPO / "labs" / "sms_spam.yaml").read_text())
    raw.update(changes)
    return raw


def test_unknown_key_names_file_and_key(tmp_path):
    raw = _sms()
    raw["train"]["epochz"] = 3
    with pytest.raises(LabConfigError) as err:
        load_lab(_write(tmp_path, raw))
    assert "mylab.yaml" in str(err.value) and "train.epochz" in str(err.value) and "unknown key" in str(err.value)


def test_wrong_type_names_file_and_key(tmp_path):
    raw = _sms()
    raw["train"]["batch_size"] = "lots"
    with pytest.raises(LabConfigError) as err:
        load_lab(_write(tmp_path, raw))
    assert "mylab.yaml" in str(err.value) and "train.batch_size" in str(err.value)


def test_bare_on_and_off_switch_bf16_as_written(tmp_path):
    """YAML 1.1 reads `bf16: off` as false; the lab takes it as the word, the way the field's help spells it."""
    for written in ("off", "on"):
        path = _write(tmp_path, _sms())
        path.write_text(path.read_text().replace("train:\n", f"train:\n  bf16: {written}\n", 1))
        assert load_lab(path).train.bf16 == written
    raw = _sms()
    raw["train"]["bf16"] = "maybe"
    with pytest.raises(LabConfigError, match="train.bf16"):
        load_lab(_write(tmp_path, raw))


def test_split_shares_must_sum_to_one(tmp_path):
    raw = _sms()
    raw["split"]["test"] = 0.5
    with pytest.raises(LabConfigError, match="split"):
        load_lab(_write(tmp_path, raw))


def test_missing_contract_is_named(tmp_path):
    with pytest.raises(LabConfigError) as err:
        load_lab(_write(tmp_path, _sms(contract="no_such_contract")))
    assert "'contract'" in str(err.value) and "no_such_contract.yaml" in str(err.value)


def test_name_must_match_file(tmp_path):
    with pytest.raises(LabConfigError, match="must match the file name"):
        load_lab(_write(tmp_path, _sms(name="other")))


def test_not_a_mapping(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(LabConfigError, match="broken.yaml"):
        load_lab(path)


def test_adding_a_lab_is_yaml_only(tmp_path):
    """A new lab file (same contract shape) becomes a full asset chain with no code change."""
    from ftlab_pipelines.definitions import build_definitions

    _write(tmp_path, _sms(name="my_spam_copy"), "my_spam_copy")
    defs = build_definitions(str(tmp_path))
    keys = {"/".join(k.path) for a in defs.assets for k in a.keys}
    assert {f"my_spam_copy/{a}" for a in ["raw_dataset", "validated_dataset", "splits", "tokenized", "adapter",
                                          "evaluation", "published_adapter"]} == keys
    assert load_labs(tmp_path)["my_spam_copy"].registry_name == "ftlab-my_spam_copy"


@pytest.mark.parametrize("path", LAB_FILES, ids=lambda p: p.stem)
def test_every_lab_mirror_passes_its_contract(path):
    """Each lab's local mirror loads and meets its data contract (skipped where no mirror is present)."""
    from ftlab_pipelines.core.config.settings import Settings
    from ftlab_pipelines.core.data.contracts import run_contract
    from ftlab_pipelines.core.data.sources import load_raw, resolve_local_path

    settings = Settings.from_env()
    lab = load_lab(path)
    if resolve_local_path(lab.source, settings.data_dir) is None:
        pytest.skip(f"no local mirror of {lab.source.local_path}")
    frame, origin = load_raw(lab.source, settings.data_dir)
    report = run_contract(frame, settings.contract_path(lab.contract), source=origin)
    assert report.success, report.error_message()


def test_task_decides_which_keys_a_lab_needs(tmp_path):
    sft = yaml.safe_load((REPO / "labs" / "persona_chat.yaml").read_text())
    with pytest.raises(LabConfigError, match="an sft lab has no labels"):
        load_lab(_write(tmp_path, {**sft, "labels": ["a", "b"]}, "persona_chat"))
    with pytest.raises(LabConfigError, match="needs at least 2 labels"):
        load_lab(_write(tmp_path, {k: v for k, v in _sms().items() if k != "labels"}, "sms_spam"))
    lab = load_lab(_write(tmp_path, sft, "persona_chat"))
    assert lab.eval.primary_metric == "eval_loss" and not lab.eval.greater_is_better


def test_natural_rate_estimates_need_a_binary_lab(tmp_path):
    three = yaml.safe_load((REPO / "labs" / "financial_sentiment.yaml").read_text())
    three["eval"]["prevalence"] = {"rate": 0.01}
    with pytest.raises(LabConfigError, match="eval.prevalence needs a binary lab"):
        load_lab(_write(tmp_path, three, "financial_sentiment"))
    sft = yaml.safe_load((REPO / "labs" / "persona_chat.yaml").read_text())
    sft.setdefault("eval", {})["prevalence"] = {"rate": 0.01}
    with pytest.raises(LabConfigError, match="an sft lab has no labels, positive_label or eval.prevalence"):
        load_lab(_write(tmp_path, sft, "persona_chat"))
    spam = _sms()
    spam["eval"] = {**spam.get("eval", {}), "prevalence": {"rate": "13/100"}}
    assert load_lab(_write(tmp_path, spam)).eval.prevalence.rate == 0.13
