"""raw_dataset: read the source (or an inbox file) into Parquet; the key includes the rows' content hash."""

from __future__ import annotations

from pathlib import Path

from ftlab_pipelines.core import progress
from ftlab_pipelines.core.config.hashing import stable_hash
from ftlab_pipelines.core.data import inbox, sources
from ftlab_pipelines.core.stages import Markdown
from ftlab_pipelines.core.stages.results import RawDataset
from ftlab_pipelines.core.stages.runner import Prepared, Report, StageContext, Target


def prepare(lab, upstream: dict, ctx: StageContext) -> Prepared:
    """Load the rows: their content hash is part of the key. Options: `inbox_file` and `inbox_sha256` (the sensor's)."""
    inbox_file, inbox_sha256 = ctx.options.get("inbox_file"), ctx.options.get("inbox_sha256")
    new_data = Path(inbox_file) if inbox_file else None
    if new_data is not None and inbox_sha256:
        inbox.verify(new_data, inbox_sha256)
    data_dir = ctx.settings.data_dir
    with progress.step(f"loading {new_data or sources.describe_source(lab.source, data_dir)}"):
        frame, origin = sources.load_raw(lab.source, data_dir, new_data, lab.inbox.mode)
    test, test_origin = None, None
    if lab.source.has_test_source:
        test, test_origin = sources.load_test(lab.source, data_dir, list(frame.columns), origin)
    data_hash = sources.content_hash(frame)
    if test is not None:
        data_hash = stable_hash({"data": data_hash, "test": sources.content_hash(test)})
    return Prepared({"data_hash": data_hash}, (frame, origin, test, test_origin))


def build(lab, upstream: dict, prepared: Prepared, target: Target, ctx: StageContext) -> RawDataset:
    frame, origin, test, test_origin = prepared.loaded
    frame.to_parquet(target.tmp / "data.parquet", index=False)
    if test is not None:
        test.to_parquet(target.tmp / "test.parquet", index=False)
    return RawDataset(key=target.key, dir=str(target.out), data_hash=prepared.facts["data_hash"], origin=origin,
                      rows=len(frame), columns=list(map(str, frame.columns)), test_origin=test_origin,
                      test_rows=None if test is None else len(test))


def _clip(value):
    # One megabyte text must not be copied into every event log and UI page.
    return value[:200] + "…" if isinstance(value, str) and len(value) > 200 else value


def report(lab, upstream: dict, result: RawDataset, ctx: StageContext, reused: bool,
           prepared: Prepared) -> Report:
    frame, _, test, _ = prepared.loaded  # the rows prepare loaded for the content hash: the same as stored
    counts = sources.label_counts(frame, lab.source.label_column)
    run = ctx.run
    inbox_file = ctx.options.get("inbox_file")
    run.set_tags({"data_hash": result.data_hash, **({"inbox_file": inbox_file} if inbox_file else {})})
    run.log_params({"source": lab.source.model_dump(mode="json")})
    run.log_metrics({"rows": result.rows, **{f"count_{k}": v for k, v in counts.items()}})
    metadata = {
        "origin": result.origin,
        "rows": result.rows,
        "columns": ", ".join(result.columns),
        "label_counts": counts,
        "data_hash": result.data_hash,
        "preview": Markdown(frame.head(10).map(_clip).to_markdown(index=False)),
    }
    if test is not None:
        metadata.update(test_source=result.test_origin, test_rows=result.test_rows,
                        test_label_counts=sources.label_counts(test, lab.source.label_column))
    return Report(metadata)
