"""raw_dataset: read the source into Parquet under the artifact store, keyed by content hash."""

from __future__ import annotations

from pathlib import Path

from ftlab_pipelines.core import artifacts, progress
from ftlab_pipelines.core.config.labs import LabConfig, stable_hash
from ftlab_pipelines.core.data import inbox, sources
from ftlab_pipelines.core.stages import Markdown, StageResult
from ftlab_pipelines.core.tracking import AssetRun


def build_raw_dataset(lab: LabConfig, run: AssetRun, inbox_file: str | None = None,
                      inbox_sha256: str | None = None) -> StageResult:
    """Read the lab's source; with `inbox_file` (from the new-data sensor) that file's rows instead or as well."""
    new_data = Path(inbox_file) if inbox_file else None
    if new_data is not None and inbox_sha256:
        inbox.verify(new_data, inbox_sha256)
    with progress.step(f"loading {new_data or sources.describe_source(lab.source)}"):
        frame, origin = sources.load_raw(lab.source, new_data, lab.inbox.mode)
    test, test_origin = None, None
    if lab.source.has_test_source:
        test, test_origin = sources.load_test(lab.source, list(frame.columns), origin)
    data_hash = sources.content_hash(frame)
    if test is not None:
        data_hash = stable_hash({"data": data_hash, "test": sources.content_hash(test)})
    out = artifacts.stage_dir(lab.name, "raw_dataset", data_hash)
    if not artifacts.is_complete(out):
        with artifacts.atomic_dir(out) as tmp:
            frame.to_parquet(tmp / "data.parquet", index=False)
            if test is not None:
                test.to_parquet(tmp / "test.parquet", index=False)
            artifacts.write_json(tmp / "manifest.json", {"origin": origin, "data_hash": data_hash,
                                                         "test_origin": test_origin})
    counts = sources.label_counts(frame, lab.source.label_column)
    manifest = {
        "path": str(out / "data.parquet"),
        "origin": origin,
        "data_hash": data_hash,
        "rows": len(frame),
        "columns": list(map(str, frame.columns)),
    }
    if test is not None:
        manifest.update(test_path=str(out / "test.parquet"), test_origin=test_origin, test_rows=len(test))
    run.set_tags({"data_hash": data_hash, **({"inbox_file": inbox_file} if inbox_file else {})})
    run.log_params({"source": lab.source.model_dump(mode="json")})
    run.log_metrics({"rows": len(frame), **{f"count_{k}": v for k, v in counts.items()}})
    metadata = {
        "origin": origin,
        "rows": len(frame),
        "columns": ", ".join(manifest["columns"]),
        "label_counts": counts,
        "data_hash": data_hash,
        # Cells clipped: one megabyte text must not be copied into every event log and UI page.
        "preview": Markdown(frame.head(10).map(lambda v: v[:200] + "…" if isinstance(v, str) and len(v) > 200 else v)
                            .to_markdown(index=False)),
        **({"test_source": test_origin, "test_rows": len(test),
            "test_label_counts": sources.label_counts(test, lab.source.label_column)} if test is not None else {}),
        "path": out,
    }
    return StageResult(manifest, metadata, data_version=data_hash)
