"""published_adapter: the release directory, local + MLflow registry, champion alias, optional Hub push."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from ftlab_pipelines.core import artifacts, merge, models, prompts, publish
from ftlab_pipelines.core.labs import LabConfig, stable_hash
from ftlab_pipelines.core.stages import CheckOutcome, Markdown, StageResult
from ftlab_pipelines.core.tracking import AssetRun

log = logging.getLogger(__name__)


MERGE_PARITY_CHECK = "merge_parity"
MERGED_DIR = "merged"


def parity_outcome(parity: merge.Parity) -> CheckOutcome:
    verdict = "within" if parity.passed else "OVER"
    report = (f"max |logit(merged) - logit(base + adapter)| = {parity.max_abs_diff:.2e} over {parity.tokens} "
              f"tokens of {len(merge.PARITY_MESSAGES)} fixed prompts: {verdict} tolerance {parity.tolerance:.0e}")
    advice = None if parity.passed else report + "; do not ship merged/, use the adapter (or raise the tolerance)"
    return CheckOutcome(MERGE_PARITY_CHECK, parity.passed, advice, Markdown(report), 0 if parity.passed else 1)


def write_merged(lab: LabConfig, adapter_dir: Path, tokenizer, out: Path) -> merge.Parity:
    probes = [prompts.render_prompt(lab.prompt, tokenizer, m) for m in merge.PARITY_MESSAGES]
    return merge.merge_adapter(lab.model, adapter_dir, tokenizer, probes, out, lab.publish.parity_tolerance)


def publish_adapter(lab: LabConfig, adapter: dict, evaluation: dict, run: AssetRun) -> StageResult:
    key = stable_hash({"adapter": adapter["key"], "evaluation": evaluation["key"],
                       "merge": lab.publish.merge, "tolerance": lab.publish.parity_tolerance})
    out = artifacts.stage_dir(lab.name, "published_adapter", key)
    parity = None
    tokenizer = models.load_tokenizer(lab.model)
    with artifacts.atomic_dir(out) as tmp:
        publish.write_release_dir(lab, Path(adapter["path"]), evaluation, tokenizer, tmp)
        if lab.is_generative and lab.publish.merge:
            parity = write_merged(lab, Path(adapter["path"]), tokenizer, tmp / MERGED_DIR)
            artifacts.write_json(tmp / "merge_parity.json", vars(parity) | {"passed": parity.passed})
    run.set_tags({"adapter_key": adapter["key"], "data_hash": adapter["tokenized_key"]})
    run.log_params({"publish": lab.publish.model_dump(mode="json"), "registry_name": lab.registry_name})
    metric, value = evaluation["primary_metric"], evaluation["primary_value"]
    run.log_metrics({f"test_{metric}": value})
    if parity is not None:
        run.log_metrics({"merge_max_abs_logit_diff": parity.max_abs_diff})
    for path in sorted(out.iterdir()):  # the merged weights stay in the release dir, not in every MLflow run
        if path.name != MERGED_DIR:
            run.log_artifact(path, "adapter")
    registered = publish.register_mlflow(run.client, lab.registry_name, run.artifact_uri("adapter"), run.run_id,
                                         metric, value, lab.publish.min_improvement, lab.eval.greater_is_better)
    run.set_tags({"model_version": registered["version"], "promoted": registered["promoted"]})
    hub = publish.push_to_hub(out, lab.publish.hub_repo)
    log.info("Hugging Face Hub: %s", hub)
    run.set_tags({"hub": hub})
    entries = publish.update_local_registry(lab.name, {
        "path": str(out), "mlflow_version": registered["version"], "champion": registered["promoted"],
        f"test_{metric}": value, "threshold": evaluation["threshold"],
        "published_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    })
    manifest = {"key": key, "path": str(out), **registered, "hub": hub}
    metadata = {
        "release_dir": out,
        "registered_model": lab.registry_name,
        "version": registered["version"],
        "champion": f"v{registered['champion_version']}" + (" (this release)" if registered["promoted"] else ""),
        f"test_{metric}": value,
        "previous_champion": registered["previous_champion_value"],
        "hub": hub,
        "releases": len(entries),
        "model_card": Markdown((out / "README.md").read_text(encoding="utf-8")),
    }
    if parity is not None:
        manifest["merged_dir"] = str(out / MERGED_DIR)
        metadata["merged_model"] = out / MERGED_DIR
        metadata["merge_max_abs_logit_diff"] = parity.max_abs_diff
    return StageResult(manifest, metadata, data_version=key, check=parity_outcome(parity) if parity else None)
