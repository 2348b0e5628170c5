"""splits: dedupe, stratified train/validation/test, rebalance train only."""

from __future__ import annotations

import pandas as pd

from ftlab_pipelines.core.data import splits
from ftlab_pipelines.core.evaluation import plots
from ftlab_pipelines.core.stages import Markdown
from ftlab_pipelines.core.stages.results import Splits, ValidatedDataset
from ftlab_pipelines.core.stages.runner import Prepared, Report, StageContext, Target
from ftlab_pipelines.core.stages.validate import require_valid


def distribution_table(distributions: dict[str, dict[str, int]]) -> str:
    table = pd.DataFrame(distributions).fillna(0).astype(int)
    shares = (table / table.sum()).round(3)
    both = table.astype(str) + " (" + shares.map(lambda s: f"{s:.1%}") + ")"
    both.loc["total"] = table.sum().astype(str)
    return both.to_markdown()


def _split(lab, validated: ValidatedDataset) -> splits.SplitResult:
    frame = pd.read_parquet(validated.data_path)
    if lab.is_generative:
        return splits.group_split(frame, lab.prompt.user_column, lab.split)
    test = pd.read_parquet(validated.test_path) if validated.test_path else None
    inputs = lab.render.columns if lab.render else lab.source.text_column
    try:
        return splits.make_splits(frame, inputs, lab.source.label_column, lab.split, test=test)
    except splits.SplitError as exc:
        raise splits.SplitError(f"{validated.origin}: {exc}") from None


def build(lab, upstream: dict, prepared: Prepared, target: Target, ctx: StageContext) -> Splits:
    validated: ValidatedDataset = upstream["validated_dataset"]
    require_valid(validated)
    result = _split(lab, validated)
    for name, part in result.frames.items():
        part.to_parquet(target.tmp / f"{name}.parquet", index=False)
    plots.class_distribution_png(result.distributions, target.tmp / "class_distribution.png")
    return Splits(key=target.key, dir=str(target.out), rows={n: len(f) for n, f in result.frames.items()},
                  distributions=result.distributions, duplicates_removed=result.duplicates_removed,
                  test_overlap_removed=result.test_overlap_removed,
                  conflicting_duplicates=result.conflicting_duplicates)


def report(lab, upstream: dict, result: Splits, ctx: StageContext, reused: bool,
           prepared: Prepared) -> Report:
    table = distribution_table(result.distributions)
    run = ctx.run
    run.log_params({"split": lab.split.model_dump(mode="json")})
    run.log_metrics({"duplicates_removed": result.duplicates_removed,
                     "test_overlap_removed": result.test_overlap_removed,
                     "conflicting_duplicates": result.conflicting_duplicates,
                     **{f"rows_{n}": rows for n, rows in result.rows.items()}})
    run.log_artifact(result.path / "class_distribution.png")
    run.log_text(table, "class_distribution.md")
    metadata = {
        "rows": result.rows,
        "duplicates_removed": result.duplicates_removed,
        "test_overlap_removed": result.test_overlap_removed,
        "conflicting_duplicates": result.conflicting_duplicates,
        "balance": (f"split by {lab.prompt.user_column} (no prompt in two splits)" if lab.is_generative else
                    f"{lab.split.balance} (train only; validation and test keep the natural distribution)"),
        "class_distribution": Markdown(table),
        "class_distribution_plot": Markdown(plots.markdown_image(result.path / "class_distribution.png",
                                                                 "class distribution")),
    }
    return Report(metadata)
