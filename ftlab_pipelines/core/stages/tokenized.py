"""tokenized: prompt rendering + tokenization into Arrow on disk, cached by content key."""

from __future__ import annotations

import numpy as np

from ftlab_pipelines.core import artifacts, models, plots, tokenize
from ftlab_pipelines.core.labs import LabConfig
from ftlab_pipelines.core.stages import Markdown, StageResult
from ftlab_pipelines.core.stages.split import load_split_frames
from ftlab_pipelines.core.tracking import AssetRun


def build_tokenized(lab: LabConfig, splits_manifest: dict, run: AssetRun) -> StageResult:
    tokenizer = models.load_tokenizer(lab.model)
    key = tokenize.cache_key(splits_manifest["key"], tokenizer, lab.model.template, lab.model.max_length, lab.labels)
    out = artifacts.stage_dir(lab.name, "tokenized", key)
    reused = artifacts.is_complete(out)
    if not reused:
        with artifacts.atomic_dir(out) as tmp:
            stats = tokenize.tokenize_splits(
                load_split_frames(splits_manifest), tokenizer,
                text_column=lab.source.text_column, label_column=lab.source.label_column, labels=lab.labels,
                template=lab.model.template, max_length=lab.model.max_length, out_dir=tmp / "dataset",
            )
            lengths = np.asarray(tokenize.load_tokenized(tmp / "dataset")["train"]["length"])
            plots.token_lengths_png(lengths, lab.model.max_length, tmp / "token_lengths.png")
            artifacts.write_json(tmp / "manifest.json", {"stats": stats})
    stats = artifacts.read_json(out / "manifest.json")["stats"]
    run.set_tags({"data_hash": key})
    run.log_params({"model.name": lab.model.name, "model.template": lab.model.template,
                    "model.max_length": lab.model.max_length, "tokenizer": tokenize.tokenizer_fingerprint(tokenizer)})
    run.log_metrics({f"{split}_{k}": v for split, s in stats.items() for k, v in s.items()})
    run.log_artifact(out / "token_lengths.png")
    manifest = {"key": key, "path": str(out / "dataset"), "stats": stats, "splits_key": splits_manifest["key"]}
    metadata = {
        "cache_key": key,
        "reused_cache": reused,
        "stats": stats,
        "token_lengths": Markdown(plots.markdown_image(out / "token_lengths.png", "token lengths")),
        "path": out,
    }
    return StageResult(manifest, metadata, data_version=key)
