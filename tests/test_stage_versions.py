"""One declaration per stage: changing a lab field changes exactly the code versions of the stages that read it,
and the cache keys of those stages and everything downstream (a key changes if and only if its version or an
upstream key does). Also: a stage cannot read a field it does not declare."""

from __future__ import annotations

import typing

import pytest
import yaml
from conftest import REPO
from pydantic import BaseModel

from ftlab_pipelines.core.config.labs import LabConfig
from ftlab_pipelines.core.config.settings import Settings
from ftlab_pipelines.core.stages.declaration import (
    ORCHESTRATION_ONLY,
    UndeclaredConfigRead,
    value_at,
)
from ftlab_pipelines.core.stages.pipeline import DECLARATIONS, downstream

# Classification with a text column, classification of rendered tabular rows, SFT (instruction and chat format).
LABS = ["sms_spam", "creditcard_fraud", "persona_chat", "psychology_instruct"]
# Fields that cannot change alone and stay a valid lab: changed together with these partners.
SHARES = ("split.train", "split.validation", "split.test")  # must sum to 1: one moves 0.05 to another
COUPLED = {
    "source.test_local_path": {"source.test_local_path": "elsewhere/test.csv", "split.test": 0, "split.train": 0.9},
    "source.test_hub_split": {"source.test_hub_split": "test", "split.test": 0, "split.train": 0.9},
    "eval.prevalence": {"eval.prevalence": {"rate": 0.01}},
    "render.bin_words": {"render.bins": 2, "render.bin_words": ["small", "large"]},
    "model.quantization": {"model.quantization": "4bit", "peft.method": "lora"},  # a 4-bit model trains LoRA only
}
NOT_MUTATED = {"name": "the lab's identity: another name is another lab (other asset keys, other folders)",
               "task": "a lab cannot switch between classification and sft alone; every stage declares it"}
# The validator refuses these in an sft lab (peft.method: its only other value, full).
NOT_IN_SFT = {"labels", "positive_label", "split.balance", "eval.prevalence", "peft.method"}


def base_lab(name: str) -> LabConfig:
    return LabConfig.model_validate(yaml.safe_load((REPO / "labs" / f"{name}.yaml").read_text()) | {"name": name})


def leaf_paths(obj: BaseModel, prefix: str = "") -> list[str]:
    paths = []
    for name in type(obj).model_fields:
        value = getattr(obj, name)
        if isinstance(value, BaseModel):
            paths += leaf_paths(value, f"{prefix}{name}.")
        else:
            paths.append(prefix + name)
    return paths


def literal_choices(annotation) -> list:
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return [c for arg in typing.get_args(annotation) for c in literal_choices(arg)]


def field_annotation(lab: LabConfig, path: str):
    *parents, name = path.split(".")
    owner = value_at(lab, ".".join(parents)) if parents else lab
    return type(owner).model_fields[name].annotation


def optional_sections(annotation) -> list:
    """An unset optional section (e.g. train.ray) is set by giving it its defaults."""
    return [{} for arg in typing.get_args(annotation) if isinstance(arg, type) and issubclass(arg, BaseModel)]


def candidates(value, annotation, lab: LabConfig) -> list:
    choices = [c for c in literal_choices(annotation) if c != value]
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value - 1, value * 2, 2]
    if isinstance(value, float):
        return [value * 1.5, value / 2, value + 0.05, value - 0.05, 0.5, 0.25]
    if isinstance(value, str):
        return [*choices, *[label for label in lab.labels if label != value], value + "_x", "Europe/Paris", ["q_proj"],
                "### Extra:\n{system}\n{user}\n"]
    if isinstance(value, list):
        return [list(reversed(value)), value[:-1], [*value, value[0]], *choices] if value else [["x"], *choices]
    if isinstance(value, dict):
        return [{**value, "x": "y"}, {**value, 5: "z"}, {**value, "x": {"f1": 0.5}}]
    return [*choices, *optional_sections(annotation), 2, 100, "x_1", ["query"], {"x": "y"}, {5: "z"},
            {"columns": ["text"]}, {"cron": "0 1 * * *"}, 0.5]


def with_changes(lab: LabConfig, changes: dict[str, object]) -> LabConfig:
    raw = lab.model_dump(mode="python")
    for path, value in changes.items():
        *parents, name = path.split(".")
        node = raw
        for part in parents:
            node = node[part]
        node[name] = value
    return LabConfig.model_validate(raw)


def mutate(lab: LabConfig, path: str) -> tuple[LabConfig, dict] | None:
    """A valid lab where the field at `path` (and its declared partners) has another value; None if impossible."""
    before = value_at(lab, path)
    options = [{path: c} for c in candidates(before, field_annotation(lab, path), lab)]
    if path in SHARES:
        options = [{path: round(before + 0.05, 4), other: round(value_at(lab, other) - 0.05, 4)}
                   for other in SHARES if other != path] + [{path: round(before - 0.05, 4),
                                                             other: round(value_at(lab, other) + 0.05, 4)}
                                                            for other in SHARES if other != path]
    for changes in [*options, *([COUPLED[path]] if path in COUPLED else [])]:
        try:
            changed = with_changes(lab, changes)
        except (ValueError, TypeError):
            continue
        if value_at(changed, path) != before:
            return changed, changes
    return None


def reads(stage: str, lab: LabConfig, path: str) -> bool:
    return any(path == d or path.startswith(d + ".") or d.startswith(path + ".")
               for d in DECLARATIONS[stage].fields(lab))


def versions_and_keys(lab: LabConfig, settings: Settings) -> tuple[dict, dict]:
    versions, keys = {}, {}
    for name, declaration in DECLARATIONS.items():  # in chain order: upstream first
        versions[name] = declaration.code_version(lab, settings)
        keys[name] = declaration.cache_key(lab, settings, {u: keys[u] for u in declaration.upstream},
                                           {"data_hash": "same rows"})
    return versions, keys


@pytest.mark.parametrize("lab_name", LABS)
def test_every_field_changes_exactly_its_stages_and_their_downstream(lab_name):
    settings = Settings.from_env()
    lab = base_lab(lab_name)
    versions, keys = versions_and_keys(lab, settings)
    checked, impossible = [], []
    for path in leaf_paths(lab):
        if (path in NOT_MUTATED or (lab.is_generative and path in NOT_IN_SFT)
                or (path == "split.test" and lab.source.has_test_source)):  # the validator keeps it 0 there
            continue
        mutated = mutate(lab, path)
        if mutated is None:
            impossible.append(path)
            continue
        changed_lab, changes = mutated
        readers = {s for s in DECLARATIONS for p in changes if reads(s, lab, p) or reads(s, changed_lab, p)}
        new_versions, new_keys = versions_and_keys(changed_lab, settings)
        changed_versions = {s for s in versions if versions[s] != new_versions[s]}
        changed_keys = {s for s in keys if keys[s] != new_keys[s]}
        assert changed_versions == readers, f"{lab_name}: changing {changes} changed the versions of " \
                                            f"{sorted(changed_versions)}, but {sorted(readers)} read it"
        expected_keys = readers | {d for s in readers for d in downstream(s)}
        assert changed_keys == expected_keys, f"{lab_name}: changing {changes} changed the keys of " \
                                              f"{sorted(changed_keys)}, expected {sorted(expected_keys)}"
        for stage, declaration in DECLARATIONS.items():  # a key changes iff its version or an upstream key does
            upstream_changed = any(u in changed_keys for u in declaration.upstream)
            assert (stage in changed_keys) == (stage in changed_versions or upstream_changed), (stage, changes)
        checked.append(path)
    assert not impossible, f"{lab_name}: no valid other value found for {impossible}; add them to COUPLED"
    assert len(checked) > 60, checked


@pytest.mark.parametrize("lab_name", LABS)
def test_every_field_is_read_by_a_stage_or_only_orchestrates(lab_name):
    lab = base_lab(lab_name)
    unread = [p for p in leaf_paths(lab) if p not in NOT_MUTATED
              and not any(reads(s, lab, p) for s in DECLARATIONS)]
    orchestration = [p for p in unread if any(p == o or p.startswith(o + ".") for o in ORCHESTRATION_ONLY)]
    assert unread == orchestration, f"fields no stage declares: {sorted(set(unread) - set(orchestration))}"
    for path in orchestration:  # and changing them re-runs nothing
        changed = mutate(lab, path)
        if changed is not None:
            assert versions_and_keys(changed[0], Settings.from_env()) == versions_and_keys(lab, Settings.from_env())


def test_positive_label_changes_the_evaluation_and_release_keys_but_not_training():
    """Regression: evaluation's Dagster version hashed positive_label but its cache key did not, so a re-run
    reused the old threshold, metrics and labels.json."""
    settings = Settings.from_env()
    spam = base_lab("sms_spam")
    ham = with_changes(spam, {"positive_label": "ham"})
    (v_spam, k_spam), (v_ham, k_ham) = versions_and_keys(spam, settings), versions_and_keys(ham, settings)
    assert {s for s in v_spam if v_spam[s] != v_ham[s]} == {"evaluation", "published_adapter"}
    assert {s for s in k_spam if k_spam[s] != k_ham[s]} == {"evaluation", "published_adapter"}


def test_a_changed_data_contract_file_changes_validation_and_everything_after(tmp_path):
    contracts = tmp_path / "contracts"
    contracts.mkdir()
    for path in (REPO / "data_contracts").glob("*.yaml"):
        (contracts / path.name).write_text(path.read_text())
    before = Settings.from_env()
    after = Settings(**{**vars(before), "contracts_dir": contracts})
    lab = base_lab("sms_spam")
    assert versions_and_keys(lab, before) == versions_and_keys(lab, after)  # same text, other folder: no change
    (contracts / "sms_spam.yaml").write_text((contracts / "sms_spam.yaml").read_text() + "\n# tightened\n")
    (v1, k1), (v2, k2) = versions_and_keys(lab, before), versions_and_keys(lab, after)
    assert {s for s in v1 if v1[s] != v2[s]} == {"validated_dataset"}
    assert {s for s in k1 if k1[s] != k2[s]} == {"validated_dataset"} | downstream("validated_dataset")


def test_a_stage_cannot_read_a_field_it_does_not_declare():
    lab = base_lab("sms_spam")
    view = DECLARATIONS["splits"].view(lab)
    assert view.split.seed == lab.split.seed and view.source.text_column == "text"
    assert view.is_generative is False  # a property, computed from the declared `task`
    with pytest.raises(UndeclaredConfigRead, match=r"stage splits reads lab.train, .*add 'train' to the splits"):
        view.train.epochs
    with pytest.raises(UndeclaredConfigRead, match="lab.source.encoding"):
        view.source.encoding
    with pytest.raises(AttributeError, match="may not change"):
        view.split = None
