"""One runner for every stage: key from the declaration, reuse when complete, atomic write, MLflow, metadata.

    key = declaration.cache_key(lab, upstream keys, run-time facts)
    reuse  <- artifacts/<lab>/<stage>/<key>/result.json exists
    else   -> build into a temp dir, write result.json last, rename into place, drop the stage's scratch dir
    then   -> report: MLflow params/metrics/artifacts and the Dagster metadata and checks (every run, reused or not)
"""

from __future__ import annotations

import importlib
import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftlab_pipelines.core import artifacts
from ftlab_pipelines.core.config.labs import LabConfig
from ftlab_pipelines.core.config.settings import Settings
from ftlab_pipelines.core.stages import CheckOutcome
from ftlab_pipelines.core.stages.declaration import LabView, StageDeclaration
from ftlab_pipelines.core.stages.results import RESULT_FILE, StageResult
from ftlab_pipelines.core.tracking import AssetRun

log = logging.getLogger(__name__)


@dataclass
class StageContext:
    """What a stage may use besides the lab and its upstream results."""

    settings: Settings
    run: AssetRun  # the stage's MLflow run
    options: Mapping[str, Any] = field(default_factory=dict)  # run-time options, e.g. the inbox file of a run


@dataclass
class Prepared:
    """Run-time facts that enter the cache key (content hashes, a tokenizer fingerprint), and what was loaded to
    find them, so that neither build nor report loads it again."""

    facts: dict[str, object] = field(default_factory=dict)
    loaded: Any = None


@dataclass(frozen=True)
class Target:
    """Where a build writes: `tmp` becomes `out` on success; `scratch` survives a failed build (checkpoints)."""

    key: str
    out: Path
    tmp: Path
    scratch: Path


@dataclass
class Report:
    """What Dagster shows for a materialization."""

    metadata: dict = field(default_factory=dict)
    checks: list[CheckOutcome] = field(default_factory=list)


@dataclass(frozen=True)
class Stage:
    """A stage's declaration, result type, and the module that implements it, imported on first use: loading the
    Dagster definitions (every UI process, every step process) does not import torch, sklearn or GX."""

    declaration: StageDeclaration
    result_type: type[StageResult]
    module: str  # defines build(), report() and, when run-time facts enter the key, prepare()

    @property
    def name(self) -> str:
        return self.declaration.name

    @property
    def build(self) -> Callable[..., StageResult]:
        """(lab, upstream, prepared, target, ctx) -> result"""
        return importlib.import_module(self.module).build

    @property
    def report(self) -> Callable[..., Report]:
        """(lab, upstream, result, ctx, reused, prepared) -> report"""
        return importlib.import_module(self.module).report

    @property
    def prepare(self) -> Callable[..., Prepared] | None:
        """(lab, upstream, ctx) -> prepared"""
        return getattr(importlib.import_module(self.module), "prepare", None)


@dataclass
class StageRun:
    result: StageResult
    report: Report
    reused: bool


def scratch_dir(settings: Settings, lab: str, stage: str, key: str) -> Path:
    return settings.scratch_dir / lab / stage / key


def run_stage(stage: Stage, lab: LabConfig, upstream: Mapping[str, StageResult], ctx: StageContext) -> StageRun:
    view: LabView = stage.declaration.view(lab)
    inputs = {name: upstream[name] for name in stage.declaration.upstream}
    prepared = stage.prepare(view, inputs, ctx) if stage.prepare else Prepared()
    key = stage.declaration.cache_key(lab, ctx.settings, {n: r.key for n, r in inputs.items()}, prepared.facts)
    out = artifacts.stage_dir(ctx.settings, lab.name, stage.name, key)
    reused = (out / RESULT_FILE).is_file()
    if reused:
        log.info("%s %s: already built from the same inputs, reusing %s", lab.name, stage.name, out)
        result = stage.result_type.read(out)
    else:
        scratch = scratch_dir(ctx.settings, lab.name, stage.name, key)
        with artifacts.atomic_dir(out) as tmp:
            result = stage.build(view, inputs, prepared, Target(key, out, tmp, scratch), ctx)
            artifacts.write_json(tmp / RESULT_FILE, result.to_json())
        shutil.rmtree(scratch, ignore_errors=True)  # the result is in place: scratch is no longer the only copy
    ctx.run.set_tags({"stage_key": key, "data_hash": key, "reused": reused,
                      **{f"{name}_key": r.key for name, r in inputs.items()}})
    report = stage.report(view, inputs, result, ctx, reused, prepared)
    report.metadata = {**report.metadata, "key": key, "reused": reused, "path": out}
    return StageRun(result, report, reused)
