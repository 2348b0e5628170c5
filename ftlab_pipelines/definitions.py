"""Dagster entry point: one asset chain, contract check and job preset per `labs/*.yaml`."""

from __future__ import annotations

import logging

import dagster as dg

from ftlab_pipelines.core.labs import load_labs
from ftlab_pipelines.defs.assets import build_lab_assets, lab_job
from ftlab_pipelines.defs.resources import default_resources

logging.getLogger("great_expectations").setLevel(logging.WARNING)


def build_definitions(labs_dir: str | None = None) -> dg.Definitions:
    labs = load_labs(labs_dir)
    assets = [asset for lab in labs.values() for asset in build_lab_assets(lab)]
    return dg.Definitions(assets=assets, jobs=[lab_job(lab) for lab in labs.values()],
                          resources=default_resources())


defs = build_definitions()
