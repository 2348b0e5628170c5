"""Dagster entry point: per `labs/*.yaml` an asset chain with its checks, a job preset, a retraining schedule
(when the lab has one) and an inbox sensor. With FTLAB_RAY_ADDRESS (the Ray profile) every run goes to that Ray cluster."""

from __future__ import annotations

import logging

import dagster as dg

from ftlab_pipelines.core.config.loading import load_labs
from ftlab_pipelines.core.config.settings import Settings
from ftlab_pipelines.defs.assets import build_lab_assets, lab_job
from ftlab_pipelines.defs.automation import inbox_sensor, retrain_schedule
from ftlab_pipelines.defs.executor import executor
from ftlab_pipelines.defs.resources import default_resources

logging.getLogger("great_expectations").setLevel(logging.WARNING)


def build_definitions(labs_dir: str | None = None) -> dg.Definitions:
    settings = Settings.from_env()  # the edge: code versions hash the contract files found here
    labs = load_labs(labs_dir, settings)
    assets = [asset for lab in labs.values() for asset in build_lab_assets(lab, settings)]
    jobs = {name: lab_job(lab) for name, lab in labs.items()}
    schedules = [s for name, lab in labs.items() if (s := retrain_schedule(lab, jobs[name])) is not None]
    sensors = [inbox_sensor(lab, jobs[name]) for name, lab in labs.items()]
    return dg.Definitions(assets=assets, jobs=list(jobs.values()), schedules=schedules, sensors=sensors,
                          resources=default_resources(), executor=executor(settings))


defs = build_definitions()
