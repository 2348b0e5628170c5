"""published_adapter: the release directory, local + MLflow registry, the promotion gate, optional Hub push."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from ftlab_pipelines.core import artifacts
from ftlab_pipelines.core.config.labs import ModelConfig
from ftlab_pipelines.core.modeling import merge, models
from ftlab_pipelines.core.release import (
    hub,
    lineage,
    local_registry,
    mlflow_model,
    mlflow_registry,
    release_dir,
)
from ftlab_pipelines.core.runtime import text
from ftlab_pipelines.core.stages import (
    MERGE_PARITY_CHECK,
    PROMOTION_GATE_CHECK,
    CheckOutcome,
    Markdown,
)
from ftlab_pipelines.core.stages.results import Adapter, Evaluation, Release
from ftlab_pipelines.core.stages.runner import Prepared, Report, StageContext, Target
from ftlab_pipelines.core.text import prompts

log = logging.getLogger(__name__)


MERGED_DIR = "merged"
PARITY_FILE = "merge_parity.json"


def parity_outcome(parity: merge.Parity) -> CheckOutcome:
    verdict = "within" if parity.passed else "OVER"
    report = (f"max |logit(merged) - logit(base + adapter)| = {parity.max_abs_diff:.2e} over {parity.tokens} "
              f"tokens of {len(merge.PARITY_MESSAGES)} fixed prompts: {verdict} tolerance {parity.tolerance:.0e}")
    advice = None if parity.passed else report + "; do not ship merged/, use the adapter (or raise the tolerance)"
    return CheckOutcome(MERGE_PARITY_CHECK, parity.passed, advice, Markdown(report), 0 if parity.passed else 1)


def write_merged(lab, model: ModelConfig, adapter_dir: Path, tokenizer, out: Path) -> merge.Parity:
    """The adapter merged into its base, with the serving config beside it: the MLflow model's weights."""
    if lab.is_generative:
        probes = [prompts.render_prompt(lab.prompt, tokenizer, m) for m in merge.PARITY_MESSAGES]
        return merge.merge_adapter(model, adapter_dir, tokenizer, probes, out, lab.publish.parity_tolerance)
    return merge.merge_adapter(model, adapter_dir, tokenizer, text.apply_template(merge.PARITY_MESSAGES, lab.model.template),
                               out, lab.publish.parity_tolerance, labels=lab.labels)


def gate_outcome(verdict: mlflow_registry.GateVerdict) -> CheckOutcome:
    """A warning, never an error: a challenger that loses is still a valid, registered release."""
    return CheckOutcome(PROMOTION_GATE_CHECK, verdict.passed, None if verdict.passed else verdict.reason,
                        Markdown(verdict.reason), 0 if verdict.passed else 1)


def build(lab, upstream: dict, prepared: Prepared, target: Target, ctx: StageContext) -> Release:
    adapter: Adapter = upstream["adapter"]
    evaluation: Evaluation = upstream["evaluation"]
    model = models.resolved(lab.model, ctx.settings.model_cache)
    tokenizer = models.load_tokenizer(model)
    render = upstream["tokenized"].render
    release_dir.write_release_dir(lab, adapter.path, evaluation, tokenizer, target.tmp, render)
    merged = target.tmp / MERGED_DIR if lab.publish.merge else target.scratch / MERGED_DIR
    checked = write_merged(lab, model, adapter.path, tokenizer, merged)
    parity = vars(checked) | {"passed": checked.passed}
    artifacts.write_json(target.tmp / PARITY_FILE, parity)
    mlflow_model.write_serving_config(merged, mlflow_model.serving_config(lab, evaluation, render))
    example = (mlflow_model.generation_example() if lab.is_generative
               else mlflow_model.classifier_example(lab, upstream["splits"]))
    logged = mlflow_model.log_model(lab, merged, example, ctx.run.tracking_uri, ctx.run.run_id)
    return Release(key=target.key, dir=str(target.out), adapter_key=adapter.key, merge_parity=parity,
                   model_id=logged.model_id, model_uri=logged.model_uri)


def report(lab, upstream: dict, result: Release, ctx: StageContext, reused: bool,
           prepared: Prepared) -> Report:
    """Registers and gates at every materialization (the champion may have changed since), reused or not."""
    evaluation: Evaluation = upstream["evaluation"]
    out, run = result.path, ctx.run
    parity = merge.Parity.from_json(out / PARITY_FILE)
    run.set_tags({"data_hash": upstream["adapter"].data_key})
    lineage.log_splits(run, lab, upstream["splits"])
    linked = {f"test_{k}": v for k, v in evaluation.metrics.get("fine_tuned", {}).items()}
    lineage.link_model(run, result.model_id, linked, lab.name, upstream["splits"])
    run.log_params({"publish": lab.publish.model_dump(mode="json"), "registry_name": lab.registry_name})
    metric, value = evaluation.primary_metric, evaluation.primary_value
    if f"test_{metric}" not in linked:
        run.log_metrics({f"test_{metric}": value})
    run.log_metrics({"merge_max_abs_logit_diff": parity.max_abs_diff})
    # The merged weights, and a whole trained model's (the MLflow model holds the same), stay in the release dir.
    for path in sorted(out.iterdir()):
        if path.name not in (MERGED_DIR, models.FULL_MODEL_WEIGHTS):
            run.log_artifact(path, "adapter")
    # Push before registering: a push that fails must leave the champion alias where it was.
    hub_status = hub.push_to_hub(out, lab.publish.hub_repo)
    log.info("Hugging Face Hub: %s", hub_status)
    run.set_tags({"hub": hub_status})
    verdict = mlflow_registry.register_and_gate(run.client, lab.registry_name, result.model_uri,
                                                run.run_id, metric, value, lab.publish.min_improvement,
                                                lab.eval.greater_is_better, release_key=result.key,
                                                model_id=result.model_id)
    log.info("promotion gate: %s", verdict.reason)
    run.set_tags({"model_version": verdict.version, "promoted": verdict.promoted, "promotion_gate": verdict.reason})
    is_champion = verdict.champion_version == verdict.version
    entries = local_registry.update_local_registry(ctx.settings, lab.name, {
        "path": str(out), "mlflow_version": verdict.version, "champion": is_champion,
        f"test_{metric}": value, "threshold": evaluation.threshold,
        "published_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    })
    metadata = {
        "release_dir": out,
        "registered_model": lab.registry_name,
        "mlflow_model": f"models:/{lab.registry_name}/{verdict.version} ({result.model_uri})",
        "version": verdict.version,
        "champion": f"v{verdict.champion_version}" + (" (this release)" if is_champion else ""),
        "promotion_gate": verdict.reason,
        f"test_{metric}": value,
        "previous_champion": verdict.previous_champion_value,
        "hub": hub_status,
        "releases": len(entries),
        "model_card": Markdown((out / "README.md").read_text(encoding="utf-8")),
    }
    metadata["merge_max_abs_logit_diff"] = parity.max_abs_diff
    if lab.publish.merge:
        metadata["merged_model"] = out / MERGED_DIR
    checks = [gate_outcome(verdict), parity_outcome(parity)]
    return Report(metadata, checks)
