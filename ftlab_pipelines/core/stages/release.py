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
    local_registry,
    mlflow_registry,
    release_dir,
)
from ftlab_pipelines.core.stages import CheckOutcome, Markdown
from ftlab_pipelines.core.stages.results import Adapter, Evaluation, Release
from ftlab_pipelines.core.stages.runner import Prepared, Report, StageContext, Target
from ftlab_pipelines.core.text import prompts

log = logging.getLogger(__name__)


MERGE_PARITY_CHECK = "merge_parity"
PROMOTION_GATE_CHECK = "promotion_gate"
MERGED_DIR = "merged"
PARITY_FILE = "merge_parity.json"


def parity_outcome(parity: merge.Parity) -> CheckOutcome:
    verdict = "within" if parity.passed else "OVER"
    report = (f"max |logit(merged) - logit(base + adapter)| = {parity.max_abs_diff:.2e} over {parity.tokens} "
              f"tokens of {len(merge.PARITY_MESSAGES)} fixed prompts: {verdict} tolerance {parity.tolerance:.0e}")
    advice = None if parity.passed else report + "; do not ship merged/, use the adapter (or raise the tolerance)"
    return CheckOutcome(MERGE_PARITY_CHECK, parity.passed, advice, Markdown(report), 0 if parity.passed else 1)


def write_merged(lab, model: ModelConfig, adapter_dir: Path, tokenizer, out: Path) -> merge.Parity:
    probes = [prompts.render_prompt(lab.prompt, tokenizer, m) for m in merge.PARITY_MESSAGES]
    return merge.merge_adapter(model, adapter_dir, tokenizer, probes, out, lab.publish.parity_tolerance)


def gate_outcome(verdict: mlflow_registry.GateVerdict) -> CheckOutcome:
    """A warning, never an error: a challenger that loses is still a valid, registered release."""
    return CheckOutcome(PROMOTION_GATE_CHECK, verdict.passed, None if verdict.passed else verdict.reason,
                        Markdown(verdict.reason), 0 if verdict.passed else 1)


def build(lab, upstream: dict, prepared: Prepared, target: Target, ctx: StageContext) -> Release:
    adapter: Adapter = upstream["adapter"]
    model = models.resolved(lab.model, ctx.settings.model_cache)
    tokenizer = models.load_tokenizer(model)
    release_dir.write_release_dir(lab, adapter.path, upstream["evaluation"], tokenizer, target.tmp)
    parity = None
    if lab.is_generative and lab.publish.merge:
        checked = write_merged(lab, model, adapter.path, tokenizer, target.tmp / MERGED_DIR)
        parity = vars(checked) | {"passed": checked.passed}
        artifacts.write_json(target.tmp / PARITY_FILE, parity)
    return Release(key=target.key, dir=str(target.out), adapter_key=adapter.key, merge_parity=parity)


def report(lab, upstream: dict, result: Release, ctx: StageContext, reused: bool,
           prepared: Prepared) -> Report:
    """Registers and gates at every materialization (the champion may have changed since), reused or not."""
    evaluation: Evaluation = upstream["evaluation"]
    out, run = result.path, ctx.run
    parity = merge.Parity.from_json(out / PARITY_FILE) if result.merge_parity is not None else None
    run.set_tags({"data_hash": upstream["adapter"].data_key})
    run.log_params({"publish": lab.publish.model_dump(mode="json"), "registry_name": lab.registry_name})
    metric, value = evaluation.primary_metric, evaluation.primary_value
    run.log_metrics({f"test_{metric}": value})
    if parity is not None:
        run.log_metrics({"merge_max_abs_logit_diff": parity.max_abs_diff})
    for path in sorted(out.iterdir()):  # the merged weights stay in the release dir, not in every MLflow run
        if path.name != MERGED_DIR:
            run.log_artifact(path, "adapter")
    # Push before registering: a push that fails must leave the champion alias where it was.
    hub_status = hub.push_to_hub(out, lab.publish.hub_repo)
    log.info("Hugging Face Hub: %s", hub_status)
    run.set_tags({"hub": hub_status})
    verdict = mlflow_registry.register_and_gate(run.client, lab.registry_name, run.artifact_uri("adapter"),
                                                run.run_id, metric, value, lab.publish.min_improvement,
                                                lab.eval.greater_is_better, release_key=result.key)
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
        "version": verdict.version,
        "champion": f"v{verdict.champion_version}" + (" (this release)" if is_champion else ""),
        "promotion_gate": verdict.reason,
        f"test_{metric}": value,
        "previous_champion": verdict.previous_champion_value,
        "hub": hub_status,
        "releases": len(entries),
        "model_card": Markdown((out / "README.md").read_text(encoding="utf-8")),
    }
    checks = [gate_outcome(verdict)]
    if parity is not None:
        metadata["merged_model"] = out / MERGED_DIR
        metadata["merge_max_abs_logit_diff"] = parity.max_abs_diff
        checks.append(parity_outcome(parity))
    return Report(metadata, checks)
