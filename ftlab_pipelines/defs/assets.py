"""The asset factory: one lab config -> its chain of seven assets, prefixed by the lab name.

Assets are thin: open an MLflow run, call the plain-Python stage, hand back manifest + metadata.
"""


import functools
from collections.abc import Callable, Iterator

import dagster as dg
from pydantic import Field

from ftlab_pipelines.core.config.labs import LabConfig, stable_hash
from ftlab_pipelines.core.stages import StageResult
from ftlab_pipelines.core.stages.adapter import build_adapter
from ftlab_pipelines.core.stages.evaluation import evaluate
from ftlab_pipelines.core.stages.raw import build_raw_dataset
from ftlab_pipelines.core.stages.release import (
    MERGE_PARITY_CHECK,
    PROMOTION_GATE_CHECK,
    publish_adapter,
)
from ftlab_pipelines.core.stages.split import build_splits, split_inputs
from ftlab_pipelines.core.stages.tokenized import build_tokenized, tokenized_inputs
from ftlab_pipelines.core.stages.validate import (
    CONTRACT_CHECK,
    contract_path,
    validate_dataset,
)
from ftlab_pipelines.defs.metadata import to_dagster
from ftlab_pipelines.defs.resources import MlflowTrackerResource

TRAINING_POOL = "ftlab_training"  # dagster.yaml limits it to 1: one training at a time per machine


class RawDatasetConfig(dg.Config):
    """Set by the inbox sensor: materialize the lab on a dropped file instead of (or on top of) its source."""

    inbox_file: str | None = Field(None, description="A data file from $FTLAB_HOME/inbox/<lab>/.")
    inbox_sha256: str | None = Field(None, description="Content hash the sensor saw; the run refuses a changed file.")


def raw_dataset_op_name(lab: str) -> str:
    return dg.AssetKey([lab, "raw_dataset"]).to_python_identifier()


def stage_code_versions(lab: LabConfig) -> dict[str, str]:
    """Each stage's code_version hashes only the config it reads, so an edit marks exactly those assets stale."""
    contract = contract_path(lab)
    contract_text = contract.read_text(encoding="utf-8") if contract.is_file() else ""
    return {
        "raw_dataset": lab.section_hash("source"),
        "validated_dataset": stable_hash({"contract": lab.contract, "text": contract_text}),
        "splits": stable_hash(split_inputs(lab)),
        "tokenized": stable_hash(tokenized_inputs(lab)),
        "adapter": lab.section_hash("model", "peft", "train"),
        "evaluation": lab.section_hash("eval", "labels", "positive_label", *(["prompt"] if lab.is_generative else [])),
        "published_adapter": lab.section_hash("publish"),
    }


def run_stage(context, tracker: MlflowTrackerResource, lab: LabConfig, asset: str, code_version: str,
              stage: Callable[..., StageResult], *upstream) -> Iterator:
    """Run one stage inside its MLflow run; yield its output and, if it ran one, its check result."""
    with tracker.get_tracker().asset_run(lab.name, asset, context.run_id, {"config_hash": code_version}) as run:
        result = stage(lab, *upstream, run)
    yield dg.Output(result.manifest, metadata=to_dagster(result.metadata),
                    data_version=dg.DataVersion(result.data_version) if result.data_version else None)
    for check in result.checks:
        yield dg.AssetCheckResult(
            check_name=check.name, passed=check.passed,
            severity=dg.AssetCheckSeverity.ERROR if check.blocks_downstream else dg.AssetCheckSeverity.WARN,
            description=check.description,
            metadata={"report": dg.MetadataValue.md(str(check.report)), "failed_expectations": check.failures},
        )


def build_lab_assets(lab: LabConfig) -> list[dg.AssetsDefinition]:
    name = lab.name
    versions = stage_code_versions(lab)

    def key(asset: str) -> dg.AssetKey:
        return dg.AssetKey([name, asset])

    def spec(asset: str, description: str, deps: dict[str, str] | None = None, kinds: set[str] | None = None):
        return dict(key=key(asset), group_name=name, code_version=versions[asset], description=description,
                    ins={arg: dg.AssetIn(key=key(up)) for arg, up in (deps or {}).items()}, kinds=kinds)

    @dg.asset(**spec("raw_dataset", f"Raw rows of {lab.source.local_path or lab.source.hub_id}, as Parquet.",
                     kinds={"pandas", "parquet"}))
    def raw_dataset(context: dg.AssetExecutionContext, config: RawDatasetConfig, mlflow_tracker: MlflowTrackerResource):
        stage = functools.partial(build_raw_dataset, inbox_file=config.inbox_file, inbox_sha256=config.inbox_sha256)
        yield from run_stage(context, mlflow_tracker, lab, "raw_dataset", versions["raw_dataset"], stage)

    @dg.asset(**spec("validated_dataset", f"Raw data checked against data_contracts/{lab.contract}.yaml (GX).",
                     {"raw": "raw_dataset"}, {"great_expectations"}),
              check_specs=[dg.AssetCheckSpec(CONTRACT_CHECK, asset=key("validated_dataset"), blocking=True,
                                             description=f"Data contract {lab.contract}: blocks downstream on failure")])
    def validated_dataset(context: dg.AssetExecutionContext, mlflow_tracker: MlflowTrackerResource, raw: dict):
        yield from run_stage(context, mlflow_tracker, lab, "validated_dataset", versions["validated_dataset"],
                             validate_dataset, raw)

    @dg.asset(**spec("splits", "Deduplicated, stratified train/validation/test; train rebalanced only.",
                     {"validated": "validated_dataset"}, {"pandas", "scikit-learn"}))
    def splits(context: dg.AssetExecutionContext, mlflow_tracker: MlflowTrackerResource, validated: dict):
        yield from run_stage(context, mlflow_tracker, lab, "splits", versions["splits"], build_splits, validated)

    @dg.asset(**spec("tokenized", "Tokenized Arrow datasets, cached by (data, tokenizer, template, max_length).",
                     {"split_sets": "splits"}, {"huggingface"}))
    def tokenized(context: dg.AssetExecutionContext, mlflow_tracker: MlflowTrackerResource, split_sets: dict):
        yield from run_stage(context, mlflow_tracker, lab, "tokenized", versions["tokenized"], build_tokenized, split_sets)

    @dg.asset(**spec("adapter", f"LoRA adapter on {lab.model.name} (checkpoints + resume).",
                     {"tokens": "tokenized"}, {"pytorch", "peft"}), pool=TRAINING_POOL)
    def adapter(context: dg.AssetExecutionContext, mlflow_tracker: MlflowTrackerResource, tokens: dict):
        yield from run_stage(context, mlflow_tracker, lab, "adapter", versions["adapter"], build_adapter, tokens)

    @dg.asset(**spec("evaluation", "Test metrics vs base model and TF-IDF+LR; threshold tuned on validation.",
                     {"split_sets": "splits", "tokens": "tokenized", "trained": "adapter"}, {"scikit-learn"}))
    def evaluation(context: dg.AssetExecutionContext, mlflow_tracker: MlflowTrackerResource, split_sets: dict,
                   tokens: dict, trained: dict):
        yield from run_stage(context, mlflow_tracker, lab, "evaluation", versions["evaluation"], evaluate,
                         split_sets, tokens, trained)

    release_checks = [dg.AssetCheckSpec(
        PROMOTION_GATE_CHECK, asset=key("published_adapter"),
        description=f"Challenger beats the MLflow champion on test {lab.eval.primary_metric} by "
                    f"{lab.publish.min_improvement:g}: passes and moves the alias, else warns and keeps the champion")]
    if lab.is_generative and lab.publish.merge:
        release_checks.append(dg.AssetCheckSpec(MERGE_PARITY_CHECK, asset=key("published_adapter"),
                                                description="Merged model logits match base + adapter within tolerance"))

    @dg.asset(**spec("published_adapter", f"Release directory, MLflow model {lab.registry_name}, champion alias.",
                     {"trained": "adapter", "report": "evaluation"}, {"mlflow"}),
              check_specs=release_checks)
    def published_adapter(context: dg.AssetExecutionContext, mlflow_tracker: MlflowTrackerResource, trained: dict,
                          report: dict):
        yield from run_stage(context, mlflow_tracker, lab, "published_adapter", versions["published_adapter"],
                         publish_adapter, trained, report)

    return [raw_dataset, validated_dataset, splits, tokenized, adapter, evaluation, published_adapter]


def lab_job(lab: LabConfig):
    """A preset per lab: materialize its whole chain (checks included)."""
    return dg.define_asset_job(f"{lab.name}_pipeline", selection=dg.AssetSelection.groups(lab.name),
                               description=lab.description or f"Every asset of the {lab.name} lab")

