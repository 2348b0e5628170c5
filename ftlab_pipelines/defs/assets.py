"""The asset factory: one lab config -> its chain of seven assets, prefixed by the lab name.

Assets are thin: each opens an MLflow run and hands its stage to the one stage runner. Code versions come from
the stage declarations (core/stages/pipeline.py), data versions from the stage results' keys.
"""

from collections.abc import Iterator

import dagster as dg
from pydantic import Field

from ftlab_pipelines.core.config.labs import LabConfig
from ftlab_pipelines.core.config.settings import Settings
from ftlab_pipelines.core.stages import (
    CONTRACT_CHECK,
    MERGE_PARITY_CHECK,
    PROMOTION_GATE_CHECK,
)
from ftlab_pipelines.core.stages.pipeline import DECLARATIONS, stage_for
from ftlab_pipelines.core.stages.runner import StageContext, run_stage
from ftlab_pipelines.defs.executor import ray_op_tags
from ftlab_pipelines.defs.metadata import to_dagster
from ftlab_pipelines.defs.resources import FtlabResource

TRAINING_POOL = "ftlab_training"  # dagster.yaml limits it to 1: one training at a time per machine


class RawDatasetConfig(dg.Config):
    """Set by the inbox sensor: materialize the lab on a dropped file instead of (or on top of) its source."""

    inbox_file: str | None = Field(None, description="A data file from $FTLAB_HOME/inbox/<lab>/.")
    inbox_sha256: str | None = Field(None, description="Content hash the sensor saw; the run refuses a changed file.")


def raw_dataset_op_name(lab: str) -> str:
    return dg.AssetKey([lab, "raw_dataset"]).to_python_identifier()


def stage_code_versions(lab: LabConfig, settings: Settings) -> dict[str, str]:
    """Each stage's code_version hashes exactly the lab fields it declares, so an edit marks exactly those stale."""
    return {name: declaration.code_version(lab, settings) for name, declaration in DECLARATIONS.items()}


def materialize_stage(context: dg.AssetExecutionContext, ftlab: FtlabResource, lab: LabConfig, stage: str,
                      upstream: dict, options: dict | None = None) -> Iterator:
    """Run one stage inside its MLflow run; yield its output and the checks it ran."""
    settings = ftlab.settings()
    tags = {"config_hash": context.assets_def.code_versions_by_key[context.asset_key]}  # the asset's code_version
    with ftlab.tracker(settings).asset_run(lab.name, stage, context.run_id, tags) as run:
        done = run_stage(stage_for(lab, stage), lab, upstream, StageContext(settings, run, options or {}))
    yield dg.Output(done.result, metadata=to_dagster(done.report.metadata), data_version=dg.DataVersion(done.result.key))
    for check in done.report.checks:
        yield dg.AssetCheckResult(
            check_name=check.name, passed=check.passed,
            severity=dg.AssetCheckSeverity.ERROR if check.blocks_downstream else dg.AssetCheckSeverity.WARN,
            description=check.description,
            metadata={"report": dg.MetadataValue.md(str(check.report)), "failed_expectations": check.failures},
        )


def build_lab_assets(lab: LabConfig, settings: Settings) -> list[dg.AssetsDefinition]:
    name = lab.name
    versions = stage_code_versions(lab, settings)

    def key(asset: str) -> dg.AssetKey:
        return dg.AssetKey([name, asset])

    def spec(asset: str, description: str, kinds: set[str]):
        return dict(key=key(asset), group_name=name, code_version=versions[asset], description=description,
                    ins={up: dg.AssetIn(key=key(up)) for up in DECLARATIONS[asset].upstream}, kinds=kinds,
                    op_tags=ray_op_tags(lab, asset))

    @dg.asset(**spec("raw_dataset", f"Raw rows of {lab.source.local_path or lab.source.hub_id}, as Parquet.",
                     {"pandas", "parquet"}))
    def raw_dataset(context: dg.AssetExecutionContext, config: RawDatasetConfig, ftlab: FtlabResource):
        options = {"inbox_file": config.inbox_file, "inbox_sha256": config.inbox_sha256}
        yield from materialize_stage(context, ftlab, lab, "raw_dataset", {}, options)

    @dg.asset(**spec("validated_dataset", f"Raw data checked against data_contracts/{lab.contract}.yaml (GX).",
                     {"great_expectations"}),
              check_specs=[dg.AssetCheckSpec(CONTRACT_CHECK, asset=key("validated_dataset"), blocking=True,
                                             description=f"Data contract {lab.contract}: blocks downstream on failure")])
    def validated_dataset(context: dg.AssetExecutionContext, ftlab: FtlabResource, raw_dataset):
        yield from materialize_stage(context, ftlab, lab, "validated_dataset", {"raw_dataset": raw_dataset})

    @dg.asset(**spec("splits", "Deduplicated, stratified train/validation/test; train rebalanced only.",
                     {"pandas", "scikit-learn"}))
    def splits(context: dg.AssetExecutionContext, ftlab: FtlabResource, validated_dataset):
        yield from materialize_stage(context, ftlab, lab, "splits", {"validated_dataset": validated_dataset})

    @dg.asset(**spec("tokenized", "Tokenized Arrow datasets, keyed by data, tokenizer content, template and "
                                  "max_length.", {"huggingface"}))
    def tokenized(context: dg.AssetExecutionContext, ftlab: FtlabResource, splits):
        yield from materialize_stage(context, ftlab, lab, "tokenized", {"splits": splits})

    @dg.asset(**spec("adapter", f"LoRA adapter on {lab.model.name} (checkpoints + resume).", {"pytorch", "peft"}),
              pool=TRAINING_POOL)
    def adapter(context: dg.AssetExecutionContext, ftlab: FtlabResource, tokenized):
        yield from materialize_stage(context, ftlab, lab, "adapter", {"tokenized": tokenized})

    @dg.asset(**spec("evaluation", "Test metrics vs base model and TF-IDF+LR; threshold tuned on validation.",
                     {"scikit-learn"}))
    def evaluation(context: dg.AssetExecutionContext, ftlab: FtlabResource, splits, tokenized, adapter):
        yield from materialize_stage(context, ftlab, lab, "evaluation",
                                     {"splits": splits, "tokenized": tokenized, "adapter": adapter})

    release_checks = [dg.AssetCheckSpec(
        PROMOTION_GATE_CHECK, asset=key("published_adapter"),
        description=f"Challenger beats the MLflow champion on test {lab.eval.primary_metric} by "
                    f"{lab.publish.min_improvement:g}: passes and moves the alias, else warns and keeps the champion")]
    release_checks.append(dg.AssetCheckSpec(MERGE_PARITY_CHECK, asset=key("published_adapter"),
                                            description="The MLflow model (adapter merged into the base) matches "
                                                        "base + adapter's logits within tolerance"))

    @dg.asset(**spec("published_adapter", f"Release directory, MLflow pyfunc model {lab.registry_name}, champion alias.",
                     {"mlflow"}),
              check_specs=release_checks)
    def published_adapter(context: dg.AssetExecutionContext, ftlab: FtlabResource, splits, tokenized, adapter,
                          evaluation):
        yield from materialize_stage(context, ftlab, lab, "published_adapter", {
            "splits": splits, "tokenized": tokenized, "adapter": adapter, "evaluation": evaluation})

    return [raw_dataset, validated_dataset, splits, tokenized, adapter, evaluation, published_adapter]


def lab_job(lab: LabConfig):
    """A preset per lab: materialize its whole chain (checks included)."""
    return dg.define_asset_job(f"{lab.name}_pipeline", selection=dg.AssetSelection.groups(lab.name),
                               description=lab.description or f"Every asset of the {lab.name} lab")
