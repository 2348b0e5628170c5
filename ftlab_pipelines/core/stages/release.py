"""published_adapter: the release directory, local + MLflow registry, champion alias, optional Hub push."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from ftlab_pipelines.core import artifacts, models, publish
from ftlab_pipelines.core.labs import LabConfig, stable_hash
from ftlab_pipelines.core.stages import Markdown, StageResult
from ftlab_pipelines.core.tracking import AssetRun

log = logging.getLogger(__name__)


def publish_adapter(lab: LabConfig, adapter: dict, evaluation: dict, run: AssetRun) -> StageResult:
    key = stable_hash({"adapter": adapter["key"], "evaluation": evaluation["key"]})
    out = artifacts.stage_dir(lab.name, "published_adapter", key)
    with artifacts.atomic_dir(out) as tmp:
        publish.write_release_dir(lab, Path(adapter["path"]), evaluation,
                                  models.load_tokenizer(lab.model), tmp)
    run.set_tags({"adapter_key": adapter["key"], "data_hash": adapter["tokenized_key"]})
    run.log_params({"publish": lab.publish.model_dump(mode="json"), "registry_name": lab.registry_name})
    metric, value = evaluation["primary_metric"], evaluation["primary_value"]
    run.log_metrics({f"test_{metric}": value})
    run.log_artifact(out, "adapter")
    registered = publish.register_mlflow(run.client, lab.registry_name, run.artifact_uri("adapter"), run.run_id,
                                         metric, value, lab.publish.min_improvement)
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
    return StageResult(manifest, metadata, data_version=key)
