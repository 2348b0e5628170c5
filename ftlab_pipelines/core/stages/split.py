"""splits: dedupe, stratified train/validation/test, rebalance train only."""

from __future__ import annotations

import pandas as pd

from ftlab_pipelines.core import artifacts
from ftlab_pipelines.core.config.labs import LabConfig, stable_hash
from ftlab_pipelines.core.data import splits
from ftlab_pipelines.core.evaluation import plots
from ftlab_pipelines.core.stages import Markdown, StageResult
from ftlab_pipelines.core.stages.validate import require_valid
from ftlab_pipelines.core.tracking import AssetRun


def distribution_table(distributions: dict[str, dict[str, int]]) -> str:
    table = pd.DataFrame(distributions).fillna(0).astype(int)
    shares = (table / table.sum()).round(3)
    both = table.astype(str) + " (" + shares.map(lambda s: f"{s:.1%}") + ")"
    both.loc["total"] = table.sum().astype(str)
    return both.to_markdown()


def split_inputs(lab: LabConfig) -> dict:
    """The config the splits stage reads: its cache key and code_version."""
    if lab.is_generative:
        return {"split": lab.split.model_dump(mode="json"), "group": lab.prompt.user_column}
    return {"split": lab.split.model_dump(mode="json"), "text": lab.source.text_column,
            "label": lab.source.label_column, **({"render": lab.render.columns} if lab.render else {})}


def build_splits(lab: LabConfig, validated: dict, run: AssetRun) -> StageResult:
    require_valid(validated)
    key = stable_hash({"data": validated["data_hash"], **split_inputs(lab)})
    frame = pd.read_parquet(validated["path"])
    if lab.is_generative:
        result = splits.group_split(frame, lab.prompt.user_column, lab.split)
    else:
        test = pd.read_parquet(validated["test_path"]) if validated.get("test_path") else None
        inputs = lab.render.columns if lab.render else lab.source.text_column
        try:
            result = splits.make_splits(frame, inputs, lab.source.label_column, lab.split, test=test)
        except splits.SplitError as exc:
            raise splits.SplitError(f"{validated['origin']}: {exc}") from None
    out = artifacts.stage_dir(lab.name, "splits", key)
    with artifacts.atomic_dir(out) as tmp:
        for name, part in result.frames.items():
            part.to_parquet(tmp / f"{name}.parquet", index=False)
        plots.class_distribution_png(result.distributions, tmp / "class_distribution.png")
        artifacts.write_json(tmp / "manifest.json", {"distributions": result.distributions})
    table = distribution_table(result.distributions)
    run.set_tags({"data_hash": key})
    run.log_params({"split": lab.split.model_dump(mode="json")})
    run.log_metrics({"duplicates_removed": result.duplicates_removed,
                     "test_overlap_removed": result.test_overlap_removed,
                     "conflicting_duplicates": result.conflicting_duplicates,
                     **{f"rows_{n}": len(f) for n, f in result.frames.items()}})
    run.log_artifact(out / "class_distribution.png")
    run.log_text(table, "class_distribution.md")
    manifest = {
        "key": key,
        "paths": {name: str(out / f"{name}.parquet") for name in result.frames},
        "rows": {name: len(f) for name, f in result.frames.items()},
        "distributions": result.distributions,
        "duplicates_removed": result.duplicates_removed,
        "test_overlap_removed": result.test_overlap_removed,
    }
    metadata = {
        "rows": manifest["rows"],
        "duplicates_removed": result.duplicates_removed,
        "test_overlap_removed": result.test_overlap_removed,
        "conflicting_duplicates": result.conflicting_duplicates,
        "balance": (f"split by {lab.prompt.user_column} (no prompt in two splits)" if lab.is_generative else
                    f"{lab.split.balance} (train only; validation and test keep the natural distribution)"),
        "class_distribution": Markdown(table),
        "class_distribution_plot": Markdown(plots.markdown_image(out / "class_distribution.png", "class distribution")),
        "path": out,
    }
    return StageResult(manifest, metadata, data_version=key)


def load_split_frames(splits_manifest: dict) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(path) for name, path in splits_manifest["paths"].items()}
