"""The chain of stages and what each one reads: the single source of both Dagster versions and cache keys.

Each entry lists the lab fields (dotted paths) its stage's code reads and its direct upstream stages. A stage
sees the lab through a view of exactly these fields (reading another one raises), so this table is checked by
every run; tests/test_stage_versions.py checks that changing any lab field changes exactly the stages that
declare it and everything downstream of them.
"""

from __future__ import annotations

from ftlab_pipelines.core.config.labs import LabConfig
from ftlab_pipelines.core.config.settings import Settings
from ftlab_pipelines.core.stages.declaration import StageDeclaration
from ftlab_pipelines.core.stages.results import (
    Adapter,
    Evaluation,
    RawDataset,
    Release,
    Splits,
    Tokenized,
    ValidatedDataset,
)
from ftlab_pipelines.core.stages.runner import Stage

# What the model and its tokenizer are: read by every stage that loads them.
MODEL = ("model",)
PROMPT_OR_TEXT_COLUMNS = ("source.text_column", "source.label_column", "render", "prompt")


def _splits_reads(lab: LabConfig) -> tuple[str, ...]:
    if lab.is_generative:
        return ("task", "split", "prompt.user_column")
    return ("task", "split", "source.text_column", "source.label_column", "render.columns")


def _tokenized_reads(lab: LabConfig) -> tuple[str, ...]:
    return ("task", "labels", *MODEL, *PROMPT_OR_TEXT_COLUMNS)


def _evaluation_reads(lab: LabConfig) -> tuple[str, ...]:
    common = ("task", "eval", *MODEL, "train.eval_batch_size", "train.bf16")
    if lab.is_generative:
        return (*common, "prompt")
    return (*common, "labels", "positive_label", "train.seed", "split.seed", "source.text_column",
            "source.label_column")


def _release_reads(lab: LabConfig) -> tuple[str, ...]:
    return ("task", "description", "publish", "eval", "labels", "positive_label", *MODEL, "peft", "render", "prompt",
            "source.text_column", "source.label_column")


def contract_text(lab: LabConfig, settings: Settings) -> dict[str, object]:
    path = settings.contract_path(lab.contract)
    return {"contract_text": path.read_text(encoding="utf-8") if path.is_file() else ""}


DECLARATIONS: dict[str, StageDeclaration] = {d.name: d for d in (
    StageDeclaration("raw_dataset", lambda lab: ("source", "inbox.mode")),
    StageDeclaration("validated_dataset", lambda lab: ("contract",), ("raw_dataset",), external=contract_text),
    StageDeclaration("splits", _splits_reads, ("validated_dataset",)),
    StageDeclaration("tokenized", _tokenized_reads, ("splits",)),
    StageDeclaration("adapter", lambda lab: ("task", "labels", *MODEL, "peft", "train"), ("tokenized",)),
    StageDeclaration("evaluation", _evaluation_reads, ("splits", "tokenized", "adapter")),
    StageDeclaration("published_adapter", _release_reads, ("splits", "tokenized", "adapter", "evaluation")),
)}

STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage(DECLARATIONS["raw_dataset"], RawDataset, "ftlab_pipelines.core.stages.raw"),
    Stage(DECLARATIONS["validated_dataset"], ValidatedDataset, "ftlab_pipelines.core.stages.validate"),
    Stage(DECLARATIONS["splits"], Splits, "ftlab_pipelines.core.stages.split"),
    Stage(DECLARATIONS["tokenized"], Tokenized, "ftlab_pipelines.core.stages.tokenized"),
    Stage(DECLARATIONS["adapter"], Adapter, "ftlab_pipelines.core.stages.adapter"),
    Stage(DECLARATIONS["evaluation"], Evaluation, "ftlab_pipelines.core.stages.evaluation"),
    Stage(DECLARATIONS["published_adapter"], Release, "ftlab_pipelines.core.stages.release"),
)}


# Generation labs: the same declaration and result, measured as held-out loss, preference and sample replies.
GENERATION_EVALUATION = Stage(DECLARATIONS["evaluation"], Evaluation, "ftlab_pipelines.core.stages.generation_eval")


def stage_for(lab: LabConfig, name: str) -> Stage:
    """The stage `name` as this lab runs it."""
    return GENERATION_EVALUATION if name == "evaluation" and lab.is_generative else STAGES[name]


def downstream(stage: str) -> set[str]:
    """Every stage that reads `stage`'s result, directly or through others."""
    found: set[str] = set()
    for name, declaration in DECLARATIONS.items():
        if stage in declaration.upstream:
            found |= {name} | downstream(name)
    return found
